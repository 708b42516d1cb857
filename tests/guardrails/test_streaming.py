"""Streaming: nothing is released before it is checked, wherever the chunks split."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails import Guard, Stage
from guardrails.policy import Policy

POLICY = Policy.from_content(
    r"""
name: stream-test
settings: {stream_holdback_chars: 0}
rules:
  - id: forbidden
    keywords: [launch code]
    applies_to: [output]
    action: block
  - id: email
    pattern: '[\w.+-]+@[\w-]+(?:\.[\w-]+)+'
    normalization: [nfkc]
    applies_to: [output]
    action: redact
    replacement: "[EMAIL]"
""",
    path="stream-test.yaml",
)
GUARD = Guard(POLICY)


def _run(chunks):
    checker = GUARD.stream_checker(Stage.OUTPUT)
    released = []
    for chunk in chunks:
        step = checker.feed(chunk)
        released.append(step.text)
        if step.blocked:
            return "".join(released), checker
    released.append(checker.finish().text)
    return "".join(released), checker


def _splits(text, cuts):
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


BLOCKED = "The answer is: the Launch  Code is 0000, keep it safe."


@pytest.mark.parametrize("cut", range(1, len(BLOCKED)))
def test_block_split_at_every_boundary_is_never_released(cut):
    """Split anywhere, the blocked phrase never reaches the caller and the stream stops."""
    released, checker = _run(_splits(BLOCKED, [cut]))
    assert checker.verdict().blocked
    assert "launch" not in released.lower()
    assert "0000" not in released
    assert checker.verdict().rule_ids == ("forbidden",)


def test_block_split_at_every_pair_of_boundaries():
    """Three chunks, every pair of cut points: the phrase is never released."""
    text = "ok then: launch code 42"
    for a, b in itertools.combinations(range(1, len(text)), 2):
        released, checker = _run(_splits(text, [a, b]))
        assert checker.verdict().blocked, (a, b)
        assert "launch" not in released.lower(), (a, b)


REDACT = "Write to someone.else@example.com or to a@b.io today."


@pytest.mark.parametrize("cut", range(1, len(REDACT)))
def test_redaction_split_at_every_boundary_matches_whole_text(cut):
    """A stream split anywhere releases exactly what the whole-text check returns."""
    released, _ = _run(_splits(REDACT, [cut]))
    assert released == GUARD.check(REDACT, Stage.OUTPUT).text
    assert "@" not in released


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_chunking_is_equivalent_to_whole_text(data):
    """For random texts and random chunkings, streaming equals the whole-text verdict."""
    words = st.sampled_from(
        ["hello", " ", "x@y.com", "launch", "code", "launch code", ",", "é", "\u200b", "zz@q.org "]
    )
    text = "".join(data.draw(st.lists(words, max_size=12)))
    cuts = (
        sorted(set(data.draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=6))))
        if len(text) > 1
        else []
    )
    released, checker = _run(_splits(text, cuts))
    whole = GUARD.check(text, Stage.OUTPUT)
    assert checker.verdict().blocked == whole.blocked
    if whole.blocked:
        # What was released before the block is itself clean.
        assert not GUARD.check(released, Stage.OUTPUT).blocked
    else:
        assert released == whole.text


def test_released_text_is_recorded():
    """After a block, the checker knows exactly how much of the raw output was released."""
    released, checker = _run(["safe prefix text ", "and the launch", " code follows"])
    assert checker.released_text == released
    assert checker.raw_text.startswith(released)
    assert checker.released_raw_chars == len(released)


def test_holdback_window_delays_release():
    """With a hold-back window, the last N characters wait for the next chunk."""
    guard = Guard(
        Policy.from_content("name: h\nsettings: {stream_holdback_chars: 10}\nrules: []\n")
    )
    checker = guard.stream_checker()
    assert checker.feed("0123456789abcdef").text == "012345"
    assert checker.finish().text == "6789abcdef"


def test_feeding_after_block_is_an_error():
    """A blocked stream cannot be fed more text."""
    checker = GUARD.stream_checker()
    # "launch code!" alone would still be tentative: "!" followed by a letter is leetspeak.
    assert checker.feed("launch code. ").blocked
    with pytest.raises(RuntimeError, match="ended"):
        checker.feed("more")


class _KeywordScorer:
    """A stand-in classifier: 'violence' is 1.0 when the text mentions a bomb."""

    def __init__(self):
        self.calls = 0
        self.thresholds = {"violence": 0.5, "sexual": 0.5}

    def score(self, texts):
        self.calls += 1
        return [
            {"violence": 1.0 if "bomb" in t else 0.0, "sexual": 1.0 if "kiss" in t else 0.0}
            for t in texts
        ]


def _classifier_guard(action):
    policy = Policy.from_content(
        "name: c\nsettings: {stream_holdback_chars: 0}\nrules:\n"
        f"  - {{id: clf.violence, classifier: {{category: violence}}, action: {action}}}\n"
        "  - {id: clf.sexual, classifier: {category: sexual}, action: flag}\n"
    )
    return Guard(policy, classifier=_KeywordScorer())


def test_blocking_classifier_rule_sees_stream_text_before_release():
    """With a blocking classifier rule, text is classified before release: none leaks."""
    guard = _classifier_guard("block")
    checker = guard.stream_checker()
    released = []
    for chunk in ["Here is how ", "to build a bo", "mb at home: step one"]:
        step = checker.feed(chunk)
        released.append(step.text)
        if step.blocked:
            break
    assert checker.verdict().blocked
    assert checker.verdict().rule_ids == ("clf.violence",)
    assert "bomb" not in "".join(released)


def test_flag_classifier_rule_is_recorded_once_at_the_end():
    """A flag-only classifier rule does not hold the stream; its finding is recorded once."""
    guard = _classifier_guard("flag")
    checker = guard.stream_checker()
    for chunk in ["a kiss ", "and a bomb ", "story"]:
        assert not checker.feed(chunk).blocked
    checker.finish()
    verdict = checker.verdict()
    assert verdict.action.value == "flag"
    assert sorted(f.rule_id for f in verdict.findings) == ["clf.sexual", "clf.violence"]
