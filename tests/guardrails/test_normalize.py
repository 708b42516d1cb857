"""Normalization: evasion folding and the exact map back to original offsets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails.normalize import ALL_STEPS, Step, normalize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ｉｇｎｏｒｅ", "Ignore"),  # full-width
        ("i\u200bg\u200dn\u2060ore", "ignore"),  # zero-width characters
        ("\u202eignore\u202c", "ignore"),  # bidi override
        ("іgnоrе", "ignore"),  # Cyrillic look-alikes
        ("ΙGΝΟRΕ", "IGNORE"),  # Greek capitals
        ("1gn0r3", "ignore"),  # leetspeak
        ("i g n o r e", "ignore"),  # spaced out
        ("i.g.n.o.r.e", "ignore"),
        ("𝐢𝐠𝐧𝐨𝐫𝐞", "ignore"),  # mathematical bold
        ("ignóre", "ignore"),  # diacritics
        ("e\u0301", "e"),  # combining mark composes, then folds
    ],
)
def test_evasions_fold_to_plain_text(text, expected):
    """Each evasion trick folds to the plain word rules are written for."""
    assert normalize(text).text == expected


@pytest.mark.parametrize(
    "text",
    ["2024-11-29", "4 items cost 35 dollars", "call 555 0132", "a b", "stop it!", "pay 5$ now"],
)
def test_plain_numbers_are_not_leetspeak(text):
    """Numbers that are not inside a word keep their digits."""
    assert normalize(text).text == text


def test_ascii_text_without_evasion_keeps_identity_map():
    """A view with nothing to change builds no offset arrays (the fast path)."""
    view = normalize("plain ascii text, nothing to fold")
    assert view.steps == ()
    assert view.to_original(6, 11) == (6, 11)


def test_spans_map_back_to_the_original():
    """A match on the view maps to the exact original range, invisible characters included."""
    original = "say i\u200bgn0re now"
    view = normalize(original)
    start = view.text.index("ignore")
    assert original[slice(*view.to_original(start, start + 6))] == "i\u200bgn0re"


def test_steps_can_be_chosen():
    """Only the requested steps run: without leetspeak, digits stay."""
    assert normalize("h4x0r", [Step.NFKC]).text == "h4x0r"
    assert normalize("h4x0r", ALL_STEPS).text == "haxor"


_EVASIVE = st.text(
    alphabet=st.sampled_from(list("abcio01345 .-\u200b\u200dіоＡｂ𝐢é\u0301漢字")), max_size=60
)


@settings(max_examples=300, deadline=None)
@given(_EVASIVE, st.data())
def test_offset_map_is_monotonic_and_in_bounds(text, data):
    """For any text, every view range maps inside the original, in order."""
    view = normalize(text)
    n = len(view.text)
    start = data.draw(st.integers(0, n))
    end = data.draw(st.integers(start, n))
    o_start, o_end = view.to_original(start, end)
    assert 0 <= o_start <= o_end <= len(text)
    if start < end:
        # The original range covers at least the characters it normalizes from.
        assert o_end > o_start
        assert (
            normalize(text[o_start:o_end]).text != ""
            or text[o_start:o_end].strip("\u200b\u200d") == ""
        )


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_normalize_never_fails(text):
    """Any Unicode text normalizes without error and every view character maps inside it."""
    view = normalize(text)
    for index in range(len(view.text)):
        start, end = view.to_original(index, index + 1)
        assert 0 <= start < end <= len(text)
