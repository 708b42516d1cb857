"""Whether this worker can serve: the audit store's reachability, probed for ``/readyz``.

A load balancer must stop routing to a proxy that would refuse every call: under
``outage: fail_closed`` an unreachable audit store makes the worker not ready; when the
policy keeps calls going through an outage (``outage: spill`` or ``on_error: allow``) the
worker stays ready and says it is ``degraded``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from guardrails.logs import get_logger

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = get_logger("guardrails.proxy")


class AuditProbe:
    """``SELECT 1`` against the audit store, off the event loop, at most once per ``ttl_s``."""

    def __init__(self, url: str, *, timeout_s: float, ttl_s: float = 1.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._engine: Engine | None = None
        self._checked_at = -float("inf")
        self._reachable = True
        self._lock = asyncio.Lock()

    def _ping(self) -> None:
        from sqlalchemy import text

        if self._engine is None:
            from audit.engine import create_audit_engine

            self._engine = create_audit_engine(self.url)
        with self._engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    async def reachable(self) -> bool:
        """Whether the store answered the last probe (re-probed when older than ``ttl_s``)."""
        async with self._lock:
            if time.monotonic() - self._checked_at < self.ttl_s:
                return self._reachable
            try:
                await asyncio.wait_for(asyncio.to_thread(self._ping), self.timeout_s)
                reachable = True
            except Exception as exc:  # any failure to answer means: not reachable now
                if self._reachable:
                    log.warning("audit_store_unreachable", error=repr(exc))
                reachable = False
            if reachable and not self._reachable:
                log.warning("audit_store_reachable")
            self._reachable = reachable
            self._checked_at = time.monotonic()
            return reachable

    def close(self) -> None:
        """Release the probe's connections."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


__all__: list[str] = ["AuditProbe"]
