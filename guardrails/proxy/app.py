"""The app factory: a FastAPI app for one worker, with no module-level state.

`create_app(config)` builds everything; the lifespan opens the upstream pool, loads the
keys and the policies, and starts the watcher that hot-reloads both. `create_app_from_env`
is the factory uvicorn workers call (``guardrails serve --workers N``).

`ProxyMiddleware` (pure ASGI, so streams are not buffered) runs first on every request: it
assigns the request id and sets ``X-Guardrails-Request-Id`` on every response, bounds the
body size, authenticates the API key (everything but the configured ``open_paths`` needs
one: by default ``/healthz``, ``/readyz``, ``/docs`` and ``/openapi.json``, so orchestrators
can probe) and counts requests for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit.engine import default_audit_url
from guardrails.console import CONSOLE_PREFIX, ConsoleSettings, create_console_router
from guardrails.logs import get_logger
from guardrails.proxy.config import ProxyConfig
from guardrails.proxy.errors import ProxyHTTPError, error_body, error_type_for
from guardrails.proxy.keys import KeyRing
from guardrails.proxy.limits import limiter_for, parse_limits
from guardrails.proxy.metrics import Metrics
from guardrails.proxy.pipeline import REQUEST_ID_HEADER, Caller
from guardrails.proxy.policies import PolicyRegistry, ReloadWatcher
from guardrails.proxy.readiness import AuditProbe
from guardrails.proxy.routes import router
from guardrails.proxy.state import ProxyState
from guardrails.proxy.upstream import GeneratorUpstream, HTTPUpstream, Upstream

log = get_logger("guardrails.proxy")
access_log = get_logger("guardrails.access")

_ROUTE_LABELS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/moderations",
        "/v1/models",
        "/healthz",
        "/readyz",
        "/metrics",
        "/admin/policy",
        "/admin/policy/reload",
        "/admin/audit",
    }
)


def _is_console(path: str) -> bool:
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


def _json_error(status: int, message: str, request_id: str, code: str | None) -> list[Message]:
    body = json.dumps(
        error_body(message, error_type=error_type_for(status), code=code, request_id=request_id)
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (REQUEST_ID_HEADER.encode(), request_id.encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if status in (408, 413):  # the body was not read to its end: the connection is done
        headers.append((b"connection", b"close"))
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    ]


class ProxyMiddleware:
    """Request id, body limit, authentication and request metrics for every HTTP request."""

    def __init__(self, app: ASGIApp, state: ProxyState) -> None:
        self.app = app
        self.state = state
        self.open_paths = frozenset(state.config.open_paths)

    def _caller(self, scope: Scope) -> Caller | None:
        config = self.state.config
        presented: str | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    presented = token.strip()
                break
        if presented is not None and self.state.keys is not None:
            key = self.state.keys.lookup(presented)
            if key is not None:
                return Caller(key.tenant, key.key_id, key.admin, key.policy, key.role_of)
            return None  # a wrong key is never anonymous
        if config.allow_anonymous and presented is None:
            return Caller("anonymous", None, False, None)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        path: str = scope["path"]
        route = path if path in _ROUTE_LABELS else "other"
        status_seen = [500]
        metrics = self.state.metrics

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen[0] = message["status"]
                headers = list(message.get("headers", []))
                if not any(k.lower() == REQUEST_ID_HEADER.encode() for k, _ in headers):
                    headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        async def reply(status: int, message: str, code: str | None) -> None:
            for part in _json_error(status, message, request_id, code):
                await send_with_id(part)

        try:
            # the console authenticates its own way (a session cookie for browsers)
            if path not in self.open_paths and not _is_console(path):
                caller = self._caller(scope)
                if caller is None:
                    await reply(401, "Missing or invalid API key.", "invalid_api_key")
                    return
                scope.setdefault("state", {})["caller"] = caller
            scope.setdefault("state", {})["request_id"] = request_id
            try:
                async with asyncio.timeout(self.state.config.body_timeout_s):
                    body_receive = await self._bounded_body(scope, receive)
            except TimeoutError:
                waited = self.state.config.body_timeout_s
                log.info("slow_client_closed", request_id=request_id, waited="body")
                await reply(
                    408, f"The request body did not arrive within {waited:g} s.", "body_timeout"
                )
                return
            if body_receive is None:
                limit = self.state.config.max_body_bytes
                await reply(
                    413, f"The request body is larger than {limit} bytes.", "body_too_large"
                )
                return
            await self.app(scope, body_receive, send_with_id)
        finally:
            metrics.inc(
                "guardrails_requests_total", (("route", route), ("status", str(status_seen[0])))
            )
            elapsed = time.perf_counter() - started
            metrics.observe("guardrails_request_seconds", elapsed, (("route", route),))
            access_log.info(  # the access log: one line per request, with its request id
                "http_request",
                request_id=request_id,
                method=scope.get("method", ""),
                path=path,
                status=status_seen[0],
                duration_ms=round(elapsed * 1000, 3),
            )

    async def _bounded_body(self, scope: Scope, receive: Receive) -> Receive | None:
        """Read the body up front (at most the limit); ``None`` when it is too large."""
        limit = self.state.config.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        return None
                except ValueError:
                    return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # a disconnect: let the app see an empty body and end
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


def _request_id(request: Request) -> str:
    rid = request.scope.get("state", {}).get("request_id")
    return str(rid) if rid else uuid.uuid4().hex


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    parts = []
    param: str | None = None
    for error in errors[:5]:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        param = param or (where if loc else None)
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "Invalid request: " + "; ".join(parts) + more, param


def _install_error_handlers(app: FastAPI) -> None:
    async def proxy_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProxyHTTPError)
        return exc.response(_request_id(request))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param = _validation_message(exc)
        return ProxyHTTPError(400, message, param=param, code="invalid_request").response(
            _request_id(request)
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else "invalid request"
        if exc.status_code == 404:
            detail = f"Unknown path {request.url.path}"
        return ProxyHTTPError(exc.status_code, detail, headers=dict(exc.headers or {})).response(
            _request_id(request)
        )

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        rid = _request_id(request)
        log.error("proxy_unexpected_error", request_id=rid, error=repr(exc), exc_info=exc)
        return ProxyHTTPError(500, "Internal error.", code="internal_error").response(rid)

    app.add_exception_handler(ProxyHTTPError, proxy_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)


def _make_upstream(config: ProxyConfig) -> Upstream:
    if config.upstream is not None:
        return HTTPUpstream(
            config.upstream,
            api_key=config.upstream_key,
            timeout_s=config.upstream_timeout_s,
            connect_timeout_s=config.upstream_connect_timeout_s,
            pool_size=config.upstream_pool_size,
            keepalive_s=config.upstream_keepalive_s,
        )
    from guardrails.generators.loading import load_generator

    spec = config.generator
    assert spec is not None
    return GeneratorUpstream(spec, lambda stream: load_generator(spec, stream=stream))


async def _watch(state: ProxyState) -> None:
    """Poll the keys file and the policy files; reload what changed (see `ReloadWatcher`)."""
    await ReloadWatcher(state.registry, lambda: state.keys, state.config.reload_interval_s).run()


def create_app(config: ProxyConfig) -> FastAPI:
    """A proxy app for ``config`` (one per worker process).

    Raises (at startup, from the lifespan): `PolicyError` when the default policy or a
    policy named by a key does not load, `KeysFileError` for a malformed keys file.
    """
    metrics = Metrics()
    state = ProxyState(
        config=config,
        metrics=metrics,
        registry=PolicyRegistry(config.policy, config.audit, metrics),
        upstream=_make_upstream(config),
        audit_probe=AuditProbe(config.audit, timeout_s=config.audit_probe_timeout_s)
        if config.audit is not None
        else None,
        limiter=limiter_for(
            parse_limits(config.limits), config.redis_url, prefix=config.redis_prefix
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if config.keys_file is not None:
            state.keys = await asyncio.to_thread(KeyRing, config.keys_file)
        await state.registry.get(config.policy)
        if state.keys is not None:
            for spec in {k.policy for k in state.keys.keys if k.active and k.policy}:
                await state.registry.get(spec)
        await state.upstream.start()
        watcher = asyncio.get_running_loop().create_task(_watch(state))
        state.ready = True
        log.info("proxy_started", policy=state.registry.default().guard.policy.ref.header())
        try:
            yield
        finally:
            state.ready = False
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await state.upstream.close()
            await state.registry.close()
            await asyncio.to_thread(console.console_close)  # type: ignore[attr-defined]
            if state.audit_reader is not None:
                await asyncio.to_thread(state.audit_reader.close)
            if state.audit_probe is not None:
                await asyncio.to_thread(state.audit_probe.close)
            if state.limiter is not None:
                await state.limiter.close()

    app = FastAPI(
        title="guardrails proxy",
        summary="An OpenAI-compatible proxy that checks every prompt and output against a policy.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.proxy = state
    _install_error_handlers(app)
    app.include_router(router)
    console = create_console_router(
        ConsoleSettings(audit_url=config.audit or default_audit_url(), keys=lambda: state.keys)
    )
    app.include_router(console)
    app.add_middleware(ProxyMiddleware, state=state)
    return app


def create_app_from_env() -> FastAPI:
    """The factory uvicorn workers import: the config comes from ``GUARDRAILS_PROXY_CONFIG``."""
    from guardrails.logs import configure_logging

    configure_logging()
    return create_app(ProxyConfig.from_env())


__all__: list[str] = ["ProxyMiddleware", "create_app", "create_app_from_env"]
