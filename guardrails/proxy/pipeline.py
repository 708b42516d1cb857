"""One guarded completion: the request's text through the guard, the upstream behind it.

The upstream call is the generator that `Guard.wrap` guards, so the proxy inherits the
in-process guarantees: the prompt is checked first (a block means the upstream is never
called), the output is checked before anything is returned, a stream is released only
through the guard's `StreamChecker`, and every call is one durable audit event.

The prompt the guard checks is the text of every message joined by blank lines. When the
guard redacted it, each message is redacted on its own before it goes upstream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope, Send

from guardrails.decision import Stage
from guardrails.exceptions import AuditUnavailable, Blocked, GeneratorError, GuardInputError
from guardrails.guard import guard_context
from guardrails.logs import get_logger
from guardrails.proxy.errors import ProxyHTTPError
from guardrails.proxy.policies import GuardSlot
from guardrails.proxy.upstream import Upstream, UpstreamError

if TYPE_CHECKING:
    from audit import AuditEvent
    from guardrails.decision import Verdict
    from guardrails.guard import Guard

log = get_logger("guardrails.proxy")

CHAT = "chat/completions"
COMPLETIONS = "completions"

REQUEST_ID_HEADER = "x-guardrails-request-id"
ACTION_HEADER = "x-guardrails-action"
POLICY_HEADER = "x-guardrails-policy"


@dataclass(slots=True)
class Caller:
    """Who is calling, as the audit log and the admin endpoints see it."""

    tenant: str | None
    key_id: str | None
    admin: bool
    policy: str | None


@dataclass(slots=True)
class UpstreamCall:
    """The state of one upstream call, shared between the guarded function and the route."""

    route: str
    payload: dict[str, Any]
    upstream: Upstream
    guard: Guard
    prompt: str
    response: dict[str, Any] | None = None
    upstream_s: float = 0.0
    input_redacted: bool = False
    # streams: what the final chunks need from the upstream's chunks
    meta: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None

    def apply_input_redaction(self, checked_prompt: str) -> None:
        """The guard redacted the prompt: redact what goes upstream to match."""
        self.input_redacted = True
        if self.route == COMPLETIONS:
            self.payload["prompt"] = checked_prompt
            return
        for message in self.payload["messages"]:
            content = message.get("content")
            if isinstance(content, str):
                message["content"] = self.guard.check(content, Stage.INPUT).text
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        part["text"] = self.guard.check(part["text"], Stage.INPUT).text

    def note_chunk(self, event: Mapping[str, Any]) -> str:
        """Remember a stream chunk's metadata; return its text."""
        if not self.meta:
            self.meta = {
                k: event[k] for k in ("id", "created", "model", "system_fingerprint") if k in event
            }
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = event.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        if self.route == CHAT:
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else None
        else:
            text = choice.get("text")
        return text if isinstance(text, str) else ""


def output_text(route: str, data: Mapping[str, Any]) -> str:
    """The completion text of an upstream answer (``""`` for a content-less message)."""
    try:
        choice = data["choices"][0]
        text = choice["message"].get("content") if route == CHAT else choice.get("text")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise UpstreamError(502, "the upstream's answer has no choices") from exc
    if text is None:
        return ""
    if not isinstance(text, str):
        raise UpstreamError(502, "the upstream's answer text is not a string")
    return text


async def _complete(prompt: str, /, *, call: UpstreamCall) -> str:
    """The guarded generator for plain calls: one upstream request."""
    if prompt != call.prompt:
        call.apply_input_redaction(prompt)
    started = time.perf_counter()
    try:
        call.response = await call.upstream.complete(call.route, call.payload)
    finally:
        call.upstream_s = time.perf_counter() - started
    return output_text(call.route, call.response)


async def _stream(prompt: str, /, *, call: UpstreamCall) -> AsyncIterator[str]:
    """The guarded generator for streams: the text of each upstream chunk."""
    if prompt != call.prompt:
        call.apply_input_redaction(prompt)
    started = time.perf_counter()
    try:
        async for event in call.upstream.stream(call.route, call.payload):
            text = call.note_chunk(event)
            if text:
                yield text
    finally:
        call.upstream_s = time.perf_counter() - started


def shown_rules(guard: Guard, verdict: Verdict) -> list[str]:
    """Rule ids of ``verdict`` the policy allows the caller to see (``show_id``)."""
    hidden = {rule.id for rule in guard.policy.rules if not rule.show_id}
    return [rule_id for rule_id in verdict.rule_ids if rule_id not in hidden]


def blocked_input_error(guard: Guard, exc: Blocked) -> ProxyHTTPError:
    """HTTP 400 ``content_filter``: what the official client raises as BadRequestError."""
    rules = shown_rules(guard, exc.verdict)
    listed = f" ({', '.join(rules)})" if rules else ""
    return ProxyHTTPError(
        400,
        f"The prompt was blocked by the content policy{listed}.",
        code="content_filter",
        param="messages",
        extra={"rules": rules},
    )


def generator_error(exc: GeneratorError | GuardInputError) -> ProxyHTTPError:
    """The HTTP error for a failed upstream call (already audited by the guard)."""
    cause = exc.__cause__
    if isinstance(cause, UpstreamError):
        return ProxyHTTPError(cause.status, cause.message, code=cause.code)
    return ProxyHTTPError(502, "the upstream failed", code="upstream_error")


def audit_unavailable_error() -> ProxyHTTPError:
    """HTTP 503: the call could not be recorded, so it was refused (fail closed)."""
    return ProxyHTTPError(
        503, "The audit log is unavailable; the request was refused.", code="audit_unavailable"
    )


def guard_headers(request_id: str, slot: GuardSlot, action: str) -> dict[str, str]:
    """The ``X-Guardrails-*`` headers of a guarded response."""
    return {
        REQUEST_ID_HEADER: request_id,
        ACTION_HEADER: action,
        POLICY_HEADER: slot.guard.policy.ref.header(),
    }


def _final_action(event: AuditEvent | None, fallback: str) -> str:
    return event.action if event is not None else fallback


@dataclass(slots=True)
class GuardedCall:
    """Everything one guarded completion needs; `run` answers a plain call, `stream_response`
    a streaming one."""

    request_id: str
    slot: GuardSlot
    caller: Caller
    route: str
    model: str
    user: str | None
    prompt: str
    payload: dict[str, Any]
    upstream: Upstream
    observe_upstream: Callable[[float], None]

    def _context(self) -> Any:
        return guard_context(
            request_id=self.request_id,
            tenant=self.caller.tenant,
            user=self.user,
            model=self.model,
            route=f"/v1/{self.route}",
            key_id=self.caller.key_id,
        )

    def _call(self) -> UpstreamCall:
        return UpstreamCall(self.route, self.payload, self.upstream, self.slot.guard, self.prompt)

    async def run(self) -> tuple[dict[str, Any], dict[str, str]]:
        """A plain (non-streaming) call: the response body and headers.

        Raises:
            ProxyHTTPError: blocked input (400), upstream failure (4xx/502/504), audit
                outage (503).
        """
        call = self._call()
        guarded: Callable[..., Awaitable[str]] | None = self.slot.wrapped.get("complete")
        if guarded is None:
            guarded = self.slot.wrapped["complete"] = self.slot.guard.wrap(_complete)
        refused = False
        try:
            with self._context():
                text = await guarded(self.prompt, call=call)
        except AuditUnavailable:
            self.slot.sink.take(self.request_id)
            raise self._with_headers(audit_unavailable_error(), "block") from None
        except Blocked as exc:
            self.slot.sink.take(self.request_id)
            if exc.verdict.stage is Stage.INPUT:
                raise self._with_headers(
                    blocked_input_error(self.slot.guard, exc), "block"
                ) from None
            text, refused = self.slot.guard.policy.settings.refusal, True
        except (GeneratorError, GuardInputError) as exc:
            event = self.slot.sink.take(self.request_id)
            raise self._with_headers(generator_error(exc), _final_action(event, "allow")) from None
        finally:
            if call.upstream_s:
                self.observe_upstream(call.upstream_s)
        event = self.slot.sink.take(self.request_id)
        body = call.response if call.response is not None else self._empty_response()
        choice = body["choices"][0]
        if self.route == CHAT:
            choice["message"]["content"] = text
            if refused:
                choice["message"].pop("tool_calls", None)
        else:
            choice["text"] = text
        if refused:
            choice["finish_reason"] = "content_filter"
        action = "block" if refused else _final_action(event, "allow")
        return body, guard_headers(self.request_id, self.slot, action)

    def _with_headers(self, error: ProxyHTTPError, action: str) -> ProxyHTTPError:
        error.headers.update(guard_headers(self.request_id, self.slot, action))
        return error

    def _empty_response(self) -> dict[str, Any]:
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": None}
            if self.route == CHAT
            else {"index": 0, "text": "", "finish_reason": None}
        )
        return {
            "id": f"guardrails-{self.request_id}",
            "object": "chat.completion" if self.route == CHAT else "text_completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [choice],
        }

    def stream_response(self, include_usage: bool) -> GuardedStreamResponse:
        """The ASGI response for a streaming call (see `GuardedStreamResponse`)."""
        return GuardedStreamResponse(self, include_usage)


def _sse(data: Mapping[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


class GuardedStreamResponse:
    """An ASGI response that runs the guarded stream in the request's own task.

    Starlette's ``StreamingResponse`` iterates its body in a child task, but the guard's
    stream binds context variables while it runs, which must be reset in the context that
    set them; and the first chunk must be pulled before the status is chosen (a blocked
    prompt is a 400, not an SSE stream). Client disconnects are watched from a side task
    that cancels the stream, which the guard then audits as released so far.
    """

    def __init__(self, guarded: GuardedCall, include_usage: bool) -> None:
        self.guarded = guarded
        self.include_usage = include_usage

    def _chunk(
        self,
        call: UpstreamCall,
        delta_or_text: str | None,
        finish: str | None,
        *,
        role: bool = False,
    ) -> dict[str, Any]:
        g = self.guarded
        meta = {
            "id": call.meta.get("id", f"guardrails-{g.request_id}"),
            "created": call.meta.get("created", int(time.time())),
            "model": call.meta.get("model", g.model),
        }
        if "system_fingerprint" in call.meta:
            meta["system_fingerprint"] = call.meta["system_fingerprint"]
        if g.route == CHAT:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if delta_or_text is not None:
                delta["content"] = delta_or_text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            return {**meta, "object": "chat.completion.chunk", "choices": [choice]}
        choice = {
            "index": 0,
            "text": delta_or_text or "",
            "finish_reason": finish,
            "logprobs": None,
        }
        return {**meta, "object": "text_completion", "choices": [choice]}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        g = self.guarded
        task = asyncio.current_task()
        assert task is not None
        disconnected = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
                    task.cancel()
                    return

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self._run(send)
        except asyncio.CancelledError:
            if not disconnected.is_set():
                raise
            task.uncancel()
            log.info("stream_client_disconnected", request_id=g.request_id)
        finally:
            watcher.cancel()

    async def _send_error(self, send: Send, error: ProxyHTTPError, headers: dict[str, str]) -> None:
        body = json.dumps(error.body(self.guarded.request_id)).encode()
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": error.status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def _run(self, send: Send) -> None:
        g = self.guarded
        call = g._call()
        guard = g.slot.guard
        input_action = guard.check(g.prompt, Stage.INPUT).action.value
        headers = guard_headers(g.request_id, g.slot, input_action)
        stream_fn: Callable[..., AsyncIterator[str]] | None = g.slot.wrapped.get("stream")
        if stream_fn is None:
            stream_fn = g.slot.wrapped["stream"] = guard.wrap(_stream)
        with g._context():
            chunks = stream_fn(g.prompt, call=call)
            try:
                await self._stream(send, call, chunks, headers)
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
                if call.upstream_s:
                    g.observe_upstream(call.upstream_s)
                g.slot.sink.take(g.request_id)

    async def _stream(
        self, send: Send, call: UpstreamCall, chunks: AsyncIterator[str], headers: dict[str, str]
    ) -> None:
        g = self.guarded
        first: str | None = None
        blocked_early = False
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            pass
        except AuditUnavailable:
            await self._send_error(
                send, audit_unavailable_error(), headers | {ACTION_HEADER: "block"}
            )
            return
        except Blocked as exc:
            if exc.verdict.stage is Stage.INPUT:
                error = blocked_input_error(g.slot.guard, exc)
                await self._send_error(send, error, headers | {ACTION_HEADER: "block"})
                return
            blocked_early = True
        except (GeneratorError, GuardInputError) as exc:
            await self._send_error(send, generator_error(exc), headers)
            return
        raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *[(k.encode(), v.encode()) for k, v in headers.items()],
        ]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})

        async def emit(data: Mapping[str, Any] | str) -> None:
            await send({"type": "http.response.body", "body": _sse(data), "more_body": True})

        await emit(self._chunk(call, first or "", None, role=True))
        finish: str | None = "content_filter" if blocked_early else None
        if not blocked_early:
            try:
                async for text in chunks:
                    await emit(self._chunk(call, text, None))
            except AuditUnavailable:
                finish = "content_filter"
            except Blocked:
                finish = "content_filter"
            except (GeneratorError, GuardInputError) as exc:
                error = generator_error(exc)
                await emit(error.body(g.request_id))
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
        event = g.slot.sink.take(g.request_id)
        last = self._chunk(call, None, finish or call.finish_reason or "stop")
        last["guardrails"] = {
            "request_id": g.request_id,
            "action": _final_action(event, "block" if finish else "allow"),
        }
        await emit(last)
        if self.include_usage and call.usage is not None:
            usage_chunk = self._chunk(call, None, None)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = call.usage
            await emit(usage_chunk)
        await emit("[DONE]")
        await send({"type": "http.response.body", "body": b"", "more_body": False})
