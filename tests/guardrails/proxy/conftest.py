"""Real parts for the proxy tests: a fake OpenAI upstream and the proxy under uvicorn, both
on loopback sockets, a keys file and a small policy written for these tests."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def proxy_starter() -> object:
    """`start_proxy`, for test modules that run a proxy of their own."""
    return start_proxy
