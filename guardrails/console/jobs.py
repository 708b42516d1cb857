"""`verify` in the background: one job at a time per console, with progress for the page.

Verification walks every row of every chain, which takes minutes on a big log, so the
chain page starts it in a thread and polls `VerifyJob.snapshot` (a JSON-ready dict).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from audit import AuditError, VerifyReport, verify_chain
from audit.schema import EVENTS

__all__ = ["VerifyJob"]


@dataclass(slots=True)
class _Run:
    started_at: datetime
    total: int
    done: int = 0
    finished_at: datetime | None = None
    report: VerifyReport | None = None
    error: str | None = None


class VerifyJob:
    """Runs `audit.verify_chain` on ``url`` in a daemon thread, one run at a time."""

    def __init__(
        self,
        url: str,
        engine: Callable[[], Engine],
        *,
        hmac_key: bytes | None = None,
    ) -> None:
        self._url = url
        self._engine = engine
        self._hmac_key = hmac_key
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """A run is in progress."""
        with self._lock:
            return self._run is not None and self._run.finished_at is None

    def start(self) -> bool:
        """Start a run unless one is in progress; True when this call started one."""
        with self._lock:
            if self._run is not None and self._run.finished_at is None:
                return False
            with self._engine().connect() as conn:
                total = int(conn.execute(select(func.count()).select_from(EVENTS)).scalar() or 0)
            self._run = _Run(started_at=datetime.now(UTC), total=total)
            run = self._run
        self._thread = threading.Thread(
            target=self._work, args=(run,), name="console-verify", daemon=True
        )
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current run ends (tests, shutdown); True when it has."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _work(self, run: _Run) -> None:
        def advance(n: int) -> None:
            with self._lock:
                run.done += n

        try:
            report = verify_chain(self._url, hmac_key=self._hmac_key, progress=advance)
        except AuditError as exc:
            error: str | None = str(exc)
            report = None
        except Exception as exc:  # keep the page truthful: a crash is a failed run
            error, report = f"verify failed: {exc!r}", None
        else:
            error = None
        with self._lock:
            run.report, run.error = report, error
            run.finished_at = datetime.now(UTC)

    def snapshot(self) -> dict[str, Any]:
        """The state of the last run: ``state`` is idle, running, intact, tampered or error."""
        with self._lock:
            run = self._run
            if run is None:
                return {"state": "idle"}
            doc: dict[str, Any] = {
                "started_at": run.started_at.isoformat(timespec="seconds"),
                "total": run.total,
                "done": min(run.done, run.total) if run.total else run.done,
                "finished_at": run.finished_at.isoformat(timespec="seconds")
                if run.finished_at
                else None,
            }
            if run.finished_at is None:
                doc["state"] = "running"
            elif run.error is not None:
                doc.update(state="error", error=run.error)
            else:
                assert run.report is not None
                report = run.report
                doc.update(
                    state="intact" if report.ok else "tampered",
                    events_checked=report.events_checked,
                    chains_checked=report.chains_checked,
                    checkpoints_checked=report.checkpoints_checked,
                    problems=[
                        {
                            "chain_id": p.chain_id,
                            "seq": p.seq,
                            "event_id": p.event_id,
                            "reason": p.reason,
                        }
                        for p in report.problems
                    ],
                )
            return doc
