"""Retention: purge old event bodies while keeping everything verification needs.

A purge empties the body of each event created before the cutoff (prompt, output, findings,
metadata, error, stage timings) and stamps ``purged_at``; the row, its hash, its body digest
and its chain links stay, so `audit.verify_chain` still checks every header field of a purged
row (rows written since migration 0004 hash their header plus a digest of their body) and
every Merkle checkpoint still matches. The purge itself is recorded in ``audit_purges`` in
the same transaction, with the highest purged seq of each chain, and chained to the previous
purge record by a hash (HMAC with the store's key when it has one; `purge_record_hash`):
verify accepts a body-less row only below an authenticated purge record. Without an HMAC
key, someone who can write the database can also forge a purge record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from audit.engine import IMMEDIATE, create_audit_engine, safe_url
from audit.exceptions import AuditConfigError, AuditStoreError
from audit.schema import EVENTS, GENESIS_HASH, PURGES
from audit.store import AuditStore

__all__ = ["PurgeResult", "parse_age", "purge_bodies", "purge_record_hash"]

_log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> timedelta:
    """Parse an age like ``180d``, ``12h``, ``30m``, ``2w`` or ``45s``.

    Raises:
        AuditConfigError: not a positive number followed by one of s, m, h, d, w.
    """
    value, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in _UNITS or not value.isdigit() or int(value) <= 0:
        raise AuditConfigError(
            f"bad age {text!r}: expected a positive whole number and a unit "
            "(s, m, h, d, w), e.g. 180d"
        )
    return timedelta(seconds=int(value) * _UNITS[unit])


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What one purge did."""

    cutoff: datetime
    events_purged: int
    chains: dict[str, int]
    """Per chain, the highest seq whose body was removed."""


def purge_record_hash(
    *,
    purged_at: datetime,
    cutoff: datetime,
    events_purged: int,
    chains: dict[str, int],
    prev_hash: str,
    hmac_key: bytes | None,
) -> str:
    """The hash of one purge record, chained to the previous record's hash."""
    doc = {
        "chains": {str(k): int(v) for k, v in chains.items()},
        "cutoff": cutoff.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "events_purged": int(events_purged),
        "prev_hash": prev_hash,
        "purged_at": purged_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "v": "guardrails-audit-purge/1",
    }
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    if hmac_key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(hmac_key, data, hashlib.sha256).hexdigest()


def purge_bodies(
    url_or_store: str | AuditStore, *, older_than: timedelta, hmac_key: bytes | None = None
) -> PurgeResult:
    """Remove the bodies of events created more than ``older_than`` ago (see the module).

    ``hmac_key`` keys the purge record's hash (defaults to the store's key when a store is
    passed); use the key the chains were written with, or verify will reject the record.

    Raises:
        AuditConfigError: bad URL, no such SQLite file, or a negative age.
        AuditStoreError: the store is unreachable or the purge failed (nothing changed).
    """
    if older_than <= timedelta(0):
        raise AuditConfigError(f"older_than must be positive, got {older_than}")
    if isinstance(url_or_store, AuditStore):
        engine, owned = url_or_store.engine, False
        if hmac_key is None:
            hmac_key = url_or_store.hmac_key
    else:
        engine, owned = create_audit_engine(url_or_store, must_exist=True), True
    now = datetime.now(UTC)
    cutoff = now - older_than
    due = (EVENTS.c.created_at < cutoff) & EVENTS.c.purged_at.is_(None)
    try:
        with engine.connect() as conn:
            conn.execution_options(**{IMMEDIATE: True})
            with conn.begin():
                if conn.dialect.name == "postgresql":  # one purge at a time: one chain of them
                    conn.exec_driver_sql(f"LOCK TABLE {PURGES.name} IN EXCLUSIVE MODE")
                prev_hash = (
                    conn.execute(
                        select(PURGES.c.hash)
                        .where(PURGES.c.hash.is_not(None))
                        .order_by(PURGES.c.id.desc())
                        .limit(1)
                    ).scalar()
                    or GENESIS_HASH
                )
                chains = {
                    chain_id: int(top)
                    for chain_id, top in conn.execute(
                        select(EVENTS.c.chain_id, func.max(EVENTS.c.seq))
                        .where(due)
                        .group_by(EVENTS.c.chain_id)
                    )
                }
                purged = conn.execute(
                    update(EVENTS)
                    .where(due)
                    .values(
                        prompt=None,
                        output=None,
                        findings=[],
                        **{"metadata": {}},
                        error=None,
                        timings_ms={},
                        purged_at=now,
                    )
                ).rowcount
                record_hash = purge_record_hash(
                    purged_at=now,
                    cutoff=cutoff,
                    events_purged=purged,
                    chains=chains,
                    prev_hash=prev_hash,
                    hmac_key=hmac_key,
                )
                conn.execute(
                    insert(PURGES).values(
                        purged_at=now,
                        cutoff=cutoff,
                        events_purged=purged,
                        chains=chains,
                        prev_hash=prev_hash,
                        hash=record_hash,
                    )
                )
    except SQLAlchemyError as exc:
        raise AuditStoreError(f"purging {safe_url(engine.url)} failed: {exc}") from exc
    finally:
        if owned:
            engine.dispose()
    _log.info(
        "audit_purged",
        extra={"cutoff": cutoff.isoformat(), "events": purged, "chains": len(chains)},
    )
    return PurgeResult(cutoff, purged, chains)
