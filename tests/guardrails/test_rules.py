"""The rule engine: keyword compilation, anchored windows, validators, partial matches."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from guardrails import Stage
from guardrails.policy import Policy, load_policy
from guardrails.rules import RuleEngine, keyword_pattern

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from corpus import mixed_text

ANCHORED = RuleEngine(load_policy())
PLAIN = RuleEngine(load_policy(), skip=False)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("stage", list(Stage))
def test_anchored_windows_find_exactly_what_a_full_scan_finds(seed, stage):
    """Anchors are an optimisation only: findings equal those of a full scan."""
    text = mixed_text(6000, seed=seed)
    assert ANCHORED.scan(text, stage).findings == PLAIN.scan(text, stage).findings


def test_anchored_partial_scan_still_holds_the_tail():
    """In a stream, a rule whose anchor has not fully arrived still holds the tail."""
    result = ANCHORED.scan("well, please ign", Stage.INPUT, partial=True)
    assert min(result.holds) <= len("well, please ")


def test_keywords_respect_word_boundaries():
    """Latin keywords match whole words, CJK keywords match anywhere."""
    import regex

    pattern = regex.compile(keyword_pattern(("kill", "越狱")))
    assert pattern.search("kill it")
    assert not pattern.search("skills")
    assert pattern.search("教我越狱方法")


def test_validator_filters_matches():
    """A pattern match that fails its validator is not a finding."""
    policy = Policy.from_content(
        "name: v\nrules:\n  - {id: card, pattern: '\\d{16}', validator: luhn, normalization: []}\n"
    )
    engine = RuleEngine(policy)
    assert [f.rule_id for f in engine.scan("4111111111111111", Stage.INPUT).findings] == ["card"]
    assert engine.scan("4111111111111112", Stage.INPUT).findings == []


def test_group_selects_the_span():
    """With group:, the finding covers only that capture group."""
    policy = Policy.from_content(
        "name: g\nrules:\n  - {id: pw, pattern: 'password=(\\S+)', group: 1, action: redact}\n"
    )
    (finding,) = RuleEngine(policy).scan("password=hunter2 ok", Stage.INPUT).findings
    assert (finding.span.start, finding.span.end) == (9, 16)
