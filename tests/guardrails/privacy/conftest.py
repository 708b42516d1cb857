"""Shared fixtures: one torch thread, small slices of the committed classifier splits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[3] / "guardrails" / "classifier" / "data"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tests share two cores with other work: one torch thread each."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_slice(path: Path, source: str, start: int, count: int) -> Path:
    """Copy ``count`` lines of a committed split into ``path``."""
    lines = (DATA_DIR / source).read_text(encoding="utf-8").splitlines()[start : start + count]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def small_train(tmp_path: Path) -> Path:
    """400 labelled training records."""
    return write_slice(tmp_path / "train.jsonl", "train.jsonl", 0, 400)


@pytest.fixture
def small_val(tmp_path: Path) -> Path:
    """200 labelled validation records."""
    return write_slice(tmp_path / "val.jsonl", "val.jsonl", 0, 200)


def read_json(path: Path) -> dict[str, object]:
    """A JSON object from a file."""
    obj = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(obj, dict)
    return obj
