"""No call answered without its record, through the real proxy, with a PostgreSQL audit
store that refuses connections (a TCP forwarder we cut), and with clients that go away.

Each test counts what callers were answered against what the store holds."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from audit import AuditStore, upgrade
from guardrails.proxy import ProxyConfig
from guardrails.proxy.keys import add_key
from guardrails.proxy.testing import FakeUpstream

pytestmark = pytest.mark.postgres


def _spill_policy(policy_text: str, spill: Path) -> str:
    return policy_text.replace("name: proxy-test", "name: proxy-spill").replace(
        "    store: full\n", f"    store: full\n    outage: spill\n    spill_dir: {spill}\n"
    )


@pytest.fixture(scope="module")
def store_url(pg_database_url: str) -> str:
    """The session PostgreSQL database, migrated."""
    upgrade(pg_database_url)
    return pg_database_url


@pytest.fixture(scope="module")
def cut(store_url: str, tcp_proxy_cls: Any) -> Iterator[Any]:
    """The forwarder between the proxy and PostgreSQL; tests cut and restore it."""
    target = urlsplit(store_url.replace("postgresql+psycopg", "postgresql"))
    forwarder = tcp_proxy_cls(target.port or 5432)
    forwarder.start()
    yield forwarder
    if forwarder.running:
        forwarder.stop()


@pytest.fixture
def restored(cut: Any) -> Iterator[Any]:
    """The forwarder, running again after the test whatever happened."""
    yield cut
    if not cut.running:
        cut.start()


def _via(store_url: str, forwarder: Any) -> str:
    parts = urlsplit(store_url)
    return parts._replace(netloc=f"postgres@127.0.0.1:{forwarder.port}").geturl()


@pytest.fixture(scope="module")
def tenant_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A keys file with one key of a tenant only this module uses."""
    file = tmp_path_factory.mktemp("fault-keys") / "keys.json"
    key, _ = add_key(file, tenant="fault-tenant")
    return file, key


@pytest.fixture(scope="module")
def faulty(
    tmp_path_factory: pytest.TempPathFactory,
    store_url: str,
    cut: Any,
    tenant_keys: tuple[Path, str],
    upstream: FakeUpstream,
    policy_text: str,
    proxy_starter: Any,
) -> Iterator[Any]:
    """The proxy (fail_closed policy) writing its audit log through the forwarder."""
    work = tmp_path_factory.mktemp("faulty")
    policy = work / "policy.yaml"
    policy.write_text(policy_text, encoding="utf-8")
    config = ProxyConfig(
        policy=str(policy),
        upstream=upstream.url,
        upstream_key="upstream-secret",
        audit=_via(store_url, cut),
        keys_file=str(tenant_keys[0]),
        models=("fake-model",),
        upstream_timeout_s=10.0,
        audit_probe_timeout_s=2.0,
    )
    server = proxy_starter(config, policy)
    yield server
    server.stop()


def _chat(text: str, **extra: object) -> dict[str, object]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": text}], **extra}


def _post(server: Any, key: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def _records(store_url: str, request_id: str) -> list[tuple[str, str | None]]:
    store = AuditStore(store_url)
    try:
        return [(e.phase, e.stream_end) for e in store.events(request_id=request_id, limit=10)]
    finally:
        store.close()


def _wait(predicate, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_outage_refuses_before_any_byte_and_readyz_says_so(
    faulty, restored, tenant_keys, store_url
):
    """During an outage (fail_closed) every call, streamed or not, is a 503 before any byte,
    /readyz is not ready; after it every 200 has its complete record."""
    _, key = tenant_keys
    _wait(lambda: httpx.get(f"{faulty.root}/readyz").status_code == 200, "never ready")
    restored.stop()
    answered_during = []
    for i in range(4):
        for stream in (False, True):
            response = _post(faulty, key, _chat(f"say: outage {i}", stream=stream))
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "audit_unavailable"
            assert "text/event-stream" not in response.headers["content-type"]
            answered_during.append(response.headers["x-guardrails-request-id"])
    _wait(lambda: httpx.get(f"{faulty.root}/readyz").status_code == 503, "still ready")
    assert httpx.get(f"{faulty.root}/readyz").json()["audit"] == "unreachable"
    restored.start()
    _wait(lambda: httpx.get(f"{faulty.root}/readyz").status_code == 200, "not ready again")
    answered_after = []
    for i in range(3):
        for stream in (False, True):
            response = _post(faulty, key, _chat(f"say: back {i}", stream=stream))
            assert response.status_code == 200
            assert "[DONE]" in response.text if stream else response.json()["choices"]
            answered_after.append((stream, response.headers["x-guardrails-request-id"]))
    for stream, rid in answered_after:
        expected = [("close", "complete"), ("open", None)] if stream else [("call", None)]
        assert sorted(_records(store_url, rid), key=str) == sorted(expected, key=str)
    # refused calls released nothing; whatever the store holds of them is never a close
    for rid in answered_during:
        assert all(phase != "close" for phase, _ in _records(store_url, rid))


def test_closing_write_failure_ends_the_stream_with_an_error(
    faulty, restored, tenant_keys, store_url
):
    """The store goes away mid-stream: the stream ends with an error event, never a normal
    finish or [DONE]; the record is an opening without a closing (shown as unclosed)."""
    _, key = tenant_keys
    _wait(lambda: httpx.get(f"{faulty.root}/readyz").status_code == 200, "never ready")
    words = " ".join(f"word{i}" for i in range(20))
    body = _chat(f"slowsay: {words}", stream=True)
    lines: list[str] = []
    with httpx.stream(
        "POST",
        f"{faulty.url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        rid = response.headers["x-guardrails-request-id"]
        for line in response.iter_lines():
            lines.append(line)
            if line.startswith("data:") and '"content"' in line and restored.running:
                restored.stop()  # the opening is stored; the closing cannot be
    events = [json.loads(line[5:]) for line in lines if line.startswith("data: {")]
    assert "data: [DONE]" not in lines
    assert events[-1]["error"]["code"] == "audit_unavailable"
    finishes = [c.get("finish_reason") for e in events for c in e.get("choices", [])]
    assert not any(finishes)
    restored.start()
    assert _records(store_url, rid) == [("open", None)]


def test_client_disconnect_at_any_point_is_one_closed_record(faulty, tenant_keys, store_url):
    """Clients that go away after 0..4 events each leave exactly one record, closed as
    client_closed (or complete, if the stream had ended)."""
    _, key = tenant_keys
    _wait(lambda: httpx.get(f"{faulty.root}/readyz").status_code == 200, "never ready")
    rng = random.Random(11)
    words = " ".join(f"w{i}" for i in range(30))
    ids = []
    for _ in range(6):
        keep = rng.randrange(0, 5)
        with httpx.stream(
            "POST",
            f"{faulty.url}/chat/completions",
            json=_chat(f"slowsay: {words}", stream=True),
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as response:
            ids.append(response.headers["x-guardrails-request-id"])
            for n, _line in enumerate(response.iter_lines()):
                if n >= keep:
                    break
    for rid in ids:
        _wait(lambda rid=rid: len(_records(store_url, rid)) == 2, f"{rid} never closed")
        records = sorted(_records(store_url, rid), key=str)
        assert records[1] == ("open", None)
        assert records[0][0] == "close"
        assert records[0][1] in ("client_closed", "complete")
    assert any(sorted(_records(store_url, r), key=str)[0][1] == "client_closed" for r in ids)


@pytest.mark.parametrize("text", ["lone \ud800 surrogate", "a NUL \x00 byte"])
@pytest.mark.parametrize("stream", [False, True])
def test_unstorable_prompt_is_400_and_audited(
    faulty, tenant_keys, store_url, upstream, text, stream
):
    """A prompt the log cannot store is a 400 invalid_request_error, never sent upstream,
    and audited (as rejected) exactly once."""
    _, key = tenant_keys
    before = len(upstream.requests)
    raw = json.dumps(_chat(text, stream=stream))  # keeps the lone surrogate as \\ud800
    response = httpx.post(
        f"{faulty.url}/chat/completions",
        content=raw.encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert len(upstream.requests) == before
    assert len(_records(store_url, response.headers["x-guardrails-request-id"])) == 1


def test_probes_need_no_key(faulty):
    """/healthz, /readyz, /docs and /openapi.json answer without an API key."""
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
        assert httpx.get(f"{faulty.root}{path}").status_code == 200, path
    assert httpx.get(f"{faulty.root}/metrics").status_code == 401


def test_readyz_degraded_in_spill_mode(
    tmp_path, store_url, upstream, tenant_keys, policy_text, tcp_proxy_cls, proxy_starter
):
    """With outage: spill the worker stays ready during an outage and says degraded."""
    forwarder = tcp_proxy_cls(urlsplit(store_url).port or 5432)
    forwarder.start()
    policy = tmp_path / "spill.yaml"
    policy.write_text(_spill_policy(policy_text, tmp_path / "spill"), encoding="utf-8")
    config = ProxyConfig(
        policy=str(policy),
        upstream=upstream.url,
        upstream_key="upstream-secret",
        audit=_via(store_url, forwarder),
        keys_file=str(tenant_keys[0]),
        audit_probe_timeout_s=2.0,
    )
    server = proxy_starter(config, policy)
    try:
        _wait(lambda: httpx.get(f"{server.root}/readyz").status_code == 200, "never ready")
        forwarder.stop()
        _wait(
            lambda: httpx.get(f"{server.root}/readyz").json().get("degraded") is True,
            "never degraded",
        )
        assert httpx.get(f"{server.root}/readyz").status_code == 200
    finally:
        server.stop()
        if forwarder.running:
            forwarder.stop()
