"""Data validation (file:line errors) and the δ < 1/n rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrails.privacy import PrivacyError, check_delta, default_delta, read_labelled, read_texts


def test_bad_labelled_line_names_file_and_line(tmp_path: Path) -> None:
    """Every bad labelled line is reported with its file and line number."""
    p = tmp_path / "private.jsonl"
    p.write_text('{"text": "ok", "labels": []}\n{"text": 3, "labels": []}\nnot json\n')
    with pytest.raises(PrivacyError) as info:
        read_labelled(p)
    assert f"{p}:2:" in str(info.value)
    assert f"{p}:3:" in str(info.value)


def test_bad_text_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    """Generator JSONL without a string 'text' is refused at that line."""
    p = tmp_path / "notes.jsonl"
    p.write_text('{"text": "a note"}\n\n{"body": "x"}\n')
    with pytest.raises(PrivacyError, match=rf"{p}:3: 'text' must be a non-empty string"):
        read_texts(p)


def test_plain_text_is_one_record_per_line(tmp_path: Path) -> None:
    """A .txt file yields its non-blank lines as records."""
    p = tmp_path / "notes.txt"
    p.write_text("first\n\n  second  \n")
    assert read_texts(p) == ["first", "second"]


@pytest.mark.parametrize("n", [1, 7, 10, 999, 1000, 123_456])
def test_default_delta_is_below_one_over_n(n: int) -> None:
    """The default δ is strictly below 1/n."""
    assert 0 < default_delta(n) < 1 / n


@pytest.mark.parametrize("delta", [1 / 100, 0.5, 0.0, -1e-5])
def test_delta_not_below_one_over_n_is_refused(delta: float) -> None:
    """δ ≥ 1/n (or ≤ 0) is refused with the bound in the message."""
    with pytest.raises(PrivacyError, match=r"must be in \(0, 1/n\)"):
        check_delta(delta, 100)


def test_valid_delta_is_kept() -> None:
    """A δ below 1/n is used as given."""
    assert check_delta(1e-3, 100) == 1e-3
