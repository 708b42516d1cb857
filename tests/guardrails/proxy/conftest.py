"""Real parts for the proxy tests: a fake OpenAI upstream and the proxy under uvicorn, both
on loopback sockets, a keys file and a small policy written for these tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from guardrails.proxy import ProxyConfig, create_app
from guardrails.proxy.keys import add_key
from guardrails.proxy.server import uvicorn_options
from guardrails.proxy.testing import FakeUpstream

POLICY = """\
name: proxy-test
version: "1"
settings:
  stream_holdback_chars: 8
  refusal: "Sorry, I can't help with that."
  audit:
    store: full
  classifier:
    enabled: false
rules:
  - id: pii.email
    category: pii
    pattern: '[a-z0-9.]+@[a-z0-9]+\\.[a-z]{2,}'
    anchors: ["@"]
    normalization: [nfkc, strip_invisible]
    action: redact
    replacement: "[EMAIL]"
  - id: secret.launch_code
    category: secret
    keywords: ["launch code"]
    action: block
    applies_to: [output]
  - id: injection.ignore
    category: injection
    keywords: ["ignore previous instructions"]
    action: block
    applies_to: [input]
  - id: internal.codename
    category: internal
    keywords: ["project nightjar"]
    action: block
    show_id: false
    applies_to: [input]
  - id: watch.pricing
    category: pricing
    keywords: ["discount"]
    action: block
    mode: shadow
"""

STRICT_POLICY = POLICY.replace("name: proxy-test", "name: proxy-strict").replace(
    'keywords: ["discount"]\n    action: block\n    mode: shadow',
    'keywords: ["discount"]\n    action: block',
)


@dataclass
class Keys:
    """The keys of one test server: tenant A, tenant B (strict policy), admins."""

    file: Path
    tenant_a: str
    tenant_b: str
    admin_all: str
    admin_a: str


@dataclass
class ProxyServer:
    """A running proxy: its base URL (``.../v1``), root URL, app and server."""

    url: str
    root: str
    server: uvicorn.Server
    thread: threading.Thread
    audit_url: str
    policy_path: Path

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def start_proxy(config: ProxyConfig, policy_path: Path) -> ProxyServer:
    """Run ``create_app(config)`` under uvicorn on a free loopback port, in a thread."""
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            **uvicorn_options(config, in_process=True),
        )
    )
    thread = threading.Thread(target=server.run, name="proxy-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the proxy did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    root = f"http://127.0.0.1:{port}"
    return ProxyServer(f"{root}/v1", root, server, thread, config.audit or "", policy_path)


@pytest.fixture(scope="session")
def policy_text() -> str:
    """The YAML of the test policy the proxy starts with."""
    return POLICY


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    """The fake OpenAI upstream, shared by the session (it checks the upstream key)."""
    fake = FakeUpstream(api_key="upstream-secret").start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for this module's policy, keys and audit database."""
    return tmp_path_factory.mktemp("proxy")


@pytest.fixture(scope="module")
def keys(workdir: Path) -> Keys:
    """A keys file with two tenants (B on the strict policy) and two admins."""
    file = workdir / "keys.json"
    strict = workdir / "strict.yaml"
    strict.write_text(STRICT_POLICY, encoding="utf-8")
    tenant_a, _ = add_key(file, tenant="tenant-a")
    tenant_b, _ = add_key(file, tenant="tenant-b", policy=str(strict))
    admin_all, _ = add_key(file, tenant="*", admin=True)
    admin_a, _ = add_key(file, tenant="tenant-a", admin=True)
    return Keys(file, tenant_a, tenant_b, admin_all, admin_a)


@pytest.fixture(scope="module")
def proxy(workdir: Path, keys: Keys, upstream: FakeUpstream) -> Iterator[ProxyServer]:
    """The proxy under uvicorn in front of the fake upstream, with a SQLite audit log."""
    policy = workdir / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    config = ProxyConfig(
        policy=str(policy),
        upstream=upstream.url,
        upstream_key="upstream-secret",
        audit=f"sqlite:///{workdir / 'audit.db'}",
        keys_file=str(keys.file),
        models=("fake-model",),
        upstream_timeout_s=2.0,
        reload_interval_s=0.2,
        max_body_bytes=200_000,
        max_messages=16,
    )
    server = start_proxy(config, policy)
    yield server
    server.stop()


class TcpProxy:
    """A TCP forwarder a test can cut and restore: a store that refuses connections."""

    def __init__(self, target_port: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._target = target_port
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    @property
    def running(self) -> bool:
        """Whether it accepts connections now."""
        return self._listener is not None

    def start(self) -> None:
        """Accept and forward connections."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut every open one (an outage)."""
        assert self._listener is not None
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._listener = None
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                client.close()
                continue
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass


@pytest.fixture(scope="session")
def tcp_proxy_cls() -> type[TcpProxy]:
    """`TcpProxy`, for test modules (conftest modules are not importable by name)."""
    return TcpProxy


@pytest.fixture(scope="session")
def proxy_starter() -> object:
    """`start_proxy`, for test modules that run a proxy of their own."""
    return start_proxy
