"""Verdict values: precedence, redaction and immutability."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails import Guard
from guardrails.decision import Action, Finding, Severity, Span, apply_redactions, merge_action

_GUARD = Guard.from_policy()


def _finding(action, start=0, end=1, *, shadow=False, replacement="[X]"):
    return Finding(
        "r", "c", action, Severity.LOW, Span(start, end), replacement=replacement, shadow=shadow
    )


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        ([], Action.ALLOW),
        ([Action.FLAG, Action.ALLOW], Action.FLAG),
        ([Action.FLAG, Action.REDACT], Action.REDACT),
        ([Action.REDACT, Action.BLOCK, Action.FLAG], Action.BLOCK),
    ],
)
def test_precedence_block_redact_flag_allow(actions, expected):
    """Findings merge with block > redact > flag > allow."""
    assert merge_action([_finding(a) for a in actions]) is expected


def test_shadow_findings_are_not_enforced():
    """A shadow block does not block."""
    assert merge_action([_finding(Action.BLOCK, shadow=True)]) is Action.ALLOW


def test_overlapping_redactions_merge():
    """Overlapping spans become one replacement, leaving no fragment behind."""
    text = "abcdefghij"
    findings = [
        _finding(Action.REDACT, 2, 6, replacement="<1>"),
        _finding(Action.REDACT, 4, 8, replacement="<2>"),
    ]
    assert apply_redactions(text, findings) == "ab<1>ij"


def test_findings_are_frozen():
    """Results are values: a finding cannot be changed after the fact."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        _finding(Action.BLOCK).action = Action.ALLOW  # type: ignore[misc]


def test_span_rejects_inverted_ranges():
    """A span whose end precedes its start is an error."""
    with pytest.raises(ValueError, match="invalid span"):
        Span(5, 2)


_PIECES = st.sampled_from(
    [
        "hello ",
        "bob@example.com",
        " ",
        "+44 20 7946 0958",
        "ｆｕｌｌ",
        "\u200b",
        "漢字",
        "x@y.io",
        ", ",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_PIECES, max_size=15))
def test_redaction_keeps_everything_outside_findings(pieces):
    """Redaction replaces exactly the finding spans: what lies between them survives intact."""
    text = "".join(pieces)
    verdict = _GUARD.check(text, "output")
    spans = sorted((f.span.start, f.span.end) for f in verdict.findings if f.span)
    kept = []
    pos = 0
    for start, end in spans:
        if start >= pos:
            kept.append(text[pos:start])
        pos = max(pos, end)
    kept.append(text[pos:])
    rest = verdict.text
    for piece in kept:  # every kept piece appears, in order, in the redacted text
        index = rest.find(piece)
        assert index >= 0, (piece, verdict.text)
        rest = rest[index + len(piece) :]
    # Redaction is complete: the redacted text has nothing left to redact.
    assert _GUARD.check(verdict.text, "output").findings == ()
