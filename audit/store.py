"""The audit store: one database, its policies, its writers and its queries.

`AuditStore` is cheap to build and lazy: it touches the database only when asked to
(``auto_upgrade``, a write, a query), so a store that is down fails the calls that need
it with `AuditStoreError` instead of failing at construction.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import Engine, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from audit.engine import IMMEDIATE, create_audit_engine, safe_url
from audit.exceptions import AuditClosedError, AuditIntegrityError, AuditStoreError
from audit.migrate import require_schema, upgrade_engine
from audit.schema import EVENTS, POLICIES
from audit.spill import replay_orphans
from audit.writer import AuditWriter

__all__ = [
    "AuditStore",
    "StoredEvent",
    "stored_event_from_row",
]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An `audit.AuditEvent` as read back from the store, with its chain position."""

    event_id: str
    chain_id: str
    seq: int
    prev_hash: str
    hash: str
    created_at: datetime
    request_id: str
    tenant: str | None
    user: str | None
    model: str | None
    prompt: str | None
    output: str | None
    text_storage: str
    input_action: str | None
    output_action: str | None
    action: str
    findings: tuple[dict[str, Any], ...]
    flagged: bool
    latency_ms: float | None
    timings_ms: dict[str, float]
    error: str | None
    streamed: bool
    released_chars: int | None
    policy_name: str
    policy_version: str
    policy_digest: str
    metadata: dict[str, Any]
    phase: str = "call"
    stream_end: str | None = None

    #: The columns of a CSV export (``audit export``/``query --format csv``, the console's).
    CSV_COLUMNS: ClassVar[tuple[str, ...]] = (
        "event_id",
        "created_at",
        "tenant",
        "user",
        "model",
        "action",
        "input_action",
        "output_action",
        "flagged",
        "rules",
        "policy_name",
        "policy_version",
        "policy_digest",
        "latency_ms",
        "phase",
        "stream_end",
        "chain_id",
        "seq",
        "prompt",
        "output",
    )

    @property
    def rule_ids(self) -> str:
        """The ids of the rules that fired, sorted, space-separated."""
        return " ".join(sorted({str(f.get("rule_id")) for f in self.findings if f.get("rule_id")}))

    def to_document(self) -> dict[str, Any]:
        """The event as JSON-ready data (every field; ``created_at`` as ISO 8601 UTC)."""
        doc = asdict(self)
        doc["created_at"] = self.created_at.astimezone(UTC).isoformat()
        doc["findings"] = list(self.findings)
        return doc

    def csv_row(self) -> list[Any]:
        """The event's values for `CSV_COLUMNS` (``None`` as an empty cell)."""
        doc = self.to_document()
        doc["rules"] = self.rule_ids
        return ["" if doc[c] is None else doc[c] for c in self.CSV_COLUMNS]


def stored_event_from_row(row: Any) -> StoredEvent:
    """Build a `StoredEvent` from an ``audit_events`` row mapping."""
    m = row._mapping
    return StoredEvent(
        event_id=m["event_id"],
        chain_id=m["chain_id"],
        seq=m["seq"],
        prev_hash=m["prev_hash"],
        hash=m["hash"],
        created_at=m["created_at"],
        request_id=m["request_id"],
        tenant=m["tenant"],
        user=m["user"],
        model=m["model"],
        prompt=m["prompt"],
        output=m["output"],
        text_storage=m["text_storage"],
        input_action=m["input_action"],
        output_action=m["output_action"],
        action=m["action"],
        findings=tuple(m["findings"]),
        flagged=m["flagged"],
        latency_ms=m["latency_ms"],
        timings_ms=m["timings_ms"],
        error=m["error"],
        streamed=m["streamed"],
        released_chars=m["released_chars"],
        policy_name=m["policy_name"],
        policy_version=m["policy_version"],
        policy_digest=m["policy_digest"],
        metadata=m["metadata"],
        phase=m["phase"],
        stream_end=m["stream_end"],
    )


class AuditStore:
    """The audit database at ``url``: record policies, open writers, query events.

    Args:
        url: a SQLAlchemy URL (``sqlite:///file.db``, ``postgresql+psycopg://...``).
        hmac_key: key every writer of this store chains with (HMAC-SHA256); None for
            plain SHA-256, which detects tampering only by someone who cannot recompute it.
        auto_upgrade: migrate the schema to head first (concurrent callers are serialised).
        spill_dir: spill mode for every writer of this store: during an outage, events are
            fsynced to a spill file in this folder and ``write`` succeeds (the receipt says
            ``spilled=True``); they are replayed exactly once, chain intact, when the store
            is back, and spill files of crashed writers are replayed by the next writer
            opened on the same folder. None (default): fail closed, ``write`` raises
            `AuditStoreError` while the store is down.

    Raises:
        AuditConfigError: bad URL or driver.
        AuditStoreError: ``auto_upgrade`` could not reach or migrate the store.
    """

    def __init__(
        self,
        url: str,
        *,
        hmac_key: bytes | None = None,
        auto_upgrade: bool = False,
        spill_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.url = url
        self.hmac_key = hmac_key
        self.spill_dir = spill_dir
        self.engine: Engine = create_audit_engine(url)
        self._known_digests: set[str] = set()
        self._writers: list[AuditWriter] = []
        self._lock = threading.Lock()
        self._closed = False
        if auto_upgrade:
            try:
                upgrade_engine(self.engine)
            except BaseException:
                self.engine.dispose()
                raise

    def __repr__(self) -> str:
        return f"AuditStore({safe_url(self.url)!r})"

    def _store_error(self, what: str, exc: Exception) -> AuditStoreError:
        return AuditStoreError(f"{what} at {safe_url(self.url)} failed: {exc}")

    def record_policy(self, digest: str, name: str, version: str, text: str) -> None:
        """Store a policy text once per digest; recording it again is a no-op.

        Raises:
            AuditIntegrityError: the digest is already stored with a different text.
            AuditStoreError: the store is unreachable or the write failed.
        """
        values = {
            "digest": digest,
            "name": name,
            "version": version,
            "text": text,
            "first_seen": datetime.now(UTC),
        }
        dialect = self.engine.dialect.name
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{IMMEDIATE: True})
                with conn.begin():
                    if dialect == "postgresql":
                        conn.execute(
                            postgresql.insert(POLICIES).values(values).on_conflict_do_nothing()
                        )
                    elif dialect == "sqlite":
                        conn.execute(
                            sqlite.insert(POLICIES).values(values).on_conflict_do_nothing()
                        )
                    stored = conn.execute(
                        select(POLICIES.c.text).where(POLICIES.c.digest == digest)
                    ).scalar()
                    if stored is None:  # other backends: no ON CONFLICT, and not there yet
                        conn.execute(insert(POLICIES).values(values))
                        stored = text
        except SQLAlchemyError as exc:
            raise self._store_error(f"recording policy {digest!r}", exc) from exc
        if stored != text:
            raise AuditIntegrityError(
                f"policy digest {digest!r} is already stored with a different text"
            )
        self._known_digests.add(digest)

    def get_policy_text(self, digest: str) -> str | None:
        """The policy text stored for ``digest``, or None.

        Raises:
            AuditStoreError: the store is unreachable or the read failed.
        """
        try:
            with self.engine.connect() as conn:
                text: str | None = conn.execute(
                    select(POLICIES.c.text).where(POLICIES.c.digest == digest)
                ).scalar()
        except SQLAlchemyError as exc:
            raise self._store_error(f"reading policy {digest!r}", exc) from exc
        return text

    def writer(
        self, *, max_batch: int = 512, max_queue: int = 10_000, spill_retry_s: float = 1.0
    ) -> AuditWriter:
        """A new writer with its own hash chain (see `AuditWriter`); closed with the store.

        Raises:
            AuditClosedError: the store is closed.
            AuditStoreError: spill mode, and the spill file cannot be created.
        """
        with self._lock:
            if self._closed:
                raise AuditClosedError(f"{self!r} is closed")
            writer = AuditWriter(
                self.engine,
                hmac_key=self.hmac_key,
                known_digests=self._known_digests,
                max_batch=max_batch,
                max_queue=max_queue,
                spill_dir=self.spill_dir,
                spill_retry_s=spill_retry_s,
            )
            self._writers.append(writer)
        return writer

    def events(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        tenant: str | None = None,
        action: str | None = None,
        request_id: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[StoredEvent]:
        """Stored events matching every filter given, by ``created_at``.

        Args:
            since: only events created at or after this aware datetime.
            until: only events created before this aware datetime.
            tenant: only this tenant's events.
            action: only events with this final action (``allow``, ``block``, ...).
            request_id: only the events of this request.
            limit: at most this many events.
            newest_first: newest first (default) or oldest first.

        Raises:
            AuditConfigError: the database was never upgraded to this version's schema.
            AuditStoreError: the store is unreachable or the read failed.
        """
        query = select(EVENTS)
        if since is not None:
            query = query.where(EVENTS.c.created_at >= since)
        if until is not None:
            query = query.where(EVENTS.c.created_at < until)
        if tenant is not None:
            query = query.where(EVENTS.c.tenant == tenant)
        if action is not None:
            query = query.where(EVENTS.c.action == action)
        if request_id is not None:
            query = query.where(EVENTS.c.request_id == request_id)
        order = (EVENTS.c.created_at, EVENTS.c.chain_id, EVENTS.c.seq)
        query = query.order_by(*(c.desc() for c in order) if newest_first else order)
        try:
            with self.engine.connect() as conn:
                require_schema(conn)
                rows = conn.execute(query.limit(limit)).all()
        except SQLAlchemyError as exc:
            raise self._store_error("querying events", exc) from exc
        return [stored_event_from_row(row) for row in rows]

    def replay_spills(self) -> int:
        """Replay the spill files in ``spill_dir`` that no live writer holds; return the
        number of events inserted (0 without spill mode).

        Raises:
            AuditStoreError: the store is unreachable or a spill file does not continue its
                chain (that file is kept).
        """
        if self.spill_dir is None:
            return 0
        return replay_orphans(self.engine, self.spill_dir)

    def close(self) -> None:
        """Close every writer (committing what they hold), then release the connections."""
        with self._lock:
            self._closed = True
            writers, self._writers = self._writers, []
        for writer in writers:
            writer.close()
        self.engine.dispose()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
