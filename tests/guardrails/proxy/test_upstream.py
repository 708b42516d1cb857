"""The upstream client: one retry on a pooled connection the upstream closed, and every
failure mapped to one OpenAI-style status in one place."""

from __future__ import annotations

import asyncio
import time

import pytest

from guardrails.proxy.testing import FakeUpstream
from guardrails.proxy.upstream import HTTPUpstream, UpstreamError

CHAT_ROUTE = "chat/completions"
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "say: hi"}]}


ANSWER = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}'


async def _one_request_per_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer one request with keep-alive, then drop the connection when it is reused:
    the race a pooled connection loses when the upstream's keep-alive ran out."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
            + f"Content-Length: {len(ANSWER)}\r\n\r\n".encode()
            + ANSWER
        )
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the reuse: close without an answer
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


def test_stale_pooled_connection_is_retried_once():
    """A request on a pooled connection the upstream drops is sent once more, on a fresh
    connection, and succeeds."""

    async def scenario() -> int:
        server = await asyncio.start_server(_one_request_per_connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = HTTPUpstream(f"http://127.0.0.1:{port}/v1", keepalive_s=60.0)
        await client.start()
        try:
            for _ in range(3):
                answer = await client.complete("chat/completions", CHAT)
                assert answer["choices"][0]["message"]["content"] == "hi"
            return client.retries
        finally:
            await client.close()
            server.close()

    assert asyncio.run(scenario()) == 2


def test_keepalive_shorter_than_the_upstream_avoids_stale_connections():
    """With the pool's keep-alive shorter than the upstream's, idle connections are dropped
    by the proxy first (no retry needed after an idle pause)."""
    fake = FakeUpstream(keepalive_s=0.5).start()

    async def scenario() -> int:
        client = HTTPUpstream(fake.url, keepalive_s=0.1)
        await client.start()
        try:
            await client.complete("chat/completions", CHAT)
            deadline = time.monotonic() + 30
            while fake.open_connections:  # the pool let go of it (before the upstream)
                assert time.monotonic() < deadline, "the idle connection was never dropped"
                await asyncio.sleep(0.02)
            await client.complete("chat/completions", CHAT)
            return client.retries
        finally:
            await client.close()

    try:
        assert asyncio.run(scenario()) == 0
    finally:
        fake.stop()


@pytest.mark.parametrize(
    ("text", "status", "code"),
    [
        ("fail: 500", 502, "upstream_error"),
        ("fail: 401", 502, "upstream_error"),
        ("fail: 429", 429, "scripted"),
        ("sleep: 3", 504, "upstream_timeout"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_failures_map_to_one_status(upstream: FakeUpstream, text, status, code, stream):
    """Plain calls and streams map each upstream failure to the same status and code."""
    body = {**CHAT, "messages": [{"role": "user", "content": text}]}

    async def scenario() -> UpstreamError:
        client = HTTPUpstream(upstream.url, api_key="upstream-secret", timeout_s=1.0)
        await client.start()
        try:
            with pytest.raises(UpstreamError) as caught:
                await (drain(client, body) if stream else client.complete(CHAT_ROUTE, body))
            return caught.value
        finally:
            await client.close()

    error = asyncio.run(scenario())
    assert (error.status, error.code) == (status, code)


async def drain(client: HTTPUpstream, body: dict[str, object]) -> None:
    """Read a whole stream."""
    async for _ in client.stream(CHAT_ROUTE, {**body, "stream": True}):
        pass


def test_unreachable_upstream_is_502():
    """Nothing listening is a 502, not an exception the proxy does not know."""

    async def scenario() -> UpstreamError:
        client = HTTPUpstream("http://127.0.0.1:9/v1", connect_timeout_s=1.0)
        await client.start()
        try:
            with pytest.raises(UpstreamError) as caught:
                await client.models()
            return caught.value
        finally:
            await client.close()

    assert asyncio.run(scenario()).status == 502
