"""A small OpenAI-compatible server for tests and benchmarks (aiohttp, real sockets).

`FakeUpstream` answers ``/v1/chat/completions`` and ``/v1/completions`` (streaming too) and
``/v1/models`` from the last user message, so a test can script the model's answer:

- ``say: TEXT``: answer TEXT (the rest of the message);
- ``slowsay: TEXT``: the same, streamed with 50 ms between chunks;
- ``sleep: SECONDS``: wait that long first (time-outs);
- ``fail: STATUS``: answer with that HTTP status and an OpenAI-style error;
- ``reason: THOUGHT | TEXT``: answer TEXT with ``reasoning_content`` THOUGHT;
- ``refuse: TEXT``: a ``refusal`` instead of content;
- ``tool: NAME ARGUMENTS``: a call of tool NAME with ARGUMENTS (a JSON object);
- anything else: answer ``echo: <message>``.

In a reply, ``{at}`` becomes ``@``: an e-mail address the prompt's check never saw, so the
output check is what must catch it.

With ``n > 1`` a ``say:`` reply may hold alternatives separated by ``||``: choice *i* gets
the *i*-th (cycling). With ``logprobs: true`` each choice carries logprobs whose tokens are
its chunks, each with ``top_logprobs`` alternatives (the token upper-cased).

It records every request body it received (``requests``), so tests can prove what reached
the upstream, and checks the upstream key when one is set. Run ``python -m
guardrails.proxy.testing --port 8001`` for a stand-alone upstream (the benchmark does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from typing import Any

from aiohttp import web


def _last_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        for message in reversed(body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
                return str(content or "")
        return ""
    prompt = body.get("prompt", "")
    return str(prompt[0] if isinstance(prompt, list) and prompt else prompt)


class FakeUpstream:
    """The fake OpenAI server; `start` runs it on a loopback port in a background thread."""

    def __init__(
        self,
        *,
        models: tuple[str, ...] = ("fake-model",),
        api_key: str | None = None,
        chunk_size: int = 4,
        chunk_delay_s: float = 0.0,
        record: bool = True,
        keepalive_s: float = 75.0,
    ) -> None:
        self.models = models
        self.api_key = api_key
        self.chunk_size = chunk_size
        self.chunk_delay_s = chunk_delay_s
        self.record = record
        self.keepalive_s = keepalive_s
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL the proxy's ``upstream`` option takes."""
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        return app

    def _error(self, status: int, message: str, code: str) -> web.Response:
        body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
        return web.json_response(body, status=status)

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, chat=False)

    async def _answer(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        if self.api_key is not None and request.headers.get("Authorization") != (
            f"Bearer {self.api_key}"
        ):
            return self._error(401, "bad upstream key", "invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "invalid JSON", "invalid_json")
        if self.record:
            self.requests.append(body)
        if body.get("model") not in self.models:
            return self._error(
                404, f"The model {body.get('model')!r} does not exist", "model_not_found"
            )
        text = _last_text(body)
        command, _, argument = text.partition(":")
        command = command.strip().lower()
        if command == "sleep":
            await asyncio.sleep(float(argument.strip().split()[0]))
        if command == "fail":
            status = int(argument.strip().split()[0])
            return self._error(status, "scripted failure", "scripted")
        reply = argument.strip() if command in ("say", "slowsay") else f"echo: {text}"
        argument = argument.replace("{at}", "@")
        reply = reply.replace("{at}", "@")
        n = int(body.get("n") or 1)
        alternatives = reply.split("||") if command == "say" and n > 1 else [reply]
        parts = [
            self._parts(command, argument, alternatives[i % len(alternatives)].strip(), text)
            for i in range(n)
        ]
        reply = parts[0].get("content") or ""
        ident, created = f"fake-{uuid.uuid4().hex[:12]}", int(time.time())
        usage = {
            "prompt_tokens": len(text.split()),
            "completion_tokens": len(reply.split()),
            "total_tokens": len(text.split()) + len(reply.split()),
        }
        want_logprobs = bool(body.get("logprobs"))
        if not body.get("stream"):
            choices = [
                self._choice(i, p, chat=chat, logprobs=want_logprobs) for i, p in enumerate(parts)
            ]
            return web.json_response(
                {
                    "id": ident,
                    "object": "chat.completion" if chat else "text_completion",
                    "created": created,
                    "model": body["model"],
                    "choices": choices,
                    "usage": usage,
                    # not an OpenAI field: a proxy that passes fields through would leak it
                    "debug": {"prompt": text},
                }
            )
        if n > 1 or command in ("reason", "refuse", "tool") or want_logprobs:
            return await self._stream_parts(
                request, body, parts, chat=chat, ident=ident, created=created, usage=usage
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        kind = "chat.completion.chunk" if chat else "text_completion"

        async def send(choice: dict[str, Any] | None, extra: dict[str, Any] | None = None) -> None:
            event: dict[str, Any] = {
                "id": ident,
                "object": kind,
                "created": created,
                "model": body["model"],
                "choices": [choice] if choice is not None else [],
            }
            event.update(extra or {})
            await response.write(f"data: {json.dumps(event)}\n\n".encode())

        if chat:
            await send(
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            )
        for start in range(0, len(reply), self.chunk_size):
            piece = reply[start : start + self.chunk_size]
            delay = 0.05 if command == "slowsay" else self.chunk_delay_s
            if delay:
                await asyncio.sleep(delay)  # paced like a model's tokens
            await send(
                {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                if chat
                else {"index": 0, "text": piece, "finish_reason": None}
            )
        await send(
            {"index": 0, "delta": {}, "finish_reason": "stop"}
            if chat
            else {"index": 0, "text": "", "finish_reason": "stop"}
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            await send(None, {"usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    def _parts(command: str, argument: str, reply: str, text: str) -> dict[str, Any]:
        """What one choice says: content, reasoning, refusal, tool call."""
        if command == "reason":
            thought, _, answer = argument.partition("|")
            return {"content": answer.strip(), "reasoning_content": thought.strip()}
        if command == "refuse":
            return {"content": None, "refusal": argument.strip()}
        if command == "tool":
            name, _, arguments = argument.strip().partition(" ")
            return {"content": None, "tool": (name, arguments.strip())}
        return {"content": reply}

    def _tokens(self, text: str) -> list[dict[str, Any]]:
        tokens = [text[i : i + self.chunk_size] for i in range(0, len(text), self.chunk_size)]
        return [
            {
                "token": t,
                "logprob": -0.5,
                "bytes": list(t.encode()),
                "top_logprobs": [{"token": t.upper(), "logprob": -1.5, "bytes": None}],
            }
            for t in tokens
        ]

    def _choice(
        self, index: int, parts: dict[str, Any], *, chat: bool, logprobs: bool
    ) -> dict[str, Any]:
        content = parts.get("content")
        if not chat:
            choice_logprobs = None
            if logprobs:
                entries = self._tokens(content or "")
                choice_logprobs = {
                    "tokens": [e["token"] for e in entries],
                    "token_logprobs": [e["logprob"] for e in entries],
                    "top_logprobs": [{e["token"].upper(): -1.5} for e in entries],
                    "text_offset": list(range(len(entries))),
                }
            return {
                "index": index,
                "text": content or "",
                "finish_reason": "stop",
                "logprobs": choice_logprobs,
            }
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if "reasoning_content" in parts:
            message["reasoning_content"] = parts["reasoning_content"]
        if "refusal" in parts:
            message["refusal"] = parts["refusal"]
        finish = "stop"
        if "tool" in parts:
            name, arguments = parts["tool"]
            message["tool_calls"] = [
                {
                    "id": f"call_{index}",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ]
            finish = "tool_calls"
        return {
            "index": index,
            "message": message,
            "finish_reason": finish,
            "logprobs": {"content": self._tokens(content or ""), "refusal": None}
            if logprobs
            else None,
        }

    async def _stream_parts(
        self,
        request: web.Request,
        body: dict[str, Any],
        parts: list[dict[str, Any]],
        *,
        chat: bool,
        ident: str,
        created: int,
        usage: dict[str, Any],
    ) -> web.StreamResponse:
        """Stream choices (interleaved), reasoning, refusals and tool calls chunk by chunk."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        kind = "chat.completion.chunk" if chat else "text_completion"
        size = self.chunk_size

        async def send(choice: dict[str, Any] | None, extra: dict[str, Any] | None = None) -> None:
            event: dict[str, Any] = {
                "id": ident,
                "object": kind,
                "created": created,
                "model": body["model"],
                "choices": [choice] if choice is not None else [],
            }
            event.update(extra or {})
            await response.write(f"data: {json.dumps(event)}\n\n".encode())

        def pieces(text: str | None) -> list[str]:
            return [(text or "")[i : i + size] for i in range(0, len(text or ""), size)]

        for index, part in enumerate(parts):
            if chat:
                await send({"index": index, "delta": {"role": "assistant"}, "finish_reason": None})
            for key in ("reasoning_content", "refusal", "content") if chat else ("content",):
                for piece in pieces(part.get(key)):
                    if chat:
                        choice: dict[str, Any] = {
                            "index": index,
                            "delta": {key: piece},
                            "finish_reason": None,
                        }
                        if key == "content" and body.get("logprobs"):
                            choice["logprobs"] = {"content": self._tokens(piece)}
                    else:
                        choice = {"index": index, "text": piece, "finish_reason": None}
                        if body.get("logprobs"):
                            entries = self._tokens(piece)
                            choice["logprobs"] = {
                                "tokens": [e["token"] for e in entries],
                                "token_logprobs": [e["logprob"] for e in entries],
                                "top_logprobs": [{e["token"].upper(): -1.5} for e in entries],
                                "text_offset": [0 for _ in entries],
                            }
                    await send(choice)
            if "tool" in part:
                name, arguments = part["tool"]
                head = {"index": 0, "id": f"call_{index}", "type": "function"}
                await send(
                    {
                        "index": index,
                        "delta": {"tool_calls": [{**head, "function": {"name": name}}]},
                        "finish_reason": None,
                    }
                )
                for piece in pieces(arguments):
                    call = {"index": 0, "function": {"arguments": piece}}
                    await send({"index": index, "delta": {"tool_calls": [call]}})
            finish = "tool_calls" if "tool" in part else "stop"
            await send(
                {"index": index, "delta": {}, "finish_reason": finish}
                if chat
                else {"index": index, "text": "", "finish_reason": finish}
            )
        if (body.get("stream_options") or {}).get("include_usage"):
            await send(None, {"usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def start(self) -> FakeUpstream:
        """Serve on a free loopback port in a daemon thread; returns when it listens."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._runner = web.AppRunner(
                    self.app(), access_log=None, keepalive_timeout=self.keepalive_s
                )
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, "127.0.0.1", self.port)
                loop.run_until_complete(site.start())
                server = site._server
                assert server is not None
                self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    @property
    def open_connections(self) -> int:
        """Connections the server holds open now (keep-alive ones included)."""
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def main() -> None:
    """``python -m guardrails.proxy.testing --port N``: serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    web.run_app(
        FakeUpstream(
            chunk_size=args.chunk_size, chunk_delay_s=args.chunk_delay_ms / 1000, record=False
        ).app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()


__all__ = [
    "FakeUpstream",
    "main",
]
