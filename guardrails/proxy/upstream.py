"""Where completions come from: an OpenAI-compatible server, or an in-process generator.

`HTTPUpstream` holds one pooled ``aiohttp`` session per worker. aiohttp was chosen by
measurement (``bench/bench_proxy.py --client``): a bare pass-through spent several times
more CPU per request inside httpx's connection pool than inside aiohttp's.
`GeneratorUpstream` serves a `load_generator` callable (the built-in MoE model, the example
bot) in the same OpenAI shapes, so the guarded pipeline above is the same for both.

Failures become `UpstreamError` with the status the proxy answers: the upstream's own 4xx
(the client's fault, e.g. an unknown model), 502 for a broken upstream, 504 for a time-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

import aiohttp
import orjson

from guardrails.exceptions import GuardrailsError


class UpstreamError(GuardrailsError):
    """The upstream failed; ``status`` is what the proxy answers with."""

    def __init__(self, status: int, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class Upstream(Protocol):
    """**Protocol:** an OpenAI-compatible completion source.

    ``route`` is ``chat/completions`` or ``completions``; ``payload`` is the request body
    as the upstream should receive it (already redacted by the guard).
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def complete(self, route: str, payload: dict[str, Any]) -> dict[str, Any]: ...

    def stream(self, route: str, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]: ...

    async def models(self) -> list[str]: ...


def _upstream_message(status: int, body: bytes) -> tuple[str, str | None]:
    """The message and code of an upstream error body (OpenAI-shaped or not)."""
    try:
        data = json.loads(body)
        error = data["error"]
        if isinstance(error, dict):
            return str(error.get("message", "")), error.get("code")
        return str(error), None
    except (ValueError, KeyError, TypeError):
        text = body[:200].decode("utf-8", "replace")
        return f"upstream answered {status}: {text}", None


class HTTPUpstream:
    """An OpenAI-compatible server at ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``).

    Pooled connections are dropped after ``keepalive_s`` idle, which should be shorter than
    the upstream's own keep-alive (uvicorn's default is 5 s), and a request that fails on a
    pooled connection the upstream had already closed is sent once more on a new one.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        pool_size: int = 256,
        keepalive_s: float = 4.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        # Whole-call limit for plain calls; streams are bounded per read instead, so a long
        # but live stream is not cut off.
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout_s, sock_read=timeout_s
        )
        self._pool_size = pool_size
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        #: requests sent again after a stale pooled connection (for tests and metrics)
        self.retries = 0

    async def start(self) -> None:
        """Open the pooled session (inside the worker's event loop)."""
        connector = aiohttp.TCPConnector(
            limit=self._pool_size, ttl_dns_cache=300, keepalive_timeout=self._keepalive_s
        )
        self._session = aiohttp.ClientSession(
            connector=connector, headers=self._headers, timeout=self._timeout
        )

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled session; `start` must have run."""
        if self._session is None:
            raise RuntimeError("HTTPUpstream.start() was not called")
        return self._session

    @contextlib.asynccontextmanager
    async def _open(
        self, method: str, route: str, payload: dict[str, Any] | None, *, stream: bool = False
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The upstream's response to one request, its failures mapped to `UpstreamError`
        in this one place: time-outs 504, transport failures 502, error statuses by
        `_status_error`. A stale pooled connection is retried once."""
        url = f"{self.base_url}/{route}"
        data = _dumps(payload) if payload is not None else None
        timeout = self._stream_timeout if stream else self._timeout
        try:
            for attempt in (1, 2):
                try:
                    response = await self.session.request(method, url, data=data, timeout=timeout)
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                    # the upstream closed a pooled connection as we reused it: nothing was
                    # processed, so sending once more on a fresh connection is safe
                    if attempt == 2:
                        raise
                    self.retries += 1
                    continue
                break
            async with response:
                if response.status >= 400:
                    raise self._status_error(response.status, await response.read())
                yield response
        except TimeoutError as exc:
            raise UpstreamError(504, "the upstream timed out", code="upstream_timeout") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(502, f"the upstream failed: {exc}", code="upstream_error") from exc

    async def complete(self, route: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload`` and return the JSON answer."""
        async with self._open("POST", route, payload) as response:
            body = await response.read()
        return _json_object(body, "answer")

    async def stream(self, route: str, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST ``payload`` with ``stream: true`` and yield each SSE ``data`` object."""
        async with self._open("POST", route, payload, stream=True) as response:
            async for raw_line in response.content:
                line = raw_line.strip()
                if not line.startswith(b"data:"):
                    continue  # comments, event names, blank separators
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                event = _json_object(data, "SSE event")
                if "error" in event:
                    message, code = _upstream_message(502, data)
                    raise UpstreamError(
                        502, f"the upstream failed mid-stream: {message}", code=code
                    )
                yield event

    async def models(self) -> list[str]:
        """The model ids the upstream lists at ``GET /models``."""
        async with self._open("GET", "models", None) as response:
            body = await response.read()
        try:
            return [str(m["id"]) for m in orjson.loads(body)["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(502, "the upstream's model list is malformed") from exc

    @staticmethod
    def _status_error(status: int, body: bytes) -> UpstreamError:
        message, code = _upstream_message(status, body)
        if 400 <= status < 500 and status not in (401, 403):
            return UpstreamError(status, message, code=code)
        # The upstream's auth failures are the proxy's configuration problem, not the client's.
        return UpstreamError(
            502, f"the upstream answered {status}: {message}", code="upstream_error"
        )


def _dumps(payload: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:  # integers beyond 64 bits: the slow path can
        return json.dumps(payload).encode()


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(502, f"the upstream's {what} is not valid JSON") from exc
    if not isinstance(data, dict):
        raise UpstreamError(502, f"the upstream's {what} is not a JSON object")
    return data


# Options an in-process generator understands (the rest of the OpenAI body is dropped).
_GENERATOR_OPTIONS = ("max_tokens", "temperature", "top_p", "top_k", "stop", "seed")


def render_chat_prompt(messages: list[dict[str, Any]]) -> str:
    """A plain chat template for in-process generators: ``role: text`` lines, then
    ``assistant:``."""
    lines = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "\n".join(str(p.get("text")) for p in content if p.get("text") is not None)
        lines.append(f"{message.get('role', 'user')}: {content or ''}")
    lines.append("assistant:")
    return "\n".join(lines)


class GeneratorUpstream:
    """An in-process generator served in OpenAI shapes.

    ``make(stream)`` returns the callable (see `guardrails.generators.loading.load_generator`);
    it is resolved once per mode on first use, in a worker thread (a model load is slow).
    """

    def __init__(self, name: str, make: Callable[[bool], Callable[..., Any]]) -> None:
        self.name = name
        self._make = make
        self._callables: dict[bool, Callable[..., Any]] = {}

    async def start(self) -> None:
        """Load the generator now, so the first request does not pay for it."""
        await self._callable(False)

    async def close(self) -> None:
        """Nothing to release."""

    async def _callable(self, stream: bool) -> Callable[..., Any]:
        if stream not in self._callables:
            self._callables[stream] = await asyncio.to_thread(self._make, stream)
        return self._callables[stream]

    @staticmethod
    def _prompt_and_options(route: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if route == "chat/completions":
            prompt = render_chat_prompt(payload.get("messages", []))
        else:
            raw = payload.get("prompt", "")
            prompt = raw[0] if isinstance(raw, list) else str(raw)
        options = {k: payload[k] for k in _GENERATOR_OPTIONS if payload.get(k) is not None}
        return prompt, options

    async def complete(self, route: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Run the generator in a worker thread and wrap its text in an OpenAI response."""
        prompt, options = self._prompt_and_options(route, payload)
        fn = await self._callable(False)
        try:
            text = await asyncio.to_thread(fn, prompt, **options)
        except Exception as exc:
            raise UpstreamError(502, f"the generator failed: {exc}", code="upstream_error") from exc
        created = int(time.time())
        # a generator may report usage and why it ended (`guardrails.generators.Completion`)
        finish = str(getattr(text, "finish_reason", None) or "stop")
        if route == "chat/completions":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": str(text)},
                "finish_reason": finish,
            }
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": str(text), "finish_reason": finish, "logprobs": None}
            kind = "text_completion"
        body: dict[str, Any] = {
            "id": f"gen-{uuid.uuid4().hex}",
            "object": kind,
            "created": created,
            "model": self.name,
            "choices": [choice],
        }
        usage = getattr(text, "usage", None)
        if isinstance(usage, dict):
            body["usage"] = usage
        return body

    async def stream(self, route: str, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Pull the generator's chunks in a worker thread and yield OpenAI chunk objects."""
        prompt, options = self._prompt_and_options(route, payload)
        fn = await self._callable(True)
        chat = route == "chat/completions"
        ident, created = f"gen-{uuid.uuid4().hex}", int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"
        try:
            chunks: Iterator[str] = await asyncio.to_thread(lambda: iter(fn(prompt, **options)))
            done = object()
            while True:
                piece = await asyncio.to_thread(next, chunks, done)
                if piece is done:
                    break
                choice: dict[str, Any] = (
                    {"index": 0, "delta": {"content": str(piece)}, "finish_reason": None}
                    if chat
                    else {"index": 0, "text": str(piece), "finish_reason": None}
                )
                yield {
                    "id": ident,
                    "object": kind,
                    "created": created,
                    "model": self.name,
                    "choices": [choice],
                }
        except UpstreamError:
            raise
        except Exception as exc:
            raise UpstreamError(502, f"the generator failed: {exc}", code="upstream_error") from exc
        # a stream may report usage and why it ended once exhausted (`CompletionStream`)
        finish = str(getattr(chunks, "finish_reason", None) or "stop")
        last: dict[str, Any] = (
            {"index": 0, "delta": {}, "finish_reason": finish}
            if chat
            else {"index": 0, "text": "", "finish_reason": finish}
        )
        yield {
            "id": ident,
            "object": kind,
            "created": created,
            "model": self.name,
            "choices": [last],
        }
        usage = getattr(chunks, "usage", None)
        if isinstance(usage, dict):
            yield {
                "id": ident,
                "object": kind,
                "created": created,
                "model": self.name,
                "choices": [],
                "usage": usage,
            }

    async def models(self) -> list[str]:
        """The generator's name is the one model served."""
        return [self.name]


__all__ = [
    "GeneratorUpstream",
    "HTTPUpstream",
    "Upstream",
    "UpstreamError",
    "render_chat_prompt",
]
