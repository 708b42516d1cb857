"""Shared fixtures: the shipped fast classifier (loaded once) and the committed splits."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[3] / "guardrails" / "classifier" / "data"


@pytest.fixture(scope="session")
def fast_clf():
    """The shipped fast classifier, one torch thread."""
    from guardrails.classifier import load_classifier

    return load_classifier("fast", num_threads=1)


@pytest.fixture(scope="session")
def test_split():
    """The committed held-out test split."""
    from guardrails.classifier.dataset import read_jsonl

    return read_jsonl(DATA_DIR / "test.jsonl")
