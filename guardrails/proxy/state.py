"""The per-app state every route reaches through ``request.app.state.proxy``.

Built by `guardrails.proxy.app.create_app` and filled in by its lifespan (inside the
worker's event loop), never at import time, so several apps can live in one process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from guardrails.proxy.config import ProxyConfig
from guardrails.proxy.keys import KeyRing
from guardrails.proxy.limits import RateLimiter
from guardrails.proxy.metrics import Metrics
from guardrails.proxy.policies import PolicyRegistry
from guardrails.proxy.readiness import AuditProbe
from guardrails.proxy.upstream import Upstream

if TYPE_CHECKING:
    from audit import AuditStore


@dataclass
class ProxyState:
    """What one worker holds: config, keys, guards, the upstream client, metrics."""

    config: ProxyConfig
    metrics: Metrics
    registry: PolicyRegistry
    upstream: Upstream
    keys: KeyRing | None = None
    audit_reader: AuditStore | None = None
    audit_probe: AuditProbe | None = None
    limiter: RateLimiter | None = None
    ready: bool = False
    models_cache: tuple[float, list[str]] | None = field(default=None)


__all__ = [
    "ProxyState",
]
