"""The proxy's configuration: one frozen value, built by the CLI or by tests.

Workers started by uvicorn (``--workers N``) cannot receive Python objects, so the config
also travels as JSON in the ``GUARDRAILS_PROXY_CONFIG`` environment variable
(`ProxyConfig.to_env` / `ProxyConfig.from_env`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from guardrails.exceptions import GuardrailsError

CONFIG_ENV = "GUARDRAILS_PROXY_CONFIG"
DEFAULT_HEADER_TIMEOUT_S = 10.0


class ProxyConfigError(GuardrailsError, ValueError):
    """A proxy configuration that cannot serve: names the option and the bad value."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """Everything one proxy worker needs.

    Exactly one of ``upstream`` (an OpenAI-compatible base URL such as
    ``http://127.0.0.1:8000/v1``) and ``generator`` (a `load_generator` spec) is set.
    ``upstream_key`` is sent to the upstream as a bearer token and never leaves the server.
    ``keys_file`` holds the client API keys; ``allow_anonymous`` must be set explicitly to
    serve without keys. ``models`` restricts the model names clients may ask for (empty:
    whatever the upstream accepts). ``open_paths`` answer without an API key (probes and the
    API description); ``()`` makes every path need one. A client gets ``header_timeout_s``
    to send a request's headers and ``body_timeout_s`` for its body before the connection
    is closed (408 for the body); ``max_connections`` caps each worker's open connections
    (503 beyond); idle keep-alive connections close after ``keep_alive_s``.
    """

    policy: str | None = None
    upstream: str | None = None
    upstream_key: str | None = None
    generator: str | None = None
    audit: str | None = None
    keys_file: str | None = None
    allow_anonymous: bool = False
    models: tuple[str, ...] = ()
    max_body_bytes: int = 1_000_000
    max_messages: int = 512
    upstream_timeout_s: float = 60.0
    upstream_connect_timeout_s: float = 5.0
    upstream_pool_size: int = 256
    #: idle pooled upstream connections are dropped after this (keep it below the
    #: upstream's own keep-alive)
    upstream_keepalive_s: float = 4.0
    reload_interval_s: float = 2.0
    open_paths: tuple[str, ...] = ("/healthz", "/readyz", "/docs", "/openapi.json")
    audit_probe_timeout_s: float = 2.0
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0
    max_connections: int = 1024
    #: tenant (``"*"``: any other) -> ``{key_rpm, key_tpm, tenant_rpm, tenant_tpm,
    #: max_prompt_chars}`` (see `guardrails.proxy.limits`)
    limits: dict[str, dict[str, int]] = field(default_factory=dict)
    redis_url: str | None = None
    redis_prefix: str = "guardrails:limits"

    def __post_init__(self) -> None:
        problems: list[str] = []
        if (self.upstream is None) == (self.generator is None):
            problems.append("set exactly one of upstream (a URL) and generator (a name)")
        if self.upstream is not None and not self.upstream.startswith(("http://", "https://")):
            problems.append(f"upstream must be an http(s) URL, got {self.upstream!r}")
        if self.keys_file is None and not self.allow_anonymous:
            problems.append("keys_file is required (or allow_anonymous=True, for development)")
        for name in ("max_body_bytes", "max_messages", "upstream_pool_size", "max_connections"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in (
            "upstream_timeout_s",
            "upstream_connect_timeout_s",
            "reload_interval_s",
            "audit_probe_timeout_s",
            "header_timeout_s",
            "body_timeout_s",
            "keep_alive_s",
            "upstream_keepalive_s",
        ):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)!r}")
        from guardrails.proxy.limits import parse_limits

        try:
            parse_limits(self.limits)
        except ValueError as exc:
            problems.append(str(exc))
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            problems.append(f"redis_url must be a redis:// URL, got {self.redis_url!r}")
        if problems:
            raise ProxyConfigError("; ".join(problems))

    def to_env(self) -> str:
        """The JSON form stored in ``GUARDRAILS_PROXY_CONFIG`` for uvicorn workers."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls) -> ProxyConfig:
        """Read the config a parent process put in ``GUARDRAILS_PROXY_CONFIG``."""
        raw = os.environ.get(CONFIG_ENV)
        if not raw:
            raise ProxyConfigError(f"{CONFIG_ENV} is not set")
        data: dict[str, Any] = json.loads(raw)
        for name in ("models", "open_paths"):
            if name in data:
                data[name] = tuple(data[name])
        return cls(**data)


__all__ = [
    "CONFIG_ENV",
    "DEFAULT_HEADER_TIMEOUT_S",
    "ProxyConfig",
    "ProxyConfigError",
]
