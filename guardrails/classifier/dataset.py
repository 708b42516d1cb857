"""Labelled text as JSONL: one ``{"text": ..., "labels": [category, ...]}`` per line.

An empty ``labels`` list means benign. Extra keys (``source``) are kept on read so reports
can break results down by where an example came from; they never reach the model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from guardrails.classifier.categories import CATEGORIES
from guardrails.classifier.errors import ClassifierError


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled text. ``group`` keeps near-duplicates (one template) in one split."""

    text: str
    labels: tuple[str, ...]
    source: str = ""
    group: str = field(default="", compare=False)


def read_jsonl(path: str | Path) -> list[Example]:
    """Read labelled examples, reporting every bad line at once.

    Raises:
        ClassifierError: the file is missing, or lines are not JSON objects with a string
            ``text`` and a list ``labels`` of known categories.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClassifierError(f"cannot read labelled data {p}: {exc}") from exc
    examples: list[Example] = []
    problems: list[str] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{p}:{n}: not JSON ({exc.msg})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{p}:{n}: expected an object, got {type(obj).__name__}")
            continue
        text, labels = obj.get("text"), obj.get("labels")
        if not isinstance(text, str):
            problems.append(f"{p}:{n}: 'text' must be a string, got {type(text).__name__}")
            continue
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            problems.append(f"{p}:{n}: 'labels' must be a list of category names")
            continue
        unknown = sorted(set(labels) - set(CATEGORIES))
        if unknown:
            problems.append(f"{p}:{n}: unknown categories {unknown}; known: {list(CATEGORIES)}")
            continue
        source = obj.get("source", "")
        examples.append(Example(text, tuple(labels), str(source)))
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ClassifierError(f"{len(problems)} bad line(s) in {p}:\n  {shown}{more}")
    if not examples:
        raise ClassifierError(f"no labelled examples in {p}")
    return examples


def write_jsonl(path: str | Path, examples: Iterable[Example]) -> int:
    """Write examples as JSONL (UTF-8, one object per line); returns the count."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w", encoding="utf-8") as f:
        for ex in examples:
            obj = {"text": ex.text, "labels": list(ex.labels), "source": ex.source}
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            n += 1
    return n


def label_matrix(
    examples: Sequence[Example], categories: Sequence[str] = CATEGORIES
) -> npt.NDArray[np.float32]:
    """The examples' labels as a 0/1 matrix, one column per category."""
    index = {c: i for i, c in enumerate(categories)}
    y = np.zeros((len(examples), len(categories)), dtype=np.float32)
    for row, ex in enumerate(examples):
        for label in ex.labels:
            if label in index:
                y[row, index[label]] = 1.0
    return y


__all__ = [
    "Example",
    "label_matrix",
    "read_jsonl",
    "write_jsonl",
]
