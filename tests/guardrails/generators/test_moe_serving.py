"""The bundled MoE generator served by the real proxy (uvicorn) to the official client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
import uvicorn

from guardrails.generators import Completion
from guardrails.generators.moe import bundled_available, load_bundled
from guardrails.generators.moe.generator import MoEGenerator
from guardrails.proxy import ProxyConfig, create_app
from guardrails.proxy.keys import add_key

pytestmark = pytest.mark.skipif(not bundled_available(), reason="bundled checkpoint missing")

POLICY = """\
name: moe-serving-test
version: "1"
settings:
  classifier:
    enabled: false
rules:
  - id: secret.launch_code
    category: secret
    keywords: ["launch code"]
    action: block
"""

MAX_TOKENS = 4


@pytest.fixture(scope="module")
def generator() -> MoEGenerator:
    """The bundled generator, loaded once for the module."""
    return load_bundled()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``guardrails serve --generator moe`` in-process under uvicorn: (base URL, API key)."""
    workdir = tmp_path_factory.mktemp("moe-serving")
    policy = workdir / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    key, _ = add_key(workdir / "keys.json", tenant="t")
    config = ProxyConfig(policy=str(policy), generator="moe", keys_file=str(workdir / "keys.json"))
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="moe-proxy-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # a generous bound on start-up, not a measurement
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the proxy did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1", key
    server.should_exit = True
    thread.join(30)


def _check_usage(usage: Any, finish_reason: str | None) -> None:
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert 0 <= usage.completion_tokens <= MAX_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # no stop sequences are sent, so the text ends early only at the end-of-text token
    assert (finish_reason == "length") == (usage.completion_tokens == MAX_TOKENS)
    assert finish_reason in ("stop", "length")


def _one_request(proxy: tuple[str, str], i: int) -> str | None:
    """One request of a mix (chat/completions × stream/plain); returns its finish reason."""
    url, key = proxy
    with openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120) as client:
        chat, stream = i % 2 == 0, (i // 2) % 2 == 0
        prompt = f"def function_{i}(x):"
        if chat and not stream:
            reply = client.chat.completions.create(
                model="guardrails-moe-pydoc",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=MAX_TOKENS,
                temperature=0,
            )
            _check_usage(reply.usage, reply.choices[0].finish_reason)
            return reply.choices[0].finish_reason
        if not chat and not stream:
            done = client.completions.create(
                model="guardrails-moe-pydoc", prompt=prompt, max_tokens=MAX_TOKENS, temperature=0
            )
            _check_usage(done.usage, done.choices[0].finish_reason)
            return done.choices[0].finish_reason
        events: list[Any] = list(
            client.chat.completions.create(
                model="guardrails-moe-pydoc",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=MAX_TOKENS,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            if chat
            else client.completions.create(
                model="guardrails-moe-pydoc",
                prompt=prompt,
                max_tokens=MAX_TOKENS,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        finishes = [e.choices[0].finish_reason for e in events if e.choices]
        finish = [f for f in finishes if f][-1]
        _check_usage(events[-1].usage, finish)
        return finish


def test_stream_resumed_on_other_threads(generator: MoEGenerator) -> None:
    """A stream pulled one chunk per thread (as a server's thread pool does) keeps working."""
    pools = [ThreadPoolExecutor(1) for _ in range(3)]
    try:
        for _ in range(3):
            chunks = generator.stream("def parse(text):", max_tokens=6, temperature=0)
            pieces, done = [], object()
            while (piece := pools[len(pieces) % 3].submit(next, chunks, done).result()) is not done:
                pieces.append(piece)
            assert chunks.finish_reason in ("stop", "length")
            assert "".join(pieces) == generator.generate(
                "def parse(text):", max_tokens=6, temperature=0
            )
    finally:
        for pool in pools:
            pool.shutdown()


def test_completion_reports_usage_and_length(generator: MoEGenerator) -> None:
    """`generate` returns a Completion: usage counts the prompt's tokens; the budget → length."""
    text = generator.generate("import os", max_tokens=3, temperature=0, stop=[])
    assert isinstance(text, Completion)
    assert text.prompt_tokens == len(generator.tokenizer.encode("import os"))
    assert text.usage["total_tokens"] == text.prompt_tokens + text.completion_tokens
    assert (text.finish_reason == "length") == (text.completion_tokens == 3)


def test_stop_sequence_finishes_with_stop(generator: MoEGenerator) -> None:
    """A stop sequence that appears ends the completion with finish_reason "stop"."""
    full = generator.generate("def f(x):", max_tokens=12, temperature=0)
    stop = full.strip()[:1]
    assert stop, "the bundled model produced only whitespace"
    cut = generator.generate("def f(x):", max_tokens=12, temperature=0, stop=[stop])
    assert isinstance(cut, Completion)
    assert cut.finish_reason == "stop"
    assert stop not in cut


def test_fifty_sequential_requests(proxy: tuple[str, str]) -> None:
    """50 requests in a row (chat and completions, streamed and not) all answer with usage."""
    finishes = [_one_request(proxy, i) for i in range(50)]
    assert "length" in finishes


def test_eight_concurrent_requests(proxy: tuple[str, str]) -> None:
    """8 requests at once (streamed and not) all answer with usage; none fails with 502."""
    with ThreadPoolExecutor(8) as pool:
        finishes = list(pool.map(lambda i: _one_request(proxy, i), range(8)))
    assert len(finishes) == 8
    assert "length" in finishes
