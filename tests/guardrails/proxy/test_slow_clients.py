"""Slow and many clients: headers or a body that do not arrive in time close the
connection, and each worker caps its open connections."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from guardrails.proxy import ProxyConfig
from guardrails.proxy.testing import FakeUpstream

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 4


@pytest.fixture(scope="module")
def strict(
    tmp_path_factory: pytest.TempPathFactory,
    keys: Any,
    upstream: FakeUpstream,
    policy_text: str,
    proxy_starter: Any,
) -> Iterator[Any]:
    """A proxy with short client time-outs and few connections."""
    work: Path = tmp_path_factory.mktemp("slow")
    policy = work / "policy.yaml"
    policy.write_text(policy_text, encoding="utf-8")
    config = ProxyConfig(
        policy=str(policy),
        upstream=upstream.url,
        upstream_key="upstream-secret",
        keys_file=str(keys.file),
        header_timeout_s=HEADER_TIMEOUT_S,
        body_timeout_s=BODY_TIMEOUT_S,
        max_connections=MAX_CONNECTIONS,
    )
    server = proxy_starter(config, policy)
    yield server
    server.stop()


def _connect(server: Any) -> socket.socket:
    host, port = server.root.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def _closed_while_trickling(sock: socket.socket, data: bytes, deadline_s: float) -> bytes:
    """Send ``data`` a byte at a time until the server answers or closes; what it sent."""
    received = b""
    sock.settimeout(0.2)
    deadline = time.monotonic() + deadline_s
    for byte in data:
        assert time.monotonic() < deadline, "the server never closed the slow connection"
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return received
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return received
        return chunk
    raise AssertionError("the whole request was sent before the server closed")


def test_slow_headers_are_cut_off(strict):
    """A client sending its headers a byte every 0.2 s is disconnected, with no answer."""
    sock = _connect(strict)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 10_000 + b"\r\n\r\n"
    with sock:
        received = _closed_while_trickling(sock, head, deadline_s=60)
    assert received == b""


def test_idle_connection_is_closed(strict):
    """A client that connects and sends nothing is disconnected."""
    with _connect(strict) as sock:
        sock.settimeout(60)
        assert sock.recv(1) == b""


def test_slow_body_is_408(strict, keys):
    """An authenticated request whose body trickles in gets 408 and is closed."""
    body = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}' * 200
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {keys.tenant_a}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    with _connect(strict) as sock:
        sock.sendall(head)
        received = _closed_while_trickling(sock, body, deadline_s=60)
        sock.settimeout(30)
        while chunk := sock.recv(4096):  # the server closes after the answer
            received += chunk
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"body_timeout" in received


def test_connections_are_capped_and_freed(strict):
    """Beyond max_connections a request gets 503; once slow connections are cut, 200."""
    hogs = [_connect(strict) for _ in range(MAX_CONNECTIONS)]
    try:
        response = httpx.get(f"{strict.root}/healthz", timeout=30)
        assert response.status_code == 503
    finally:
        for hog in hogs:
            hog.close()
    deadline = time.monotonic() + 30
    while httpx.get(f"{strict.root}/healthz", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "connections never freed"
        time.sleep(0.05)


def test_connections_on_a_handed_over_socket_get_nodelay(keys, upstream, tmp_path, policy_text):
    """`guardrails serve` hands uvicorn a bound socket by descriptor; its connections still
    get TCP_NODELAY (without it every response waited ~40 ms for a delayed ACK)."""
    import threading

    import uvicorn

    from guardrails.proxy import create_app
    from guardrails.proxy.server import uvicorn_options

    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text, encoding="utf-8")
    config = ProxyConfig(policy=str(policy), upstream=upstream.url, keys_file=str(keys.file))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            fd=listener.fileno(),
            log_level="warning",
            **uvicorn_options(config, in_process=True),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        with httpx.Client() as client:
            assert client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            (protocol,) = server.server_state.connections
            sock = protocol.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.should_exit = True
        thread.join(15)
        listener.close()
