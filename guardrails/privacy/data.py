"""Reading private training data, with every bad line reported as ``file:line``.

The privacy unit is one record: one labelled JSONL line for the classifier, one JSONL
``text`` line or one non-blank line of a plain-text file for the generator. DP-SGD protects
records, so a person with many records is protected only by group privacy (ε grows with the
number of their records); the report says how many records there were.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from guardrails.classifier.dataset import Example
from guardrails.privacy.errors import PrivacyError

MAX_SHOWN = 20


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _raise_problems(path: Path, problems: list[str]) -> None:
    shown = "\n  ".join(problems[:MAX_SHOWN])
    more = f"\n  ... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
    raise PrivacyError(f"{len(problems)} bad line(s) in {path}:\n  {shown}{more}")


def read_texts(path: str | Path) -> list[str]:
    """Generator training records: JSONL with a string ``text`` (``.jsonl``), else plain text.

    Plain text is one record per non-blank line. Every problem is reported at once.

    Raises:
        PrivacyError: unreadable file, a bad JSONL line (``file:line: why``), or no records.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise PrivacyError(f"{p}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise PrivacyError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise PrivacyError(f"{p}: cannot read ({exc.strerror})") from exc
    records: list[str] = []
    problems: list[str] = []
    as_jsonl = p.suffix.lower() in (".jsonl", ".ndjson")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not as_jsonl:
            records.append(line.strip())
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{p}:{n}: not JSON ({exc.msg}, column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{p}:{n}: expected an object, got {type(obj).__name__}")
            continue
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{p}:{n}: 'text' must be a non-empty string, got {text!r:.40}")
            continue
        records.append(text)
    if problems:
        _raise_problems(p, problems)
    if not records:
        raise PrivacyError(f"{p}: no training records")
    return records


def read_labelled(path: str | Path) -> list[Example]:
    """Classifier records (`guardrails.classifier.dataset.Example`), errors as `PrivacyError`.

    Raises:
        PrivacyError: the classifier's reader refused the file (its message names file:line).
    """
    from guardrails.classifier.dataset import read_jsonl
    from guardrails.classifier.errors import ClassifierError

    try:
        return read_jsonl(path)
    except ClassifierError as exc:
        raise PrivacyError(str(exc)) from exc


def default_delta(n: int) -> float:
    """δ for ``n`` records: the power of ten at or below 1/(10·n), so always well under 1/n."""
    if n <= 0:
        raise PrivacyError(f"cannot train on {n} records")
    return float(10.0 ** math.floor(math.log10(1.0 / (10 * n))))


def check_delta(delta: float | None, n: int) -> float:
    """The δ to use: ``delta`` if it is in (0, 1/n), the default when None.

    A δ of 1/n or more allows mechanisms that publish one record in the clear, which is no
    privacy at all, so it is refused rather than clamped.

    Raises:
        PrivacyError: ``delta`` is not in (0, 1/n).
    """
    if delta is None:
        return default_delta(n)
    if not 0.0 < delta < 1.0 / n:
        raise PrivacyError(
            f"delta={delta:g} must be in (0, 1/n) = (0, {1.0 / n:.3g}) for n={n} records; "
            f"omit it for the default {default_delta(n):g}"
        )
    return float(delta)


__all__ = [
    "MAX_SHOWN",
    "check_delta",
    "default_delta",
    "file_sha256",
    "read_labelled",
    "read_texts",
]
