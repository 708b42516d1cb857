"""How uvicorn serves the proxy: uvloop + httptools, and limits for slow or many clients.

uvicorn closes idle keep-alive connections but has no limit on how long a client may take
to send a request's headers, so a slow client (one byte every few seconds) holds a
connection forever. `SlowClientProtocol` closes a connection whose request headers are not
complete ``header_timeout_s`` after the connection opened or the request began; the body
has its own limit (``body_timeout_s``, in `guardrails.proxy.app.ProxyMiddleware`), and
``max_connections`` caps each worker's open connections (beyond it, requests get 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from guardrails.logs import get_logger
from guardrails.proxy.config import CONFIG_ENV, DEFAULT_HEADER_TIMEOUT_S, ProxyConfig

log = get_logger("guardrails.proxy")


def _env_header_timeout() -> float:
    """The header time-out of the config a `guardrails serve` parent put in the environment."""
    if os.environ.get(CONFIG_ENV):
        return ProxyConfig.from_env().header_timeout_s
    return DEFAULT_HEADER_TIMEOUT_S


class SlowClientProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose headers arrive too slowly."""

    header_timeout_s: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if type(self).header_timeout_s is None:
            type(self).header_timeout_s = _env_header_timeout()
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        timeout = type(self).header_timeout_s
        assert timeout is not None
        self._header_timer = self.loop.call_later(timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info("slow_client_closed", client=str(self.client), waited="headers")
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # `guardrails serve` binds the socket itself and hands uvicorn its descriptor, which
        # uvicorn wraps as AF_UNIX: the event loop then never sets TCP_NODELAY on accepted
        # connections, and each response waits ~40 ms for the client's delayed ACK (48 ms
        # against 2.6 ms per request at one connection, measured). Set it here, whatever
        # family the wrapper claims; a real Unix socket refuses it harmlessly.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # idle between requests: uvicorn's keep-alive timer (shorter) now applies

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)


def protocol_for(config: ProxyConfig) -> type[SlowClientProtocol]:
    """A protocol class with ``config``'s header time-out (for servers run in-process)."""
    return type(
        "SlowClientProtocolConfigured",
        (SlowClientProtocol,),
        {"header_timeout_s": config.header_timeout_s},
    )


#: How long a worker may take to answer uvicorn's liveness ping (starting up included).
_WORKER_HEALTHCHECK_S = 120


def uvicorn_options(config: ProxyConfig, *, in_process: bool = False) -> dict[str, Any]:
    """The uvicorn options the proxy runs with (`guardrails serve` and the tests).

    ``in_process``: the server runs in this process (a configured protocol class can be
    passed); otherwise workers are spawned and read the time-out from the environment.
    """
    return {
        "loop": "uvloop",
        "http": protocol_for(config) if in_process else SlowClientProtocol,
        "limit_concurrency": config.max_connections,
        "timeout_keep_alive": config.keep_alive_s,
        # uvicorn kills a worker that does not answer its supervisor's ping within this time
        # (default 5 s), and a worker still importing torch on a busy machine cannot: it was
        # killed and respawned forever, so the server never came up under load.
        "timeout_worker_healthcheck": _WORKER_HEALTHCHECK_S,
    }


__all__: list[str] = ["SlowClientProtocol", "protocol_for", "uvicorn_options"]
