"""The durable group-commit writer: one background thread, one hash chain, one commit per batch.

Callers enqueue events on a bounded queue (a full queue blocks them: back-pressure, never a
drop). The thread takes everything queued (up to ``max_batch``), inserts it with one
executemany plus the chain-head update in ONE transaction, commits, and only then resolves
each caller's future, so N concurrent callers share one durable commit. A failed batch is
rolled back, its callers get `AuditStoreError`, the chain head does not move, and the next
batch re-reads the head from the store before it writes, so the writer heals when the store
comes back.

Spill fallback (needs the store's ``spill_dir``): an event written with ``fallback="spill"``
(the default when the store has a ``spill_dir``) whose batch fails because the store is
unreachable is chained from the writer's own head, appended to the writer's fsynced spill
file (`audit.spill`), and its caller is acknowledged with ``Receipt.spilled``; events of the
same batch written with ``fallback="raise"`` get `AuditStoreError` instead. Every later batch
first replays that backlog, in the same transaction and in chain order, so the chain stays
intact and each spilled event lands exactly once; while idle the writer retries every
``spill_retry_s``. Spill files left by a crashed writer are replayed by any writer opened
on the same folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import socket
import sqlite3
import sys
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

from audit.chain import EncodedEvent, chain_hash_v2, encode_event
from audit.engine import IMMEDIATE, safe_url
from audit.event import AuditEvent, new_event_id
from audit.exceptions import (
    AuditClosedError,
    AuditConfigError,
    AuditError,
    AuditEventError,
    AuditStoreError,
)
from audit.schema import CHAINS, EVENTS, GENESIS_HASH, POLICIES
from audit.spill import SpillFile, apply_rows, replay_orphans

__all__ = ["AuditWriter", "Fallback", "Receipt", "event_row"]

_log = logging.getLogger(__name__)

Fallback = Literal["raise", "spill"]
"""What a write does when the store fails: ``raise`` `AuditStoreError`, or ``spill`` the
event durably to the spill file (replayed later, exactly once)."""


def event_row(
    e: AuditEvent,
    *,
    chain_id: str,
    seq: int,
    prev_hash: str,
    hash_: str,
    body_digest: str | None = None,
) -> dict[str, Any]:
    """The `audit_events` row for ``e`` at position ``seq`` of ``chain_id``."""
    return {
        "event_id": e.event_id,
        "chain_id": chain_id,
        "seq": seq,
        "prev_hash": prev_hash,
        "hash": hash_,
        "created_at": e.created_at,
        "request_id": e.request_id,
        "tenant": e.tenant,
        "user": e.user,
        "model": e.model,
        "prompt": e.prompt,
        "output": e.output,
        "text_storage": e.text_storage,
        "input_action": e.input_action,
        "output_action": e.output_action,
        "action": e.action,
        "findings": list(e.findings),
        "flagged": e.flagged,
        "latency_ms": e.latency_ms,
        "timings_ms": e.timings_ms,
        "error": e.error,
        "streamed": e.streamed,
        "released_chars": e.released_chars,
        "policy_name": e.policy_name,
        "policy_version": e.policy_version,
        "policy_digest": e.policy_digest,
        "metadata": e.metadata,
        "phase": e.phase,
        "stream_end": e.stream_end,
        "body_digest": body_digest,
    }


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof that an event is durable: where it sits in which chain, and its hash.

    ``spilled`` is True when the event was fsynced to the writer's spill file during a store
    outage rather than committed; it will be committed at that same position on replay.
    """

    event_id: str
    chain_id: str
    seq: int
    hash: str
    spilled: bool = False


@dataclass(slots=True)
class _Pending:
    event: AuditEvent
    encoded: EncodedEvent
    future: Future[Receipt]
    fallback: Fallback


_STOP = object()


def _is_outage(exc: Exception) -> bool:
    """True for failures of reaching the store (what spill mode absorbs), not of the data.

    The hot path inserts through the driver's own cursor, so the driver's exception classes
    (which SQLAlchemy would have wrapped) count too.
    """
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(
        exc, psycopg.OperationalError | psycopg.InterfaceError
    )


_COLUMNS: tuple[str, ...] = tuple(c.name for c in EVENTS.columns if c.name != "purged_at")
_JSON_COLUMNS = frozenset({"findings", "timings_ms", "metadata"})
_SQL: dict[str, str] = {}


def _insert_sql(dialect: str) -> str:
    """The INSERT of one events row in the driver's own parameter style (built once)."""
    if dialect not in _SQL:
        names = ", ".join(f'"{c}"' for c in _COLUMNS)
        if dialect == "sqlite":
            marks = ", ".join("?" for _ in _COLUMNS)
        else:
            marks = ", ".join("%s::jsonb" if c in _JSON_COLUMNS else "%s" for c in _COLUMNS)
        _SQL[dialect] = f"INSERT INTO {EVENTS.name} ({names}) VALUES ({marks})"
    return _SQL[dialect]


def _sqlite_time(value: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME storage format, naive UTC (see audit.schema.UTCDateTime).
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _params(row: dict[str, Any], sqlite: bool) -> tuple[Any, ...]:
    """One row's values in `_COLUMNS` order, encoded as the driver stores them."""
    values: list[Any] = []
    for name in _COLUMNS:
        value = row[name]
        if name in _JSON_COLUMNS:
            try:
                value = orjson.dumps(value).decode()
            except TypeError:  # e.g. an integer beyond 64 bits: the stdlib encodes it
                value = json.dumps(value)
        elif name == "created_at" and sqlite:
            value = _sqlite_time(value)
        values.append(value)
    return tuple(values)


def _insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` with one executemany on the driver's own cursor, inside ``conn``'s
    transaction: no SQLAlchemy type processing per row (the hot path; psycopg pipelines
    the statements, one round trip for the batch). Other dialects go through Core."""
    dialect = conn.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        conn.execute(insert(EVENTS), rows)
        return
    params = [_params(row, dialect == "sqlite") for row in rows]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(_insert_sql(dialect), params)
    finally:
        cursor.close()


class AuditWriter:
    """Writes events durably to one new hash chain; made by `AuditStore.writer`.

    Thread-safe: any number of threads (and the event loop, via `write_async`) may write
    through one writer; their events share commits. Use it as a context manager or call
    `close`, which commits everything already submitted before it returns.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        hmac_key: bytes | None,
        known_digests: set[str],
        max_batch: int = 512,
        max_queue: int = 10_000,
        spill_dir: str | os.PathLike[str] | None = None,
        spill_retry_s: float = 1.0,
    ) -> None:
        """Start the writer thread; nothing touches the store until the first batch.

        Args:
            engine: the store's engine.
            hmac_key: key for HMAC-SHA256 chaining, or None for SHA-256.
            known_digests: policy digests already recorded (shared with the store).
            max_batch: most events per transaction.
            max_queue: most events waiting; a full queue blocks callers.
            spill_dir: enable spill mode with this folder (see the module docstring).
            spill_retry_s: while a backlog is spilled and no events arrive, retry this often.

        Raises:
            AuditConfigError: ``max_batch`` or ``max_queue`` is below 1.
            AuditStoreError: the spill file cannot be created in ``spill_dir``.
        """
        if max_batch < 1 or max_queue < 1:
            raise AuditConfigError(
                f"max_batch and max_queue must be >= 1 (got {max_batch}, {max_queue})"
            )
        self.chain_id = new_event_id()
        algorithm = "sha256" if hmac_key is None else "hmac-sha256"
        self._header: dict[str, Any] = {
            "hostname": socket.gethostname()[:255],
            "pid": os.getpid(),
            "hash_algorithm": algorithm,
        }
        self.spill_dir = None if spill_dir is None else Path(spill_dir)
        self._spill = None if spill_dir is None else SpillFile(spill_dir, self.chain_id, algorithm)
        self._spill_retry_s = spill_retry_s
        self._orphans_pending = self._spill is not None
        self._engine = engine
        self._url = safe_url(engine.url)
        self._hmac_key = hmac_key
        self._known_digests = known_digests
        self._max_batch = max_batch
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        # Chain state; touched only by the writer thread.
        self._head_seq = 0
        self._head_hash = GENESIS_HASH
        self._chain_exists = False
        self._stale = False
        self._conn: Connection | None = None  # held between batches; dropped on failure
        self.commits = 0
        """Batches committed so far (each one transaction, shared by its events)."""
        self.spilled = 0
        """Events acknowledged from the spill file (spill mode) so far."""
        self.replayed = 0
        """Spilled events (this writer's and orphans') committed by replay so far."""
        # Close protocol: no submit may enqueue after the stop marker.
        self._state = threading.Condition()
        self._closed = False
        self._submitting = 0
        self._thread = threading.Thread(
            target=self._run, name=f"audit-writer-{self.chain_id[:8]}", daemon=True
        )
        self._thread.start()

    # --- public API ---------------------------------------------------------------------

    def _fallback(self, fallback: Fallback | None) -> Fallback:
        if fallback is None:
            return "raise" if self._spill is None else "spill"
        if fallback not in ("raise", "spill"):
            raise AuditConfigError(f"fallback: {fallback!r} is not 'raise' or 'spill'")
        if fallback == "spill" and self._spill is None:
            raise AuditConfigError(
                "fallback='spill' needs a spill folder: open the store with "
                "AuditStore(..., spill_dir=...)"
            )
        return fallback

    def submit(
        self,
        event: AuditEvent,
        *,
        timeout: float | None = None,
        fallback: Fallback | None = None,
    ) -> Future[Receipt]:
        """Queue ``event``; the future resolves to its `Receipt` once it is durable.

        Blocks while the queue is full (up to ``timeout`` seconds; None waits for room).
        ``fallback`` as for `write`.

        Raises:
            AuditEventError: the event cannot be encoded (raised here, not via the future).
            AuditClosedError: the writer is closed.
            AuditConfigError: ``fallback="spill"`` without a spill folder.
            AuditStoreError: the queue stayed full for ``timeout`` seconds, or the writer
                thread is gone.
        """
        pending = _Pending(
            event, encode_event(event, self._hmac_key), Future(), self._fallback(fallback)
        )
        with self._state:
            if self._closed:
                raise AuditClosedError(f"audit writer for chain {self.chain_id} is closed")
            if not self._thread.is_alive():
                raise AuditStoreError(
                    f"audit writer thread of chain {self.chain_id} is not running "
                    "(see the audit.writer log)"
                )
            self._submitting += 1
        try:
            self._queue.put(pending, timeout=timeout)
        except queue.Full:
            raise AuditStoreError(
                f"audit queue stayed full for {timeout}s: the store at {self._url} "
                "is not keeping up or is unreachable"
            ) from None
        finally:
            with self._state:
                self._submitting -= 1
                self._state.notify_all()
        return pending.future

    def write(
        self,
        event: AuditEvent,
        *,
        timeout: float | None = 30.0,
        fallback: Fallback | None = None,
    ) -> Receipt:
        """Record ``event`` and return only once it is durable.

        Args:
            event: the event to record.
            timeout: seconds to wait for queue room plus the commit; None waits forever.
                On timeout with ``fallback="raise"`` the event is withdrawn if no batch holds
                it yet (a batch that already holds it may still commit); with ``"spill"`` it
                is never withdrawn: the writer still commits or spills it.
            fallback: ``"raise"``: a store failure raises `AuditStoreError`. ``"spill"``: a
                store outage puts the event in the fsynced spill file instead (the receipt
                says ``spilled=True``; it is replayed at the same chain position, exactly
                once, when the store is back). None: ``"spill"`` if the store has a
                ``spill_dir``, else ``"raise"``.

        Raises:
            AuditStoreError: the store failed (and, with ``"spill"``, so did the spill file)
                or the event was not durable within ``timeout``.
            AuditEventError: the event cannot be recorded as given.
            AuditConfigError: ``fallback="spill"`` without a spill folder.
            AuditClosedError: the writer is closed.
        """
        future = self.submit(event, timeout=timeout, fallback=fallback)
        try:
            return future.result(timeout=timeout)
        except FutureTimeoutError:
            spill = self._fallback(fallback) == "spill"
            if not spill:
                future.cancel()
            raise self._timeout_error(event, timeout, spill) from None

    async def write_async(
        self,
        event: AuditEvent,
        *,
        timeout: float | None = 30.0,
        fallback: Fallback | None = None,
    ) -> Receipt:
        """Async twin of `write`: awaits durability without blocking the event loop.

        Cancelling the awaiting task never withdraws the event once submitted: the writer
        still commits (or spills) it; only the caller stops waiting. A timeout withdraws it
        as `write` says.
        """
        try:
            future = self.submit(event, timeout=0, fallback=fallback)
        except AuditStoreError:  # queue full: wait for room off the loop (back-pressure)
            future = await asyncio.to_thread(self.submit, event, timeout=timeout, fallback=fallback)
        waiter = asyncio.wrap_future(future)
        try:
            # shield: a cancelled caller must not cancel the concurrent future (withdrawal)
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            spill = self._fallback(fallback) == "spill"
            if not spill:
                future.cancel()
            raise self._timeout_error(event, timeout, spill) from None

    def _timeout_error(
        self, event: AuditEvent, timeout: float | None, spill: bool
    ) -> AuditStoreError:
        fate = (
            "it stays queued and will be committed or spilled"
            if spill
            else "withdrawn unless a batch already held it"
        )
        _log.warning(
            "audit_write_timeout",
            extra={"event_id": event.event_id, "chain_id": self.chain_id, "timeout": timeout},
        )
        return AuditStoreError(
            f"audit event {event.event_id} was not durable within {timeout}s "
            f"(store at {self._url} slow or unreachable; {fate})"
        )

    def close(self) -> None:
        """Commit everything already submitted, then stop the thread. Idempotent."""
        with self._state:
            if self._closed:
                already = True
            else:
                already = False
                self._closed = True
                while self._submitting:
                    self._state.wait()
        if not already:
            self._queue.put(_STOP)
        self._thread.join()

    @property
    def spill_backlog(self) -> int:
        """Events in this writer's spill file that are not committed yet (0 without spill)."""
        return 0 if self._spill is None else len(self._spill.rows)

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        """The writer thread: supervised, so no failure leaves callers waiting on a dead
        thread (an unexpected error fails its batch, is logged, and the loop goes on)."""
        _log.info("audit_writer_started", extra={"chain_id": self.chain_id, "url": self._url})
        try:
            self._loop()
        except BaseException:  # pragma: no cover - _loop guards each step; last resort
            _log.exception("audit_writer_died", extra={"chain_id": self.chain_id})
            self._fail_queued(AuditStoreError(f"audit writer of chain {self.chain_id} died"))
            raise
        _log.info(
            "audit_writer_stopped",
            extra={"chain_id": self.chain_id, "commits": self.commits, "spilled": self.spilled},
        )

    def _fail_queued(self, exc: AuditError) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                self._fail([item], exc)

    def _guarded(self, step: str, batch: list[_Pending]) -> None:
        """Run one step of the loop; an unexpected error fails ``batch`` and is logged."""
        try:
            if step == "commit":
                self._commit(batch)
            else:
                self._retry_spill()
        except Exception as exc:
            _log.exception(
                "audit_writer_step_failed", extra={"chain_id": self.chain_id, "step": step}
            )
            self._stale = True
            self._drop_connection()
            self._fail(batch, exc)

    def _loop(self) -> None:
        self._guarded("retry", [])
        stop = False
        while not stop:
            waiting = self._spill is not None and (self._spill.rows or self._orphans_pending)
            try:
                item = self._queue.get(timeout=self._spill_retry_s if waiting else None)
            except queue.Empty:
                self._guarded("retry", [])
                continue
            if item is _STOP:
                break
            batch: list[_Pending] = [item]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            live = [p for p in batch if p.future.set_running_or_notify_cancel()]
            if live:
                self._guarded("commit", live)
        self._guarded("retry", [])
        if self._spill is not None:
            if self._spill.rows:
                _log.warning(
                    "audit_spill_left_for_replay",
                    extra={"path": str(self._spill.path), "rows": len(self._spill.rows)},
                )
            self._spill.close()  # keeps the file if rows are left: the next writer replays it
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _retry_spill(self) -> None:
        """Try to replay this writer's backlog and any orphaned spill files."""
        if self._spill is None:
            return
        if self._spill.rows:
            self._commit([])
        if self._orphans_pending and not self._spill.rows:
            try:
                self.replayed += replay_orphans(
                    self._engine, self._spill.directory, skip=self.chain_id
                )
            except Exception as exc:  # still down, or a bad file: try later; log it
                _log.warning(
                    "audit_orphan_replay_failed",
                    extra={"chain_id": self.chain_id, "error": f"{type(exc).__name__}: {exc}"},
                )
                return
            self._orphans_pending = False

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
            self._conn.execution_options(**{IMMEDIATE: True})
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()  # after a failure its state is unknown: never reuse it
                conn.close()
            except Exception:  # already failing: the batch's own error is what gets reported
                pass

    def _commit(self, batch: list[_Pending]) -> None:
        """Write one batch (after any spilled backlog) in one transaction; resolve or fail
        every future in it, or, in spill mode during an outage, spill it."""
        spill = self._spill
        backlog = spill is not None and bool(spill.rows)
        try:
            conn = self._connection()
            with conn.begin():
                if self._stale and not backlog:
                    self._reload_head(conn)
                batch = self._drop_unknown_policies(conn, batch)
                if not batch and not backlog:
                    return
                rows, receipts = self._chain_rows(batch)
                if spill is not None and backlog:
                    replayed = apply_rows(conn, self.chain_id, spill.rows + rows, self._header)
                elif conn.dialect.name == "postgresql":
                    self._pg_batch(conn, rows)  # commits: one round trip for the batch
                else:
                    self._move_head(conn, rows[-1]["seq"], rows[-1]["hash"])
                    _insert_rows(conn, rows)
        except Exception as exc:  # every failure goes to the callers, none is swallowed
            self._drop_connection()
            _log.warning(
                "audit_batch_failed",
                extra={
                    "chain_id": self.chain_id,
                    "events": len(batch),
                    "backlog": len(spill.rows) if spill is not None else 0,
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )
            if spill is not None and (backlog or _is_outage(exc)):
                self._spill_batch(spill, batch, exc)
            else:
                self._stale = True
                self._fail(batch, exc)
            return
        self.commits += 1
        if spill is not None and backlog:
            self.replayed += max(0, replayed - len(rows))
            _log.info(
                "audit_spill_replayed",
                extra={"chain_id": self.chain_id, "rows": len(spill.rows)},
            )
            try:
                spill.clear()
            except OSError:  # committed already; the file's rows replay as no-ops (by seq)
                _log.exception("audit_spill_clear_failed", extra={"path": str(spill.path)})
        if receipts:
            self._head_seq = receipts[-1].seq
            self._head_hash = receipts[-1].hash
        self._chain_exists = True
        self._stale = False
        if self._orphans_pending:
            self._retry_spill()
        for pending, receipt in zip(batch, receipts, strict=True):
            pending.future.set_result(receipt)

    def _spill_batch(self, spill: SpillFile, batch: list[_Pending], exc: Exception) -> None:
        """Chain ``batch`` from the in-memory head into the spill file; acknowledge it."""
        live: list[_Pending] = []
        refused: list[_Pending] = []
        for pending in batch:
            if pending.future.done():
                continue
            if pending.fallback != "spill":
                refused.append(pending)
                continue
            if pending.event.policy_digest not in self._known_digests:
                pending.future.set_exception(
                    AuditEventError(
                        f"event {pending.event.event_id}: policy digest "
                        f"{pending.event.policy_digest!r} is not known to be recorded and the "
                        "store is unreachable; call AuditStore.record_policy() first"
                    )
                )
                continue
            live.append(pending)
        if refused:
            self._fail(refused, exc)
        if not live:
            return
        rows, receipts = self._chain_rows(live)
        try:
            spill.append(rows)
        except AuditStoreError as spill_error:
            spill_error.__cause__ = exc
            self._fail(live, spill_error)
            return
        self._head_seq, self._head_hash = receipts[-1].seq, receipts[-1].hash
        self.spilled += len(live)
        _log.warning(
            "audit_events_spilled",
            extra={"chain_id": self.chain_id, "events": len(live), "path": str(spill.path)},
        )
        for pending, receipt in zip(live, receipts, strict=True):
            pending.future.set_result(
                Receipt(receipt.event_id, receipt.chain_id, receipt.seq, receipt.hash, True)
            )

    def _fail(self, batch: Iterable[_Pending], exc: Exception) -> None:
        for pending in batch:
            if pending.future.done():
                continue
            if isinstance(exc, AuditError):
                error: AuditError = type(exc)(str(exc))
            else:
                error = AuditStoreError(
                    f"audit write of event {pending.event.event_id} to {self._url} failed "
                    f"(batch rolled back, chain head unchanged): {type(exc).__name__}: {exc}"
                )
            error.__cause__ = exc
            pending.future.set_exception(error)

    def _reload_head(self, conn: Connection) -> None:
        """After a failure, trust the store's head (the failed commit may have landed)."""
        row = conn.execute(
            select(CHAINS.c.head_seq, CHAINS.c.head_hash).where(CHAINS.c.chain_id == self.chain_id)
        ).first()
        if row is None:
            self._head_seq, self._head_hash, self._chain_exists = 0, GENESIS_HASH, False
        else:
            self._head_seq, self._head_hash, self._chain_exists = row[0], row[1], True

    def _drop_unknown_policies(self, conn: Connection, batch: list[_Pending]) -> list[_Pending]:
        """Fail (alone) the events whose policy digest was never recorded."""
        unknown = {p.event.policy_digest for p in batch} - self._known_digests
        if not unknown:
            return batch
        found = conn.execute(
            select(POLICIES.c.digest).where(POLICIES.c.digest.in_(unknown))
        ).scalars()
        self._known_digests.update(found)
        kept: list[_Pending] = []
        for pending in batch:
            digest = pending.event.policy_digest
            if digest in self._known_digests:
                kept.append(pending)
            else:
                pending.future.set_exception(
                    AuditEventError(
                        f"event {pending.event.event_id}: policy digest {digest!r} was never "
                        "recorded; call AuditStore.record_policy() first"
                    )
                )
        return kept

    def _chain_rows(self, batch: list[_Pending]) -> tuple[list[dict[str, Any]], list[Receipt]]:
        seq, prev = self._head_seq, self._head_hash
        rows: list[dict[str, Any]] = []
        receipts: list[Receipt] = []
        for pending in batch:
            seq += 1
            encoded = pending.encoded
            digest = chain_hash_v2(
                encoded.header,
                encoded.body_digest,
                chain_id=self.chain_id,
                seq=seq,
                prev_hash=prev,
                hmac_key=self._hmac_key,
            )
            e = pending.event
            rows.append(
                event_row(
                    e,
                    chain_id=self.chain_id,
                    seq=seq,
                    prev_hash=prev,
                    hash_=digest,
                    body_digest=encoded.body_digest,
                )
            )
            receipts.append(Receipt(e.event_id, self.chain_id, seq, digest))
            prev = digest
        return rows, receipts

    def _pg_batch(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """On PostgreSQL: move the head, insert the rows and COMMIT in one psycopg pipeline
        (one network round trip, one wake-up of this thread per batch). The head moves only
        if it is still where this writer left it: otherwise the statement divides by zero,
        the transaction aborts and nothing of the batch is kept."""
        import psycopg

        raw: Any = conn.connection.driver_connection
        head_seq, head_hash = rows[-1]["seq"], rows[-1]["hash"]
        try:
            with raw.pipeline(), raw.cursor() as cur:
                if not self._chain_exists:
                    cur.execute(
                        f"INSERT INTO {CHAINS.name} (chain_id, created_at, hostname, pid, "
                        "hash_algorithm, head_seq, head_hash) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (
                            self.chain_id,
                            datetime.now(UTC),
                            self._header["hostname"],
                            self._header["pid"],
                            self._header["hash_algorithm"],
                            head_seq,
                            head_hash,
                        ),
                    )
                else:
                    cur.execute(
                        f"WITH moved AS (UPDATE {CHAINS.name} SET head_seq = %s, head_hash = %s "
                        "WHERE chain_id = %s AND head_seq = %s RETURNING 1) "
                        "SELECT 1 / (SELECT count(*) FROM moved)",
                        (head_seq, head_hash, self.chain_id, self._head_seq),
                    )
                cur.executemany(_insert_sql("postgresql"), [_params(r, False) for r in rows])
                raw.commit()
        except psycopg.errors.DivisionByZero:
            raise AuditStoreError(
                f"chain {self.chain_id}: the stored head is no longer seq {self._head_seq}; "
                "another process wrote to this chain or the row was removed"
            ) from None

    def _move_head(self, conn: Connection, head_seq: int, head_hash: str) -> None:
        """Register the chain or advance its head, in the batch's transaction."""
        if not self._chain_exists:
            conn.execute(
                insert(CHAINS).values(
                    chain_id=self.chain_id,
                    created_at=datetime.now(UTC),
                    hostname=self._header["hostname"],
                    pid=self._header["pid"],
                    hash_algorithm=self._header["hash_algorithm"],
                    head_seq=head_seq,
                    head_hash=head_hash,
                )
            )
            return
        result = conn.execute(
            update(CHAINS)
            .where(CHAINS.c.chain_id == self.chain_id, CHAINS.c.head_seq == self._head_seq)
            .values(head_seq=head_seq, head_hash=head_hash)
        )
        if result.rowcount != 1:
            raise AuditStoreError(
                f"chain {self.chain_id}: the stored head is no longer seq {self._head_seq}; "
                "another process wrote to this chain or the row was removed"
            )
