"""Dynamic batching of concurrent requests."""

from __future__ import annotations

import threading

import pytest

from guardrails.generators.moe import GenerationError, load_pretrained
from guardrails.generators.moe.batching import BatchingEngine

PROMPTS = [
    "The guard",
    "A rule may block",
    "Streaming output is",
    "the audit log",
    "every prompt and",
    "redact or flag",
    "chunk by chunk",
    "A stop sequence",
]


def test_concurrent_streams_match_sequential_and_share_batches(tiny_checkpoint):
    """8 threads streaming at once get the same greedy text as one at a time, in shared steps.

    The engine's first forward is held until all 8 requests are queued, so they share steps
    however the threads are scheduled.
    """
    plain = load_pretrained(tiny_checkpoint)
    expected = [plain.generate(p, temperature=0.0, max_tokens=20) for p in PROMPTS]
    batched = load_pretrained(tiny_checkpoint)
    batched.enable_batching(max_batch=8)
    engine = batched._engine
    submitted = threading.Condition()
    count = [0]
    release = threading.Event()
    submit = engine.submit

    def counting_submit(ids, params):
        tokens = submit(ids, params)
        with submitted:
            count[0] += 1
            submitted.notify_all()
        return tokens

    engine.submit = counting_submit
    hook = batched.model.register_forward_pre_hook(lambda module, args: release.wait(120) and None)
    results: dict[int, str] = {}

    def worker(i: int) -> None:
        results[i] = "".join(batched.stream(PROMPTS[i], temperature=0.0, max_tokens=20))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    with submitted:
        assert submitted.wait_for(lambda: count[0] == len(PROMPTS), timeout=120)
    release.set()
    for t in threads:
        t.join(timeout=120)
    hook.remove()
    batched.close()
    assert [results.get(i) for i in range(len(PROMPTS))] == expected
    # the engine took at most max_batch rows while waiting, then admitted the rest together
    assert engine.max_rows_seen == len(PROMPTS)


def test_abandoned_stream_frees_its_row(tiny_checkpoint):
    """Closing a stream early lets the engine drop the row and keep serving others."""
    gen = load_pretrained(tiny_checkpoint)
    gen.enable_batching(max_batch=2)
    first = gen.stream("The guard", temperature=0.0, max_tokens=40)
    next(iter(first), None)
    first.close()
    text = gen.generate("A rule may block", temperature=0.0, max_tokens=8)
    gen.close()
    assert isinstance(text, str)
    assert text


def test_closed_engine_refuses_work(tiny_checkpoint):
    """Submitting to a closed engine raises GenerationError instead of hanging."""
    gen = load_pretrained(tiny_checkpoint)
    engine = BatchingEngine(gen.model, max_batch=2)
    engine.close()
    with pytest.raises(GenerationError, match="closed"):
        engine.submit([1, 2, 3], gen.defaults)
