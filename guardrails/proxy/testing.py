"""A small OpenAI-compatible server for tests and benchmarks (aiohttp, real sockets).

`FakeUpstream` answers ``/v1/chat/completions`` and ``/v1/completions`` (streaming too) and
``/v1/models`` from the last user message, so a test can script the model's answer:

- ``say: TEXT``: answer TEXT (the rest of the message);
- ``slowsay: TEXT``: the same, streamed with 50 ms between chunks;
- ``sleep: SECONDS``: wait that long first (time-outs);
- ``fail: STATUS``: answer with that HTTP status and an OpenAI-style error;
- anything else: answer ``echo: <message>``.

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
    ) -> None:
        self.models = models
        self.api_key = api_key
        self.chunk_size = chunk_size
        self.chunk_delay_s = chunk_delay_s
        self.record = record
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
        ident, created = f"fake-{uuid.uuid4().hex[:12]}", int(time.time())
        usage = {
            "prompt_tokens": len(text.split()),
            "completion_tokens": len(reply.split()),
            "total_tokens": len(text.split()) + len(reply.split()),
        }
        if not body.get("stream"):
            choice: dict[str, Any] = (
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
                if chat
                else {"index": 0, "text": reply, "finish_reason": "stop", "logprobs": None}
            )
            return web.json_response(
                {
                    "id": ident,
                    "object": "chat.completion" if chat else "text_completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [choice],
                    "usage": usage,
                }
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

    def start(self) -> FakeUpstream:
        """Serve on a free loopback port in a daemon thread; returns when it listens."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._runner = web.AppRunner(self.app(), access_log=None)
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
