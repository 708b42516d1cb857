"""Canary exposure ("The Secret Sharer"): DP LoRA fine-tuning of the bundled generator
exposes repeated secret canaries clearly less than the same non-private fine-tune.

Reduced size (about 60 s on one thread): 60 short records, 2 canaries repeated 20 times
each, 200 candidates per canary, r=8 adapters on q_proj/v_proj, the same steps for both runs.
"""

from __future__ import annotations

import random

import pytest
from conftest import DATA_DIR

pytestmark = [
    pytest.mark.slow,
]


def test_dp_brings_canary_exposure_down() -> None:
    """Mean exposure: non-private ≥ 4 bits and DP (ε=1) at least 2.5 bits lower."""
    import json

    from guardrails.generators.moe import BUNDLED_DIR, bundled_available
    from guardrails.generators.moe.loading import TOKENIZER_FILE, load_model
    from guardrails.generators.moe.tokenizer import BPETokenizer
    from guardrails.privacy.canary import exposure, insert_canaries, make_secrets
    from guardrails.privacy.engine import DPSettings
    from guardrails.privacy.generator import LoRAConfig, train_lora

    if not bundled_available():
        pytest.skip("bundled generator checkpoint not installed")
    eos = json.loads((BUNDLED_DIR / "config.json").read_text())["eos_token_id"]
    tok = BPETokenizer.from_file(BUNDLED_DIR / TOKENIZER_FILE, eos_token_id=eos)
    lines = (DATA_DIR / "train.jsonl").read_text(encoding="utf-8").splitlines()[:60]
    base = [json.loads(line)["text"][:80] for line in lines]
    rng = random.Random(7)
    secrets = make_secrets(2, digits=6, rng=rng)
    records = insert_canaries(base, secrets, repeats=20, rng=rng)
    mean: dict[bool, float] = {}
    for dp in (False, True):
        settings = DPSettings(
            dp=dp,
            target_epsilon=1.0,
            delta=1e-3,
            epochs=12,
            batch_size=20,
            max_physical_batch_size=20,
            lr=2e-2,
            fixed_seed=3,
        )
        model, result = train_lora(
            load_model(BUNDLED_DIR),
            records,
            tok,
            settings=settings,
            lora=LoRAConfig(r=8, alpha=16, seq_len=24),
        )
        if dp:
            assert result.epsilon is not None
            assert result.epsilon <= 1.0
        found = [
            exposure(model, tok, s, candidates=200, digits=6, rng=random.Random(11))
            for s in secrets
        ]
        mean[dp] = sum(e.exposure for e in found) / len(found)
    assert mean[False] >= 4.0, mean
    assert mean[True] <= mean[False] - 2.5, mean
