"""Pure-Python parts: the public surface, features, metrics, JSONL, sources, micro-batching."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import guardrails.classifier as pkg
from guardrails.classifier import CATEGORIES, ClassifierError
from guardrails.classifier.calibration import average_precision, calibrate, category_metrics
from guardrails.classifier.dataset import Example, read_jsonl, write_jsonl
from guardrails.classifier.features import batch_ngram_ids, ngram_ids, normalize, windows
from guardrails.classifier.microbatch import MicroBatcher


def test_public_api_is_pinned():
    """The package exports exactly the agreed names, in ruff's isort-style order."""
    assert pkg.__all__ == [
        "CATEGORIES",
        "TAXONOMY",
        "ClassifierError",
        "load_classifier",
        "preload",
    ]


def test_categories_are_the_contract():
    """The category tuple the guard pipeline codes against is unchanged, and all are mapped."""
    assert CATEGORIES == (
        "prompt_injection",
        "violence",
        "hate",
        "sexual",
        "self_harm",
        "illicit",
        "privacy",
    )
    assert set(pkg.TAXONOMY) == set(CATEGORIES)


def test_classifier_error_is_a_runtime_error():
    """ClassifierError is catchable as RuntimeError and as the library's base error."""
    from guardrails.exceptions import GuardrailsError

    assert issubclass(ClassifierError, RuntimeError)
    assert issubclass(ClassifierError, GuardrailsError)


def test_import_does_not_import_torch():
    """Importing guardrails.classifier (and its data modules) leaves torch unloaded."""
    code = (
        "import sys, guardrails, guardrails.classifier, guardrails.classifier.sources, "
        "guardrails.classifier.cards, guardrails.classifier.calibration; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_normalize_folds_width_case_and_space():
    """Full-width letters, case and runs of whitespace fold to one view."""
    assert normalize("\uff29\uff27\uff2e\uff2f\uff32\uff25   All\n\tRULES") == "ignore all rules"


def test_ngram_ids_are_deterministic_and_in_range():
    """Hashing is stable across calls and every id indexes the table."""
    a = ngram_ids("Kill the process", buckets=1000)
    b = ngram_ids("kill  the PROCESS", buckets=1000)
    assert np.array_equal(a, b)
    assert a.min() >= 0
    assert a.max() < 1000
    assert not np.array_equal(a, ngram_ids("kill the person", buckets=1000))


def test_batch_offsets_point_at_each_text():
    """Offsets start each text's bag where the previous one ended."""
    ids, offsets = batch_ngram_ids(["ab", "hello world", ""], buckets=50)
    assert offsets.tolist()[0] == 0
    assert len(ids) == len(ngram_ids("ab", buckets=50)) + len(
        ngram_ids("hello world", buckets=50)
    ) + len(ngram_ids("", buckets=50))


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=3000), st.integers(10, 400), st.integers(1, 400))
def test_windows_cover_the_whole_text(text, size, stride):
    """Every character is in some window and no window is longer than the size."""
    stride = min(stride, size)
    ws = windows(text, size=size, stride=stride)
    assert all(len(w) <= size for w in ws)
    if len(text) > size:
        starts = [*range(0, len(text) - size, stride), len(text) - size]
        covered = set()
        for s in starts:
            covered.update(range(s, s + size))
        assert covered >= set(range(len(text)))
        assert ws[-1] == text[-size:]
    else:
        assert ws == [text]


def test_average_precision_matches_hand_computation():
    """AP of a known ranking equals the step-wise hand value (and scikit-learn's)."""
    y = [1, 0, 1, 0]
    s = [0.9, 0.8, 0.7, 0.1]
    # hits at ranks 1 and 3: (1/1 + 2/3) / 2
    assert average_precision(y, s) == pytest.approx((1 + 2 / 3) / 2)


def test_calibrate_reaches_the_precision_target_on_its_data():
    """The calibrated threshold meets the precision target on the data it was fitted to."""
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    s = np.clip(y * 0.5 + rng.random(500) * 0.6, 0, 1)
    t = calibrate(y, s, precision_target=0.9)
    m = category_metrics("x", y, s, t.value)
    assert t.method.startswith("precision")
    assert m.precision >= 0.9
    assert calibrate(np.zeros(5), np.ones(5), precision_target=0.9).method == "default_no_positives"


def test_jsonl_round_trip(tmp_path):
    """Written examples read back identically."""
    exs = [Example("hi", ()), Example("kill him", ("violence",), "s")]
    write_jsonl(tmp_path / "a.jsonl", exs)
    assert read_jsonl(tmp_path / "a.jsonl") == exs


def test_read_jsonl_reports_every_bad_line(tmp_path):
    """Each malformed line is named with its line number in one error."""
    p = tmp_path / "bad.jsonl"
    p.write_text(
        "\n".join(
            [
                json.dumps({"text": "ok", "labels": []}),
                "{not json",
                json.dumps({"text": 3, "labels": []}),
                json.dumps({"text": "x", "labels": ["weapons"]}),
            ]
        ),
        encoding="utf-8",
    )
    with pytest.raises(ClassifierError) as info:
        read_jsonl(p)
    msg = str(info.value)
    assert "3 bad line(s)" in msg
    assert ":2:" in msg
    assert ":3:" in msg
    assert ":4:" in msg
    assert "weapons" in msg


def test_microbatcher_gathers_concurrent_callers():
    """32 concurrent callers are served by far fewer batch calls, each with its own results."""
    calls: list[int] = []

    def batch(texts: list[str]) -> list[str]:
        calls.append(len(texts))
        return [t.upper() for t in texts]

    async def main() -> list[list[str]]:
        mb = MicroBatcher(batch, max_batch=64, max_wait_s=0.02)
        return await asyncio.gather(*(mb.submit([f"t{i}", f"u{i}"]) for i in range(32)))

    results = asyncio.run(main())
    assert results[5] == ["T5", "U5"]
    assert sum(calls) == 64
    assert len(calls) <= 4


def test_microbatcher_failure_reaches_every_caller():
    """When the batch function raises, every caller of that batch gets the exception."""

    def batch(texts: list[str]) -> list[str]:
        raise ValueError("boom")

    async def main() -> list[object]:
        mb = MicroBatcher(batch, max_batch=8, max_wait_s=0.01)
        return await asyncio.gather(*(mb.submit(["a"]) for _ in range(3)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, ValueError) for r in results)
