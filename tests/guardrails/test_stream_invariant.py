"""A stream releases exactly what the whole-text check returns, however the text is chunked:
for every inline test of every shipped pack (without classifier rules), padded, and cut
into random chunks, one-character chunks included."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shipped_rules import PACKS, SEEDS, pack

from guardrails import Guard, Stage
from guardrails.decision import Action, apply_redactions
from guardrails.policy import Policy

GUARDS = {
    name: Guard(pack(name))
    for name in PACKS
    if not any(rule.classifier is not None for rule in pack(name).rules)
}
STREAM_SEEDS = [seed for seed in SEEDS if seed.pack in GUARDS]


def stream(guard: Guard, stage: Stage, chunks: list[str]) -> tuple[str, int, bool]:
    """Feed ``chunks``; return what was released, how many raw characters, and blocked."""
    checker = guard.stream_checker(stage)
    released: list[str] = []
    for chunk in chunks:
        step = checker.feed(chunk)
        released.append(step.text)
        if step.blocked:
            return "".join(released), checker.released_raw_chars, True
    step = checker.finish()
    released.append(step.text)
    return "".join(released), checker.released_raw_chars, step.blocked


def assert_equivalent(guard: Guard, stage: Stage, text: str, chunks: list[str]) -> None:
    """The stream of ``chunks`` agrees with the whole-text verdict on ``text``."""
    assert "".join(chunks) == text
    whole = guard.check(text, stage)
    released, raw_chars, blocked = stream(guard, stage, chunks)
    assert blocked == whole.blocked
    if not whole.blocked:
        assert released == whole.text
        return
    starts = [
        f.span.start if f.span is not None else 0
        for f in whole.findings
        if f.action is Action.BLOCK and not f.shadow
    ]
    # Nothing past the start of the blocked span, and what came out is the whole-text
    # redaction of that prefix.
    assert raw_chars <= min(starts)
    prefix = [f for f in whole.findings if f.span is not None and f.span.end <= raw_chars]
    assert released == apply_redactions(text[:raw_chars], prefix)


@st.composite
def _chunked(draw: st.DrawFn, text: str) -> list[str]:
    if not text:
        return []
    if draw(st.integers(0, 3)) == 0:
        return list(text)  # one character at a time
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=12))))
    bounds = [0, *[c for c in cuts if 0 < c < len(text)], len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


_PAD = st.sampled_from(["", " ", "IBAN ", "Note: ", "x", "\n\n", "ok 12 ", "D", "a@", "+1 "])


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_streams_release_exactly_the_whole_text_verdict(data: st.DataObject) -> None:
    """Random seeds, padding and chunkings: the released text equals the whole-text verdict's
    text, and a blocked stream stops before the blocked span."""
    seed = data.draw(st.sampled_from(STREAM_SEEDS))
    guard = GUARDS[seed.pack]
    text = data.draw(_PAD) + seed.text + data.draw(_PAD)
    if data.draw(st.booleans()):
        text += data.draw(st.sampled_from(STREAM_SEEDS)).text
    assert_equivalent(guard, seed.stage, text, data.draw(_chunked(text)))


@pytest.mark.parametrize("seed", STREAM_SEEDS, ids=lambda s: f"{s.pack}:{s.text[:30]}")
def test_every_seed_one_character_at_a_time(seed):
    """Every inline test, fed one character at a time, agrees with the whole-text check."""
    assert_equivalent(GUARDS[seed.pack], seed.stage, seed.text, list(seed.text))


IBAN_GUARD = Guard(
    Policy.from_content(
        "name: iban\nsettings: {stream_holdback_chars: 0}\nrules:\n"
        "  - id: pii.iban\n"
        "    pattern: '(?<![A-Za-z0-9])[A-Z]{2}\\d{2}(?: ?[A-Z0-9]{4}){2,7}"
        "(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])'\n"
        "    validator: iban\n    normalization: [nfkc, strip_invisible]\n"
        "    action: redact\n    replacement: '[IBAN]'\n"
    )
)


@pytest.mark.parametrize("holdback", [0, 24])
def test_a_rejected_match_that_can_still_grow_holds_the_text(holdback):
    """The reported leak: 'IBAN D[IBAN]'. A match the validator rejects while it is still
    short ('DE89 3704 0044 0532 ') must not release its start."""
    text = "IBAN DE89 3704 0044 0532 0130 00"
    guard = IBAN_GUARD if holdback == 0 else Guard(pack("pii"))
    whole = guard.check(text, Stage.OUTPUT)
    assert whole.text == "IBAN [IBAN]"
    for cut in range(1, len(text)):
        assert_equivalent(guard, Stage.OUTPUT, text, [text[:cut], text[cut:]])
    assert_equivalent(guard, Stage.OUTPUT, text, list(text))
