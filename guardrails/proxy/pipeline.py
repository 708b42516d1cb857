"""One guarded completion: the request's text through the guard, the upstream behind it.

The upstream call is the generator the guard runs (`Guard.acall` / `Guard.astream`), so the
proxy inherits the in-process guarantees: the prompt is checked once, first (a block means
the upstream is never called), the output is checked before anything is released, a
stream is released only through the guard's `StreamChecker`, and every call is audited.

What the guard checks:

- **input**: every text the model will read (`PromptParts`): each message's content and
  text parts, tool results, the tool calls of earlier assistant turns, and the tool
  definitions (name, description, parameter schema), joined by blank lines. When the guard
  redacted it, each part is redacted on its own before it goes upstream, and the parts must
  join to exactly the guard's redacted text (else the request is refused, never sent half
  redacted).
- **output**: every text a caller can read (`guardrails.proxy.responses.Readable`): each
  choice's content, reasoning, refusal, tool-call names and arguments, and logprob tokens.
  The response is rebuilt from an allow-list of fields with the checked texts.

Streams with one choice, no tools and no logprobs release their content as it passes the
check; anything else they carry (reasoning, refusal, a tool call) is held until the upstream
is done and released after the whole text passed. Streams with tools, ``n > 1`` or logprobs
are checked whole and then sent as chunks: a tool call is released only when its arguments
are complete and checked.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import Receive, Scope, Send

from guardrails.decision import Stage
from guardrails.exceptions import AuditUnavailable, GeneratorError, GuardInputError
from guardrails.guard import CallOutcome, guard_context
from guardrails.logs import get_logger
from guardrails.proxy.errors import ProxyHTTPError
from guardrails.proxy.policies import GuardSlot
from guardrails.proxy.responses import (
    CHAT,
    COMPLETIONS,
    SEPARATOR,
    Readable,
    StreamAssembler,
    allowed_usage,
    build_chat,
    build_completion,
    check_result,
    chunks_of,
    envelope,
    readable,
)
from guardrails.proxy.upstream import Upstream, UpstreamError

if TYPE_CHECKING:
    from guardrails.decision import Verdict
    from guardrails.guard import Guard

log = get_logger("guardrails.proxy")

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
    #: ``client``, ``tenant_admin`` or ``operator`` (see `guardrails.proxy.keys.ROLES`)
    role: str = "client"


# --- the input: every text the model reads ------------------------------------------------------


@dataclass(slots=True)
class _Part:
    text: str
    apply: Callable[[str], None]


@dataclass(slots=True)
class PromptParts:
    """The texts of a request body the model will read, and how to put redacted ones back."""

    parts: list[_Part] = field(default_factory=list)

    @property
    def joined(self) -> str:
        """The prompt the guard checks and audits."""
        return SEPARATOR.join(p.text for p in self.parts)

    def _add(self, text: object, apply: Callable[[str], None]) -> None:
        if isinstance(text, str) and text:
            self.parts.append(_Part(text, apply))

    @classmethod
    def of(cls, route: str, payload: dict[str, Any]) -> PromptParts:
        """The parts of ``payload`` (already validated by the request schemas)."""
        out = cls()
        if route == COMPLETIONS:
            out._add(payload.get("prompt"), lambda t: payload.__setitem__("prompt", t))
            return out
        for message in payload.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                out._add(content, _setter(message, "content"))
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict):
                        out._add(part.get("text"), _setter(part, "text"))
            for call in message.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    out._add(function.get("name"), _setter(function, "name"))
                    out._add(function.get("arguments"), _setter(function, "arguments"))
            legacy = message.get("function_call")
            if isinstance(legacy, dict):
                out._add(legacy.get("name"), _setter(legacy, "name"))
                out._add(legacy.get("arguments"), _setter(legacy, "arguments"))
        definitions = [t.get("function") for t in payload.get("tools") or [] if isinstance(t, dict)]
        definitions += list(payload.get("functions") or [])
        for function in definitions:
            if not isinstance(function, dict):
                continue
            out._add(function.get("name"), _setter(function, "name"))
            out._add(function.get("description"), _setter(function, "description"))
            if function.get("parameters") is not None:
                out._add(
                    json.dumps(function["parameters"], ensure_ascii=False, sort_keys=True),
                    _schema_setter(function),
                )
        return out


def _setter(target: dict[str, Any], key: str) -> Callable[[str], None]:
    def apply(text: str) -> None:
        target[key] = text

    return apply


def _schema_setter(function: dict[str, Any]) -> Callable[[str], None]:
    def apply(text: str) -> None:
        try:
            function["parameters"] = json.loads(text)
        except ValueError as exc:
            raise UpstreamError(
                400,
                "A redaction in a tool's parameter schema would make it invalid JSON; "
                "the request was not sent.",
                code="content_filter",
            ) from exc

    return apply


async def _check(guard: Guard, text: str, stage: Stage) -> Verdict:
    """One check, off the event loop when the guard offers it (``acheck``)."""
    acheck = getattr(guard, "acheck", None)
    if acheck is not None:
        verdict: Verdict = await acheck(text, stage)
        return verdict
    return guard.check(text, stage)


# --- the guarded generators -------------------------------------------------------------------


@dataclass(slots=True)
class UpstreamCall:
    """The state of one upstream call, shared between the guarded function and the route."""

    route: str
    payload: dict[str, Any]
    upstream: Upstream
    guard: Guard
    prompt: PromptParts
    response: dict[str, Any] | None = None
    readable: Readable | None = None
    upstream_s: float = 0.0
    # incremental streams
    assembler: StreamAssembler | None = None
    content: list[str] = field(default_factory=list)
    tail_fed: bool = False

    async def apply_input_redaction(self, checked_prompt: str) -> None:
        """The guard redacted the prompt: redact each part the same way before it goes up."""
        redacted = [(await _check(self.guard, p.text, Stage.INPUT)).text for p in self.prompt.parts]
        if SEPARATOR.join(redacted) != checked_prompt:
            raise UpstreamError(
                400,
                "A redaction spans two parts of the prompt; the request was not sent.",
                code="content_filter",
            )
        for part, text in zip(self.prompt.parts, redacted, strict=True):
            if text != part.text:
                part.apply(text)

    async def before_upstream(self, prompt: str) -> None:
        if prompt != self.prompt.joined:
            await self.apply_input_redaction(prompt)


async def _complete(prompt: str, /, *, call: UpstreamCall) -> str:
    """The guarded generator for plain calls: one upstream request; all readable text."""
    await call.before_upstream(prompt)
    started = time.perf_counter()
    try:
        call.response = await call.upstream.complete(call.route, call.payload)
    finally:
        call.upstream_s = time.perf_counter() - started
    call.readable = readable(call.route, call.response)
    return call.readable.joined


async def _complete_from_stream(prompt: str, /, *, call: UpstreamCall) -> str:
    """The guarded generator for streams checked whole: the upstream's stream, assembled."""
    await call.before_upstream(prompt)
    assembler = StreamAssembler(call.route)
    started = time.perf_counter()
    try:
        async for event in call.upstream.stream(call.route, call.payload):
            assembler.feed(event)
    finally:
        call.upstream_s = time.perf_counter() - started
    call.response = assembler.answer()
    call.readable = readable(call.route, call.response)
    return call.readable.joined


def _first_choice_only(answer: dict[str, Any]) -> dict[str, Any]:
    choices = [c for c in answer["choices"] if c.get("index", 0) == 0] or answer["choices"][:1]
    choice = dict(choices[0])
    choice["logprobs"] = None  # not asked for: not released
    return {**answer, "choices": [choice]}


async def _stream(prompt: str, /, *, call: UpstreamCall) -> AsyncIterator[str]:
    """The guarded generator for incremental streams: choice 0's content as it comes, then
    (once) every other readable text of the answer, so the whole answer is checked."""
    await call.before_upstream(prompt)
    assembler = call.assembler = StreamAssembler(call.route)
    key = "content" if call.route == CHAT else "text"
    started = time.perf_counter()
    try:
        async for event in call.upstream.stream(call.route, call.payload):
            before = _content_len(assembler, key)
            assembler.feed(event)
            parts = assembler.choices.get(0)
            pieces = parts.texts.get(key, []) if parts is not None else []
            for piece in pieces[before:]:
                if piece:
                    call.content.append(piece)
                    yield piece
    finally:
        call.upstream_s = time.perf_counter() - started
    call.response = _first_choice_only(assembler.answer())
    call.readable = readable(call.route, call.response)
    tail = call.readable.joined[len("".join(call.content)) :]
    if tail:
        call.tail_fed = True
        yield tail


def _content_len(assembler: StreamAssembler, key: str) -> int:
    parts = assembler.choices.get(0)
    return len(parts.texts.get(key, [])) if parts is not None else 0


# --- errors ---------------------------------------------------------------------------------


def shown_rules(guard: Guard, verdict: Verdict) -> list[str]:
    """Rule ids of ``verdict`` the policy allows the caller to see (``show_id``)."""
    hidden = {rule.id for rule in guard.policy.rules if not rule.show_id}
    return [rule_id for rule_id in verdict.rule_ids if rule_id not in hidden]


def blocked_input_error(guard: Guard, verdict: Verdict) -> ProxyHTTPError:
    """HTTP 400 ``content_filter``: what the official client raises as BadRequestError."""
    rules = shown_rules(guard, verdict)
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
    if isinstance(exc, GuardInputError):
        # the guard refused the prompt as text it cannot check or store (NUL, lone
        # surrogate) before the upstream was called, and audited it as rejected
        return ProxyHTTPError(400, f"Invalid request: {exc}", code="invalid_request")
    return ProxyHTTPError(502, "the upstream failed", code="upstream_error")


def audit_unavailable_error() -> ProxyHTTPError:
    """HTTP 503: the call could not be recorded, so it was refused (fail closed)."""
    return ProxyHTTPError(
        503, "The audit log is unavailable; the request was refused.", code="audit_unavailable"
    )


def _error_action(exc: Exception) -> str:
    return "block" if isinstance(exc, GuardInputError) else "allow"


def guard_headers(request_id: str, slot: GuardSlot, action: str) -> dict[str, str]:
    """The ``X-Guardrails-*`` headers of a guarded response."""
    return {
        REQUEST_ID_HEADER: request_id,
        ACTION_HEADER: action,
        POLICY_HEADER: slot.guard.policy.ref.header(),
    }


# --- one guarded completion --------------------------------------------------------------------


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
    payload: dict[str, Any]
    upstream: Upstream
    observe_upstream: Callable[[float], None]
    prompt: PromptParts = field(init=False)

    def __post_init__(self) -> None:
        self.prompt = PromptParts.of(self.route, self.payload)

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

    def _with_headers(self, error: ProxyHTTPError, action: str) -> ProxyHTTPError:
        error.headers.update(guard_headers(self.request_id, self.slot, action))
        return error

    @property
    def streams_whole(self) -> bool:
        """Whether a stream must be checked whole before release (tools, n > 1, logprobs)."""
        p = self.payload
        return bool(
            p.get("tools")
            or p.get("functions")
            or (p.get("n") or 1) > 1
            or p.get("logprobs")
            or (p.get("best_of") or 1) > 1
        )

    async def _guarded(self, call: UpstreamCall, fn: Callable[..., Any]) -> CallOutcome:
        try:
            with self._context():
                return await self.slot.guard.acall(fn, self.prompt.joined, call=call)
        except AuditUnavailable:
            raise self._with_headers(audit_unavailable_error(), "block") from None
        except (GeneratorError, GuardInputError) as exc:
            raise self._with_headers(generator_error(exc), _error_action(exc)) from None
        finally:
            self.slot.sink.take(self.request_id)
            if call.upstream_s:
                self.observe_upstream(call.upstream_s)

    def _body(self, call: UpstreamCall, outcome: CallOutcome) -> dict[str, Any]:
        assert call.readable is not None
        assert call.response is not None
        checked = check_result(
            call.readable, outcome.output, self.slot.guard.policy.settings.refusal
        )
        build = build_chat if self.route == CHAT else build_completion
        return build(
            call.response, checked, fallback_id=f"guardrails-{self.request_id}", model=self.model
        )

    async def run(self, *, from_stream: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
        """A plain call (or a stream checked whole): the response body and headers.

        Raises:
            ProxyHTTPError: blocked or invalid input (400), upstream failure (4xx/502/504),
                audit outage (503).
        """
        call = self._call()
        outcome = await self._guarded(call, _complete_from_stream if from_stream else _complete)
        if outcome.input.blocked:
            raise self._with_headers(
                blocked_input_error(self.slot.guard, outcome.input), "block"
            ) from None
        body = self._body(call, outcome)
        return body, guard_headers(self.request_id, self.slot, outcome.action.value)

    def stream_response(self, include_usage: bool) -> GuardedStreamResponse:
        """The ASGI response for a streaming call (see `GuardedStreamResponse`)."""
        return GuardedStreamResponse(self, include_usage)


def _sse(data: Mapping[str, Any] | str) -> bytes:
    if isinstance(data, str):
        return f"data: {data}\n\n".encode()
    return b"data: " + json_bytes(data) + b"\n\n"


def json_bytes(data: Mapping[str, Any]) -> bytes:
    """Compact JSON (orjson on the hot path; the stdlib for what orjson refuses)."""
    try:
        return orjson.dumps(data)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(data, separators=(",", ":")).encode()


_EVENT_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class GuardedStreamResponse:
    """An ASGI response that runs the guarded stream in the request's own task.

    The guard's stream binds context variables while it runs, which must be reset in the
    context that set them; and the prompt's verdict and the audit record's opening come
    before the status is chosen (a blocked prompt is a 400, an audit outage a 503, neither
    an SSE stream). Client disconnects are watched from a side task that cancels the stream,
    which the guard then audits as closed by the client.
    """

    def __init__(self, guarded: GuardedCall, include_usage: bool) -> None:
        self.guarded = guarded
        self.include_usage = include_usage
        #: characters of output released so far (for token accounting)
        self.released_chars = 0

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
            if g.streams_whole:
                await self._run_whole(send)
            else:
                await self._run(send)
        except asyncio.CancelledError:
            if not disconnected.is_set():
                raise
            task.uncancel()
            log.info("stream_client_disconnected", request_id=g.request_id)
        finally:
            watcher.cancel()

    async def _send_error(self, send: Send, error: ProxyHTTPError) -> None:
        body = json.dumps(error.body(self.guarded.request_id)).encode()
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.encode(), v.encode()) for k, v in error.headers.items()]
        await send({"type": "http.response.start", "status": error.status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def _start(self, send: Send, headers: dict[str, str]) -> None:
        raw = _EVENT_STREAM_HEADERS + [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw})

    async def _emit(self, send: Send, data: Mapping[str, Any] | str) -> None:
        await send({"type": "http.response.body", "body": _sse(data), "more_body": True})

    async def _end(self, send: Send) -> None:
        await self._emit(send, "[DONE]")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _run_whole(self, send: Send) -> None:
        """Tools, n > 1, logprobs: the whole answer is checked, then sent as chunks."""
        g = self.guarded
        try:
            body, headers = await g.run(from_stream=True)
        except ProxyHTTPError as error:
            await self._send_error(send, error)
            return
        await self._start(send, headers)
        self.released_chars = sum(
            len(c.get("text") or (c.get("message") or {}).get("content") or "")
            for c in body["choices"]
        )
        for chunk in chunks_of(g.route, body):
            await self._emit(send, chunk)
        if self.include_usage and body.get("usage") is not None:
            meta: dict[str, Any] = {k: body[k] for k in ("id", "created", "model") if k in body}
            kind = "chat.completion.chunk" if g.route == CHAT else "text_completion"
            await self._emit(send, {**meta, "object": kind, "choices": [], "usage": body["usage"]})
        await self._end(send)

    def _chunk(
        self, call: UpstreamCall, delta: dict[str, Any] | None, finish: str | None
    ) -> dict[str, Any]:
        g = self.guarded
        meta = call.assembler.meta if call.assembler is not None else {}
        kind = "chat.completion.chunk" if g.route == CHAT else "text_completion"
        head = envelope(meta, kind=kind, fallback_id=f"guardrails-{g.request_id}", model=g.model)
        if not head["created"]:
            head["created"] = int(time.time())
        if g.route == CHAT:
            choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish}
        else:
            text = (delta or {}).get("content", "")
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        return {**head, "choices": [choice]}

    async def _run(self, send: Send) -> None:
        g = self.guarded
        call = g._call()
        guard = g.slot.guard
        with g._context():
            try:
                try:
                    stream = await guard.astream(_stream, g.prompt.joined, call=call)
                except AuditUnavailable:
                    await self._send_error(
                        send, g._with_headers(audit_unavailable_error(), "block")
                    )
                    return
                except (GeneratorError, GuardInputError) as exc:
                    error = g._with_headers(generator_error(exc), _error_action(exc))
                    await self._send_error(send, error)
                    return
                try:
                    await self._stream(send, call, stream)
                finally:
                    await stream.aclose()
            finally:
                if call.upstream_s:
                    g.observe_upstream(call.upstream_s)
                g.slot.sink.take(g.request_id)

    async def _stream(self, send: Send, call: UpstreamCall, stream: Any) -> None:
        g = self.guarded
        outcome: CallOutcome = stream.outcome
        if outcome.input.blocked:
            error = blocked_input_error(g.slot.guard, outcome.input)
            await self._send_error(send, g._with_headers(error, "block"))
            return
        headers = guard_headers(g.request_id, g.slot, outcome.input.action.value)
        chunks = stream.__aiter__()
        # The first piece decides the status: an audit outage or an upstream failure before
        # anything was released is an HTTP error, not a broken stream.
        first: str | None = None
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            pass
        except AuditUnavailable:
            await self._send_error(send, g._with_headers(audit_unavailable_error(), "block"))
            return
        except (GeneratorError, GuardInputError) as exc:
            await self._send_error(send, g._with_headers(generator_error(exc), _error_action(exc)))
            return
        await self._start(send, headers)
        role: dict[str, Any] = {"role": "assistant"} if g.route == CHAT else {}
        sent: list[str] = []
        held: list[str] = []

        async def release(piece: str) -> None:
            if call.tail_fed:
                held.append(piece)
                return
            sent.append(piece)
            self.released_chars += len(piece)
            await self._emit(send, self._chunk(call, {**role, "content": piece}, None))
            role.clear()

        try:
            if first is not None:
                await release(first)
            async for piece in chunks:
                await release(piece)
        except AuditUnavailable:
            await self._fail(send, audit_unavailable_error())
            return
        except (GeneratorError, GuardInputError) as exc:
            await self._fail(send, generator_error(exc))
            return
        await self._finish(send, call, stream.outcome, "".join(sent), role)

    async def _fail(self, send: Send, error: ProxyHTTPError) -> None:
        """End a started stream with an error event and no normal finish."""
        await self._emit(send, error.body(self.guarded.request_id))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _finish(
        self,
        send: Send,
        call: UpstreamCall,
        outcome: CallOutcome,
        sent: str,
        role: dict[str, Any],
    ) -> None:
        g = self.guarded
        output = outcome.output
        finish: str
        if output is None or output.blocked or call.readable is None:
            finish = "content_filter" if output is not None and output.blocked else "stop"
            if role:
                await self._emit(send, self._chunk(call, {**role, "content": ""}, None))
        else:
            checked = check_result(call.readable, output, g.slot.guard.policy.settings.refusal)
            key = "content" if g.route == CHAT else "text"
            content = checked.texts.get((0, (key,)), "")
            if not content.startswith(sent):
                log.error("stream_release_mismatch", request_id=g.request_id)
                await self._fail(send, ProxyHTTPError(500, "Internal error.", code="internal"))
                return
            delta: dict[str, Any] = {**role}
            if content[len(sent) :] or role:
                delta["content"] = content[len(sent) :]
            assert call.response is not None
            rebuilt = (build_chat if g.route == CHAT else build_completion)(
                call.response, checked, fallback_id=g.request_id, model=g.model
            )
            choice = rebuilt["choices"][0]
            message = choice.get("message") or {}
            for extra in ("reasoning_content", "refusal"):
                if message.get(extra) is not None:
                    delta[extra] = message[extra]
            if message.get("tool_calls"):
                delta["tool_calls"] = [
                    {"index": i, **c} for i, c in enumerate(message["tool_calls"])
                ]
            if delta:
                self.released_chars += sum(len(v) for v in delta.values() if isinstance(v, str))
                await self._emit(send, self._chunk(call, delta, None))
            finish = str(choice.get("finish_reason") or "stop")
        last = self._chunk(call, None, finish)
        last["guardrails"] = {"request_id": g.request_id, "action": outcome.action.value}
        await self._emit(send, last)
        assembler = call.assembler
        if self.include_usage and assembler is not None and assembler.usage is not None:
            usage_chunk = self._chunk(call, None, None)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = allowed_usage(assembler.usage)
            await self._emit(send, usage_chunk)
        await self._end(send)


__all__: list[str] = [
    "ACTION_HEADER",
    "CHAT",
    "COMPLETIONS",
    "POLICY_HEADER",
    "REQUEST_ID_HEADER",
    "Caller",
    "GuardedCall",
    "GuardedStreamResponse",
    "PromptParts",
    "UpstreamCall",
    "audit_unavailable_error",
    "blocked_input_error",
    "generator_error",
    "guard_headers",
    "json_bytes",
    "shown_rules",
]
