"""The proxy's endpoints: the OpenAI API surface, health, metrics and administration.

Authentication already happened in `ProxyMiddleware`; the caller is in
``request.state.caller``. Admin endpoints additionally need an admin key.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from guardrails.decision import Stage
from guardrails.exceptions import GuardInputError, PolicyError
from guardrails.policy import AuditOutage, OnError
from guardrails.proxy.errors import ProxyHTTPError
from guardrails.proxy.keys import ALL_TENANTS
from guardrails.proxy.limits import RateLimiter, estimate_tokens
from guardrails.proxy.pipeline import (
    CHAT,
    COMPLETIONS,
    Caller,
    GuardedCall,
    GuardedStreamResponse,
    json_bytes,
)
from guardrails.proxy.policies import GuardSlot
from guardrails.proxy.schemas import ChatCompletionRequest, CompletionRequest, ModerationRequest
from guardrails.proxy.state import ProxyState

router = APIRouter()

_MODELS_TTL_S = 60.0
_MAX_MODERATION_INPUTS = 64


def _state(request: Request) -> ProxyState:
    state: ProxyState = request.app.state.proxy
    return state


def _caller(request: Request) -> Caller:
    caller: Caller = request.state.caller
    return caller


def _request_id(request: Request) -> str:
    rid: str = request.state.request_id
    return rid


def _admin(request: Request) -> Caller:
    """The caller, if an operator or a tenant admin (403 otherwise)."""
    caller = _caller(request)
    if caller.role not in ("operator", "tenant_admin"):
        raise ProxyHTTPError(403, "This endpoint needs an admin key.", code="forbidden")
    return caller


def _operator(request: Request) -> Caller:
    """The caller, if an operator: server-wide views and actions (403 otherwise)."""
    caller = _caller(request)
    if caller.role != "operator":
        raise ProxyHTTPError(
            403, "This endpoint needs an operator key (tenant '*').", code="forbidden"
        )
    return caller


def _tenant_policies(state: ProxyState, tenant: str | None) -> set[str]:
    """The policy specs the active keys of ``tenant`` run under (not the server default)."""
    if state.keys is None:
        return set()
    return {k.policy for k in state.keys.keys if k.active and k.tenant == tenant and k.policy}


def admin_tenant_scope(caller: Caller, requested: str | None) -> str | None:
    """The tenant an admin query is limited to: a tenant-bound admin sees only its own.

    Raises:
        ProxyHTTPError: 403 when a tenant-bound admin asks for another tenant.
    """
    if caller.role == "operator" and caller.tenant == ALL_TENANTS:
        return requested
    if requested is not None and requested != caller.tenant:
        raise ProxyHTTPError(
            403, "This key may not read another tenant's events.", code="forbidden"
        )
    return caller.tenant


async def _slot(state: ProxyState, caller: Caller) -> GuardSlot:
    try:
        return await state.registry.get(caller.policy or state.config.policy)
    except PolicyError as exc:
        raise ProxyHTTPError(
            503, "The policy for this key does not load; ask an operator.", code="policy_error"
        ) from exc


async def _known_models(state: ProxyState) -> list[str]:
    if state.config.models:
        return list(state.config.models)
    cached = state.models_cache
    now = time.monotonic()
    if cached is not None and now - cached[0] < _MODELS_TTL_S:
        return cached[1]
    from guardrails.proxy.upstream import UpstreamError

    try:
        models = await state.upstream.models()
    except UpstreamError as exc:
        raise ProxyHTTPError(exc.status, exc.message, code=exc.code) from exc
    state.models_cache = (now, models)
    return models


def _check_model(state: ProxyState, model: str) -> None:
    if state.config.models and model not in state.config.models:
        # A 400 (not OpenAI's 404): the request names a model this proxy does not serve, so
        # it is refused as invalid before anything is checked or forwarded.
        served = ", ".join(state.config.models)
        raise ProxyHTTPError(
            400,
            f"The model {model!r} is not served here (models: {served}).",
            code="model_not_found",
            param="model",
        )


async def _completion(
    request: Request,
    route: str,
    model: str,
    user: str | None,
    payload: dict[str, Any],
    stream: bool,
    include_usage: bool,
) -> Response:
    state = _state(request)
    caller = _caller(request)
    slot = await _slot(state, caller)
    metrics = state.metrics
    label = (("route", f"/v1/{route}"),)

    def observe_upstream(seconds: float) -> None:
        metrics.observe("guardrails_upstream_seconds", seconds, label)

    guarded = GuardedCall(
        request_id=_request_id(request),
        slot=slot,
        caller=caller,
        route=route,
        model=model,
        user=user,
        payload=payload,
        upstream=state.upstream,
        observe_upstream=observe_upstream,
    )
    limiter = state.limiter
    if limiter is not None:
        await limiter.admit(caller, len(guarded.prompt.joined))
    if stream:
        return _StreamAdapter(guarded.stream_response(include_usage), limiter, caller)
    body, headers = await guarded.run()
    if limiter is not None:
        await limiter.charge(caller, completion_tokens(body))
    return Response(json_bytes(body), headers=headers, media_type="application/json")


def completion_tokens(body: dict[str, Any]) -> int:
    """The completion's tokens: the upstream's count, else an estimate from the text."""
    usage = body.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        return int(usage["completion_tokens"])
    chars = 0
    for choice in body.get("choices", []):
        message = choice.get("message") or {}
        chars += len(choice.get("text") or message.get("content") or "")
    return estimate_tokens(chars)


class _StreamAdapter(Response):
    """Lets FastAPI return a raw ASGI response object from a route."""

    def __init__(
        self, inner: GuardedStreamResponse, limiter: RateLimiter | None, caller: Caller
    ) -> None:
        self.inner = inner
        self.limiter = limiter
        self.caller = caller
        self.background = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.inner(scope, receive, send)
        finally:
            if self.limiter is not None and self.inner.released_chars:
                await self.limiter.charge(self.caller, estimate_tokens(self.inner.released_chars))


@router.post("/v1/chat/completions", tags=["openai"])
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    """Chat completions, streaming or not, through the guard."""
    state = _state(request)
    _check_model(state, body.model)
    if len(body.messages) > state.config.max_messages:
        raise ProxyHTTPError(
            400,
            f"Too many messages: {len(body.messages)} (at most {state.config.max_messages}).",
            param="messages",
            code="too_many_messages",
        )
    payload = body.model_dump(exclude_unset=True)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await _completion(
        request, CHAT, body.model, body.user, payload, body.stream, include_usage
    )


@router.post("/v1/completions", tags=["openai"])
async def completions(body: CompletionRequest, request: Request) -> Response:
    """Legacy text completions (one prompt per request), streaming or not."""
    state = _state(request)
    _check_model(state, body.model)
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise ProxyHTTPError(
                400,
                "Send exactly one prompt per request.",
                param="prompt",
                code="unsupported_parameter",
            )
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    payload = body.model_dump(exclude_unset=True)
    payload["prompt"] = prompt
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await _completion(
        request, COMPLETIONS, body.model, body.user, payload, body.stream, include_usage
    )


@router.post("/v1/moderations", tags=["openai"])
async def moderations(body: ModerationRequest, request: Request) -> JSONResponse:
    """OpenAI moderation format; categories are the policy's rule categories, scores come
    from the rules (1.0 when a rule matched) and the classifier (its score)."""
    state = _state(request)
    caller = _caller(request)
    slot = await _slot(state, caller)
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs or len(inputs) > _MAX_MODERATION_INPUTS:
        raise ProxyHTTPError(
            400,
            f"Send 1 to {_MAX_MODERATION_INPUTS} inputs.",
            param="input",
            code="invalid_input",
        )
    if state.limiter is not None:
        await state.limiter.admit(caller, sum(len(text) for text in inputs))
    guard = slot.guard
    categories = sorted({rule.category for rule in guard.policy.rules if rule.enabled})
    # each input checked in the guard's worker pool, off the event loop
    try:
        verdicts = await asyncio.gather(*(guard.acheck(text, Stage.INPUT) for text in inputs))
    except GuardInputError as exc:
        raise ProxyHTTPError(
            400, f"Invalid input: {exc}", param="input", code="invalid_input"
        ) from None
    results = []
    for verdict in verdicts:
        flags = dict.fromkeys(categories, False)
        scores = dict.fromkeys(categories, 0.0)
        for finding in verdict.findings:
            if finding.shadow:
                continue
            flags[finding.category] = True
            score = finding.score if finding.score is not None else 1.0
            scores[finding.category] = max(scores.get(finding.category, 0.0), score)
        results.append(
            {
                "flagged": any(flags.values()),
                "categories": flags,
                "category_scores": scores,
                "category_applied_input_types": {c: ["text"] for c in categories},
                "action": verdict.action.value,
                "rules": [f.rule_id for f in verdict.findings if not f.shadow],
            }
        )
    rid = _request_id(request)
    return JSONResponse(
        {"id": f"modr-{rid}", "model": body.model or guard.policy.ref.header(), "results": results},
        headers={"x-guardrails-policy": guard.policy.ref.header()},
    )


@router.get("/v1/models", tags=["openai"])
async def models(request: Request) -> JSONResponse:
    """The models clients may ask for (the configured list, or the upstream's)."""
    names = await _known_models(_state(request))
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": 0, "owned_by": "guardrails"} for n in names
            ],
        }
    )


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. Needs no key."""
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"])
async def readyz(request: Request) -> JSONResponse:
    """Readiness: policies loaded, the upstream pool open, and the audit store reachable.

    While the store is unreachable the worker is not ready (503) under ``outage:
    fail_closed``, since it would refuse every call; under ``outage: spill`` or ``on_error:
    allow`` it is ready and ``degraded``. Needs no key unless configured otherwise.
    """
    state = _state(request)
    if not state.ready or state.config.policy not in state.registry.slots:
        return JSONResponse({"status": "starting"}, status_code=503)
    guard = state.registry.default().guard
    body: dict[str, Any] = {"status": "ready", "policy": guard.policy.ref.header()}
    if state.audit_probe is not None and not await state.audit_probe.reachable():
        settings = guard.policy.settings
        keeps_serving = (
            settings.audit.outage is AuditOutage.SPILL or settings.on_error is OnError.ALLOW
        )
        body["audit"] = "unreachable"
        if not keeps_serving:
            return JSONResponse({**body, "status": "not_ready"}, status_code=503)
        body["degraded"] = True
    return JSONResponse(body)


@router.get("/metrics", tags=["ops"])
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus metrics of this worker, every tenant's (operator key)."""
    _operator(request)
    return PlainTextResponse(
        _state(request).metrics.render(), media_type="text/plain; version=0.0.4"
    )


@router.get("/admin/policy", tags=["admin"])
async def admin_policy(request: Request) -> dict[str, Any]:
    """The policies in force: name, version, digest (and, for operators, the file) of each.

    A tenant admin sees the server's default policy and the policies of its tenant's keys.
    """
    caller = _admin(request)
    state = _state(request)
    operator = caller.role == "operator"
    visible = _tenant_policies(state, caller.tenant) | {state.config.policy}
    policies = []
    for spec, slot in state.registry.slots.items():
        if not operator and spec not in visible:
            continue
        entry = {
            "policy": spec or "default",
            "name": slot.guard.policy.name,
            "version": slot.guard.policy.version,
            "digest": slot.guard.policy.digest,
            "header": slot.guard.policy.ref.header(),
        }
        if operator:
            entry["path"] = str(slot.path)
        policies.append(entry)
    return {"policies": policies}


@router.post("/admin/policy/reload", tags=["admin"])
async def admin_reload(request: Request) -> dict[str, Any]:
    """Re-read policy files now; an invalid file is rejected and the old one stays.

    An operator reloads every policy; a tenant admin only the policies its tenant's keys
    name (the server's default policy is shared by every tenant: operators only).
    """
    caller = _admin(request)
    state = _state(request)
    if caller.role == "operator":
        outcomes = await state.registry.check_all(force=True)
    else:
        outcomes = []
        for spec in sorted(_tenant_policies(state, caller.tenant)):
            if spec in state.registry.slots:
                outcome = await state.registry.check(spec, force=True)
                if outcome is not None:
                    outcomes.append(outcome)
    return {"reloads": [o.to_dict() for o in outcomes]}


@router.get("/admin/audit", tags=["admin"])
async def admin_audit(
    request: Request,
    tenant: Annotated[str | None, Query(max_length=256)] = None,
    action: Annotated[str | None, Query(pattern="^(allow|flag|redact|block)$")] = None,
    request_id: Annotated[str | None, Query(max_length=128)] = None,
    since: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Audit events, newest first; a tenant-bound admin key sees only its tenant."""
    caller = _admin(request)
    scope = admin_tenant_scope(caller, tenant)
    state = _state(request)
    if state.config.audit is None:
        raise ProxyHTTPError(404, "This proxy has no audit log configured.", code="no_audit_log")
    if since is not None and since.tzinfo is None:
        raise ProxyHTTPError(400, "since needs a time zone (e.g. ...Z).", param="since")
    from audit import AuditError, AuditStore

    if state.audit_reader is None:
        state.audit_reader = await asyncio.to_thread(AuditStore, state.config.audit)
    reader = state.audit_reader
    try:
        events = await asyncio.to_thread(
            reader.events,
            tenant=scope,
            action=action,
            request_id=request_id,
            since=since,
            limit=limit,
        )
    except AuditError as exc:
        raise ProxyHTTPError(
            503, f"The audit log is unavailable: {exc}", code="audit_unavailable"
        ) from exc
    return {
        "events": [
            {
                "event_id": e.event_id,
                "created_at": e.created_at.isoformat(),
                "request_id": e.request_id,
                "tenant": e.tenant,
                "model": e.model,
                "action": e.action,
                "input_action": e.input_action,
                "output_action": e.output_action,
                "findings": list(e.findings),
                "flagged": e.flagged,
                "streamed": e.streamed,
                "released_chars": e.released_chars,
                "error": e.error,
                "policy": f"{e.policy_name}@{e.policy_version}#{e.policy_digest[:12]}",
                "metadata": e.metadata,
            }
            for e in events
        ]
    }


__all__ = [
    "admin_audit",
    "admin_policy",
    "admin_reload",
    "admin_tenant_scope",
    "chat_completions",
    "completion_tokens",
    "completions",
    "healthz",
    "metrics",
    "models",
    "moderations",
    "readyz",
    "router",
]
