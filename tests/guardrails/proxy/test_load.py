"""Checks run off the event loop: verdicts do not depend on load, and the proxy keeps
answering probes while heavy checks run."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

# Slow to scan under the test policy (an '@' anchor every five characters), with one
# e-mail address at the end: the verdict is a redaction, whatever the load.
HEAVY = ("x@y. " * 30_000)[:149_900] + " bob@example.com"


def _moderate(proxy: Any, key: str, text: str) -> dict[str, Any]:
    response = httpx.post(
        f"{proxy.url}/moderations",
        json={"input": text},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["results"][0]
    return result


def _chat(proxy: Any, key: str, text: str) -> tuple[int, str | None]:
    response = httpx.post(
        f"{proxy.url}/chat/completions",
        json={"model": "fake-model", "messages": [{"role": "user", "content": text}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    return response.status_code, response.headers.get("x-guardrails-action")


def _together(n: int, fn: Any, *args: Any) -> list[Any]:
    results: list[Any] = [None] * n
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        results[i] = fn(*args)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return results


def test_verdict_alone_equals_verdict_under_load(proxy, keys):
    """The same heavy prompt gets the same verdict alone and four at a time (moderations
    and chat completions)."""
    alone = _moderate(proxy, keys.tenant_a, HEAVY)
    assert alone["action"] == "redact"
    assert alone["rules"] == ["pii.email"]
    assert _together(4, _moderate, proxy, keys.tenant_a, HEAVY) == [alone] * 4
    chat_alone = _chat(proxy, keys.tenant_a, HEAVY)
    assert chat_alone == (200, "redact")
    assert _together(4, _chat, proxy, keys.tenant_a, HEAVY) == [chat_alone] * 4


def test_healthz_answers_while_heavy_checks_run(proxy, keys):
    """While four heavy checks run, /healthz keeps answering (each well under a second)."""
    done = threading.Event()
    heavy: list[Any] = []

    def load() -> None:
        heavy.extend(_together(4, _moderate, proxy, keys.tenant_a, HEAVY))
        done.set()

    threading.Thread(target=load, daemon=True).start()
    latencies: list[float] = []
    with httpx.Client() as client:
        while not done.is_set():
            started = time.perf_counter()
            assert client.get(f"{proxy.root}/healthz", timeout=30).status_code == 200
            latencies.append(time.perf_counter() - started)
    assert len(heavy) == 4
    assert len(latencies) >= 3, "the heavy checks ended before /healthz was probed"
    assert max(latencies) < 1.0, latencies
