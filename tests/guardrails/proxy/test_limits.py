"""Rate limits per key and per tenant (429 + Retry-After in the OpenAI shape), shared by
proxy replicas through Redis, and the largest prompt per tenant."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from guardrails.proxy import ProxyConfig
from guardrails.proxy.keys import add_key
from guardrails.proxy.limits import WINDOW_S
from guardrails.proxy.testing import FakeUpstream

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def start(
    tmp_path: Any,
    keys: Any,
    upstream: FakeUpstream,
    policy_text: str,
    proxy_starter: Any,
) -> Iterator[Callable[..., Any]]:
    """Start proxies (replicas) with the given limits; all stopped after the test."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text, encoding="utf-8")
    servers: list[Any] = []

    def run(limits: dict[str, Any], *, redis_prefix: str | None = None) -> Any:
        config = ProxyConfig(
            policy=str(policy),
            upstream=upstream.url,
            upstream_key="upstream-secret",
            keys_file=str(keys.file),
            limits=limits,
            redis_url=REDIS_URL if redis_prefix else None,
            redis_prefix=redis_prefix or "unused",
        )
        server = proxy_starter(config, policy)
        servers.append(server)
        return server

    yield run
    for server in servers:
        server.stop()


def _fresh_window() -> None:
    if time.time() % WINDOW_S > WINDOW_S - 15:
        time.sleep(WINDOW_S - time.time() % WINDOW_S + 0.1)


@pytest.fixture(autouse=True)
def fresh_window() -> None:
    """Start well inside a one-minute counting window, so no test straddles two."""
    _fresh_window()


def _chat(server: Any, key: str, text: str = "say: hi") -> httpx.Response:
    return httpx.post(
        f"{server.url}/chat/completions",
        json={"model": "fake-model", "messages": [{"role": "user", "content": text}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_key_rpm_shared_by_replicas_through_redis(start, keys):
    """Two replicas on one Redis share a key's requests-per-minute budget."""
    prefix = f"test-{uuid.uuid4().hex}"
    a = start({"*": {"key_rpm": 3}}, redis_prefix=prefix)
    b = start({"*": {"key_rpm": 3}}, redis_prefix=prefix)
    statuses = [_chat(s, keys.tenant_a).status_code for s in (a, b, a)]
    assert statuses == [200, 200, 200]
    refused = _chat(b, keys.tenant_a)
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 60
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "rate_limit_exceeded"
    assert _chat(a, keys.tenant_b).status_code == 200  # another key is not affected
    with (
        openai.OpenAI(base_url=a.url, api_key=keys.tenant_a, max_retries=0) as client,
        pytest.raises(openai.RateLimitError),
    ):
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "say: hi"}]
        )


def test_tenant_rpm_counts_every_key_of_the_tenant(start, keys):
    """A tenant's budget is shared by all its keys, across replicas."""
    second, _ = add_key(keys.file, tenant="tenant-a")
    prefix = f"test-{uuid.uuid4().hex}"
    a = start({"tenant-a": {"tenant_rpm": 2}}, redis_prefix=prefix)
    b = start({"tenant-a": {"tenant_rpm": 2}}, redis_prefix=prefix)
    deadline_ok = [_chat(a, keys.tenant_a).status_code]
    deadline = time.monotonic() + 30
    while (status := _chat(b, second).status_code) == 401:  # until the watcher reloads
        assert time.monotonic() < deadline, "the new key was never accepted"
        time.sleep(0.05)
    deadline_ok.append(status)
    assert deadline_ok == [200, 200]
    assert _chat(a, second).status_code == 429
    assert _chat(b, keys.tenant_a).status_code == 429
    assert _chat(a, keys.tenant_b).status_code == 200  # tenant B has no limit


def test_tokens_per_minute(start, keys):
    """A key over its tokens-per-minute budget is refused from its next request on."""
    a = start({"*": {"key_tpm": 50}})
    assert _chat(a, keys.tenant_a, "say: " + "x" * 400).status_code == 200
    refused = _chat(a, keys.tenant_a)
    assert refused.status_code == 429
    assert "tokens" in refused.json()["error"]["message"]


def test_max_prompt_size_per_tenant(start, keys):
    """A tenant's prompt size limit is a 400 for that tenant only."""
    a = start({"tenant-a": {"max_prompt_chars": 20}})
    refused = _chat(a, keys.tenant_a, "say: " + "y" * 30)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "prompt_too_large"
    assert _chat(a, keys.tenant_b, "say: " + "y" * 30).status_code == 200


def test_in_memory_limits_without_redis(start, keys):
    """Without Redis a worker still enforces the limits on its own."""
    a = start({"*": {"key_rpm": 1}})
    assert _chat(a, keys.tenant_a).status_code == 200
    assert _chat(a, keys.tenant_a).status_code == 429


def test_bad_limits_are_a_config_error(tmp_path, keys):
    """Unknown fields and non-positive values are refused, naming the tenant and field."""
    from guardrails.proxy.config import ProxyConfigError

    for limits, needle in (
        ({"*": {"rpm": 1}}, "unknown field"),
        ({"acme": {"key_rpm": 0}}, "limits['acme'].key_rpm"),
    ):
        with pytest.raises(ProxyConfigError, match=needle.replace("[", r"\[").replace(".", r"\.")):
            ProxyConfig(upstream="http://x", keys_file=str(keys.file), limits=limits)
