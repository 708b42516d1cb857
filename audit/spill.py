"""Spill files: where a writer in spill mode keeps chained rows while the store is down.

One file per writer chain, ``<spill_dir>/<chain_id>.spill``: a header line, then one JSON line
per chained row (its chain position and hash already fixed), appended and fsynced before the
caller is acknowledged. The live writer holds an exclusive ``flock`` on its file; a file
nobody holds is an orphan (its writer crashed or closed during an outage) and any store
opened on the same ``spill_dir`` replays it.

Replay is exactly once: rows are inserted in one transaction together with the chain head,
and only rows beyond the stored head are inserted, so a replay interrupted after its commit
(or a failed commit that in fact landed) never inserts a row twice; the event id is the
primary key, so no event can land twice under two positions either. Replay checks that the
rows link: consecutive seqs, each ``prev_hash`` the hash before it, the first one the stored
head's hash.

Only a torn *final* line (a crash during an append: no trailing newline, never
acknowledged) is dropped. Any other damage (an unreadable header, an undecodable line that
is not that final fragment, rows that do not link) quarantines the file: it is renamed to
``<name>.spill.quarantined`` with nothing removed, and replay raises `AuditStoreError`
naming the file, the line and the problem, for an operator to repair and rename back.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, insert, select, update

from audit.engine import IMMEDIATE
from audit.exceptions import AuditStoreError
from audit.schema import CHAINS, EVENTS, GENESIS_HASH

__all__ = ["QUARANTINE_SUFFIX", "SPILL_SUFFIX", "SpillFile", "apply_rows", "replay_orphans"]

_log = logging.getLogger(__name__)

SPILL_SUFFIX = ".spill"
QUARANTINE_SUFFIX = ".quarantined"
_FORMAT = "guardrails-audit-spill/1"


def _encode_row(row: dict[str, Any]) -> str:
    doc = dict(row)
    doc["created_at"] = row["created_at"].astimezone(UTC).isoformat()
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _decode_row(line: str) -> dict[str, Any]:
    row: dict[str, Any] = json.loads(line)
    row["created_at"] = datetime.fromisoformat(row["created_at"])
    # Spill files written before two-phase stream records: every row was a plain call.
    row.setdefault("phase", "call")
    row.setdefault("stream_end", None)
    row.setdefault("body_digest", None)  # rows spilled before 0004 hash the original way
    return row


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpillFile:
    """The append-only, fsynced spill file of one live writer chain (held under flock)."""

    def __init__(
        self, directory: str | os.PathLike[str], chain_id: str, hash_algorithm: str
    ) -> None:
        """Create and lock the file (via a temporary name, so no replayer sees it unlocked).

        Raises:
            AuditStoreError: the spill directory cannot be created or written.
        """
        self.directory = Path(directory)
        self.chain_id = chain_id
        self.path = self.directory / f"{chain_id}{SPILL_SUFFIX}"
        self.rows: list[dict[str, Any]] = []
        """Spilled rows not yet replayed, in chain order."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary = self.directory / f".{chain_id}.tmp"
            self._file: IO[str] = open(temporary, "w+", encoding="utf-8")  # noqa: SIM115
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
            header = {
                "format": _FORMAT,
                "chain_id": chain_id,
                "hash_algorithm": hash_algorithm,
                "hostname": socket.gethostname()[:255],
                "pid": os.getpid(),
            }
            self._file.write(json.dumps(header) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            os.replace(temporary, self.path)  # the lock stays with the inode
            _fsync_dir(self.directory)
            self._header_size = self._file.tell()
        except OSError as exc:
            raise AuditStoreError(f"cannot create spill file in {self.directory}: {exc}") from exc

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append ``rows`` and fsync; on failure the file is cut back to what it held.

        Raises:
            AuditStoreError: the write or the fsync failed (nothing of ``rows`` is kept).
        """
        data = "".join(_encode_row(row) + "\n" for row in rows)
        size = self._file.tell()
        try:
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._file.truncate(size)
                self._file.seek(size)
            raise AuditStoreError(f"cannot append to spill file {self.path}: {exc}") from exc
        self.rows.extend(rows)

    def clear(self) -> None:
        """Forget the rows (they are committed): cut the file back to its header.

        The rows are forgotten even if the truncation fails: the file then still holds
        committed rows, which a replay skips (they are not beyond the stored head).
        """
        self.rows.clear()
        self._file.truncate(self._header_size)
        self._file.seek(self._header_size)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows.clear()

    def close(self) -> None:
        """Release the lock; remove the file if nothing is left to replay."""
        if not self.rows:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self._file.close()


def apply_rows(
    conn: Connection, chain_id: str, rows: Sequence[dict[str, Any]], header: dict[str, Any]
) -> int:
    """Insert the rows of ``chain_id`` beyond its stored head and move the head, in ``conn``'s
    transaction; return how many rows were inserted.

    ``header`` supplies the chain registration (hostname, pid, hash_algorithm) when the
    chain has no row yet.

    Raises:
        AuditStoreError: the rows do not continue the stored chain (a gap).
    """
    head = conn.execute(
        select(CHAINS.c.head_seq, CHAINS.c.head_hash).where(CHAINS.c.chain_id == chain_id)
    ).first()
    stored_seq = 0 if head is None else int(head[0])
    stored_hash = GENESIS_HASH if head is None else str(head[1])
    fresh = [row for row in rows if row["seq"] > stored_seq]
    if not fresh:
        return 0
    if fresh[0]["seq"] != stored_seq + 1:
        raise AuditStoreError(
            f"chain {chain_id}: spilled rows start at seq {fresh[0]['seq']}, "
            f"the stored head is seq {stored_seq}"
        )
    prev = stored_hash
    for expected, row in enumerate(fresh, start=stored_seq + 1):
        if row["seq"] != expected or row["prev_hash"] != prev or row["chain_id"] != chain_id:
            raise _SpillLinkError(
                f"chain {chain_id}: spilled row seq {row['seq']} (event {row['event_id']}) "
                f"does not link to seq {expected - 1} (expected prev_hash {prev[:16]}…)"
            )
        prev = row["hash"]
    last = fresh[-1]
    if head is None:
        conn.execute(
            insert(CHAINS).values(
                chain_id=chain_id,
                created_at=datetime.now(UTC),
                hostname=str(header.get("hostname", ""))[:255],
                pid=int(header.get("pid", 0)),
                hash_algorithm=str(header.get("hash_algorithm", "sha256")),
                head_seq=last["seq"],
                head_hash=last["hash"],
            )
        )
    else:
        conn.execute(
            update(CHAINS)
            .where(CHAINS.c.chain_id == chain_id)
            .values(head_seq=last["seq"], head_hash=last["hash"])
        )
    conn.execute(insert(EVENTS), fresh)
    return len(fresh)


class _SpillLinkError(AuditStoreError):
    """Spilled rows do not continue their chain (a gap, a broken ``prev_hash``)."""


class _DamagedError(Exception):
    """A spill file that cannot be replayed as it is (quarantined, never dropped)."""


def _read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and rows of a spill file; only a torn final fragment is dropped.

    Raises:
        _DamagedError: the header or a line other than the unterminated final one is unreadable.
    """
    try:
        text = path.read_bytes().decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        text = None
    if text is None:
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1  # an unterminated tail may be torn mid-character
        try:
            text = data[:cut].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _DamagedError(f"not UTF-8 before its final line: {exc}") from exc
    lines = text.split("\n")
    # Every complete line ends with "\n": the last element is "" or an unterminated fragment.
    complete, fragment = lines[:-1], lines[-1]
    if not complete:
        raise _DamagedError("no complete header line")
    try:
        header: dict[str, Any] = json.loads(complete[0])
    except ValueError as exc:
        raise _DamagedError(f"line 1 (header) is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise _DamagedError(f"line 1 is not a spill header of format {_FORMAT}")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(complete[1:], start=2):
        try:
            rows.append(_decode_row(line))
        except (ValueError, KeyError, TypeError) as exc:
            reason = f"line {number} is damaged ({exc}) and is not the final line"
            raise _DamagedError(reason) from exc
    if fragment:
        try:
            rows.append(_decode_row(fragment))  # complete but for its newline: keep it
        except (ValueError, KeyError, TypeError):
            _log.warning(
                "audit_spill_torn_final_line_dropped",
                extra={"path": str(path), "bytes": len(fragment.encode())},
            )
    return header, rows


def _quarantine(path: Path, reason: str) -> AuditStoreError:
    target = path.with_name(path.name + QUARANTINE_SUFFIX)
    with contextlib.suppress(OSError):
        os.replace(path, target)
        _fsync_dir(path.parent)
    _log.error("audit_spill_quarantined", extra={"path": str(target), "reason": reason})
    return AuditStoreError(
        f"spill file {path} cannot be replayed: {reason}. It was quarantined as {target} "
        "(nothing removed); repair it and rename it back to replay it"
    )


def replay_orphans(
    engine: Engine, directory: str | os.PathLike[str], *, skip: str | None = None
) -> int:
    """Replay every spill file in ``directory`` that no live writer holds; return rows inserted.

    Each file is replayed in one transaction, then removed. Files held by a live writer
    (and ``skip``, a chain id) are left alone. A file that fails to replay stays for the next
    attempt.

    Raises:
        AuditStoreError: the store is unreachable or a file does not continue its chain.
    """
    folder = Path(directory)
    if not folder.is_dir():
        return 0
    inserted = 0
    for path in sorted(folder.glob(f"*{SPILL_SUFFIX}")):
        if skip is not None and path.name == f"{skip}{SPILL_SUFFIX}":
            continue
        try:
            handle = open(path, encoding="utf-8")  # noqa: SIM115
        except FileNotFoundError:  # its writer closed cleanly meanwhile
            continue
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer holds it
            if not path.exists():  # replayed and removed by someone else before our lock
                continue
            try:
                header, rows = _read(path)
            except _DamagedError as exc:
                raise _quarantine(path, str(exc)) from exc
            except OSError as exc:
                raise AuditStoreError(f"spill file {path} is unreadable: {exc}") from exc
            try:
                with engine.connect() as conn:
                    conn.execution_options(**{IMMEDIATE: True})
                    with conn.begin():
                        added = apply_rows(conn, str(header["chain_id"]), rows, header)
                        inserted += added
            except _SpillLinkError as exc:
                raise _quarantine(path, str(exc)) from exc
            except AuditStoreError:
                raise
            except Exception as exc:
                raise AuditStoreError(f"replaying spill file {path} failed: {exc}") from exc
            path.unlink()
            _fsync_dir(folder)
            _log.info(
                "audit_spill_replayed", extra={"path": str(path), "rows": len(rows), "new": added}
            )
    return inserted
