"""Retention: purge old event bodies while keeping everything verification needs.

A purge empties the body of each event created before the cutoff (prompt, output, findings,
metadata, error, stage timings) and stamps ``purged_at``; the row, its hash and its chain
links stay, so `audit.verify_chain` still walks every chain and every Merkle checkpoint
still matches. The purge itself is recorded in ``audit_purges`` in the same transaction,
with the highest purged seq of each chain: verify accepts a body-less row only below that.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from audit.engine import IMMEDIATE, create_audit_engine, safe_url
from audit.exceptions import AuditConfigError, AuditStoreError
from audit.schema import EVENTS, PURGES
from audit.store import AuditStore

__all__ = ["PurgeResult", "parse_age", "purge_bodies"]

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


def purge_bodies(url_or_store: str | AuditStore, *, older_than: timedelta) -> PurgeResult:
    """Remove the bodies of events created more than ``older_than`` ago (see the module).

    Raises:
        AuditConfigError: bad URL, no such SQLite file, or a negative age.
        AuditStoreError: the store is unreachable or the purge failed (nothing changed).
    """
    if older_than <= timedelta(0):
        raise AuditConfigError(f"older_than must be positive, got {older_than}")
    if isinstance(url_or_store, AuditStore):
        engine, owned = url_or_store.engine, False
    else:
        engine, owned = create_audit_engine(url_or_store, must_exist=True), True
    now = datetime.now(UTC)
    cutoff = now - older_than
    due = (EVENTS.c.created_at < cutoff) & EVENTS.c.purged_at.is_(None)
    try:
        with engine.connect() as conn:
            conn.execution_options(**{IMMEDIATE: True})
            with conn.begin():
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
                conn.execute(
                    insert(PURGES).values(
                        purged_at=now, cutoff=cutoff, events_purged=purged, chains=chains
                    )
                )
    except SQLAlchemyError as exc:
        raise AuditStoreError(f"purging {safe_url(engine.url)} failed: {exc}") from exc
    finally:
        if owned:
            engine.dispose()
    return PurgeResult(cutoff, purged, chains)
