"""The bundled checkpoint: present, small, documented, and writing readable text."""

from __future__ import annotations

import re

import pytest

from guardrails.generators.moe import (
    BUNDLED_DIR,
    BUNDLED_NAME,
    bundled_available,
    load_bundled,
)


def test_bundled_checkpoint_is_installed_and_small():
    """All checkpoint files ship in the package and weigh at most 25 MB together."""
    assert bundled_available()
    total = sum(f.stat().st_size for f in BUNDLED_DIR.iterdir() if f.is_file())
    assert total <= 25 * 2**20
    for png in ("loss_curve.png", "expert_load.png"):
        assert 1000 < (BUNDLED_DIR / png).stat().st_size < 200_000


def test_model_card_states_source_licence_and_figures():
    """The model card names the corpus, its PSF licence and the held-out perplexity."""
    card = (BUNDLED_DIR / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "pydoc_data/topics.py" in card
    assert "PSF License" in card
    assert re.search(r"perplexity \d+\.\d", card)


@pytest.mark.parametrize("quantize", [False, True])
def test_bundled_model_writes_mostly_real_words(quantize):
    """A greedy continuation is made mostly of dictionary-like words, fp32 and INT8."""
    gen = load_bundled(quantize=quantize)
    assert gen.name == BUNDLED_NAME
    text = gen.generate("The for statement is used to", temperature=0.0, max_tokens=40)
    words = re.findall(r"[A-Za-z]+", text)
    assert len(words) >= 10, text
    common = {"the", "a", "is", "of", "to", "in", "and", "be", "an", "or", "if", "for", "it"}
    assert sum(w.lower() in common for w in words) >= 3, text
    assert sum(len(w) <= 14 for w in words) / len(words) > 0.9, text
