"""Our multilingual sentences: every language has every family, and generation is sound."""

from __future__ import annotations

from guardrails.classifier.decoding import decoded_views
from guardrails.classifier.multilingual import FAMILY_LABELS, LANGUAGES, generate, read_phrases
from guardrails.classifier.sources import split_of

PHRASES = read_phrases()


def test_every_language_has_attacks_harm_and_chat():
    """Each language has injections and chat; all but English (templates.py) all six harms."""
    for lang in LANGUAGES:
        needed = {"inj", "ben"} | (
            set() if lang == "en" else {"vio", "hat", "sex", "slf", "ill", "prv"}
        )
        have = {p.family for p in PHRASES if p.lang == lang}
        assert needed <= have, (lang, needed - have)


def test_generation_is_deterministic_and_keeps_groups():
    """The same seed gives the same examples, and every example keeps its sentence's group."""
    a, b = generate(PHRASES, 13), generate(PHRASES, 13)
    assert a == b
    groups = {p.group: p for p in PHRASES}
    for g in a:
        assert g.group in groups
        assert g.labels == FAMILY_LABELS[groups[g.group].family][0]


def test_encoded_attacks_decode_back_to_their_sentence():
    """Every encoded attack example decodes (with the run-time decoder) to its sentence."""
    phrases = {p.group: p.text for p in PHRASES}
    encoded = [g for g in generate(PHRASES, 13) if g.kind.startswith("encoded") and g.labels]
    assert encoded
    for g in encoded:
        assert any(phrases[g.group] in v for v in decoded_views(g.text)), g


def test_a_sentence_lands_in_one_split():
    """All examples of one sentence share its group, so they share one split."""
    by_group: dict[str, set[str]] = {}
    for g in generate(PHRASES, 13):
        by_group.setdefault(g.group, set()).add(split_of(g.group, 13))
    assert all(len(s) == 1 for s in by_group.values())


def test_base64_of_benign_text_stays_benign():
    """Benign encoded examples exist and carry no label (decoding is not itself an attack)."""
    benign = [g for g in generate(PHRASES, 13) if g.kind.startswith("encoded") and not g.labels]
    assert benign
