"""Canary exposure ("The Secret Sharer") measured against the un-fine-tuned base model.

Reduced size (slow marker; CI runs it): 40 short training records plus 4 canaries
repeated 16 times each, 128 candidates per canary, r=8 adapters on q_proj/v_proj, 10 epochs
for the non-private and the DP (ε=2) run. The non-private run shows the test can see
memorisation; the DP run must gain well under it while its public held-out loss stays within
10% of the base model's (at this size it does not improve on it: a floor, not a utility goal;
bench/bench_privacy.py measures utility).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from conftest import DATA_DIR

pytestmark = [pytest.mark.slow]

CANDIDATES = 128
EPSILON = 2.0


def _mean_exposure(model: Any, tok: Any, secrets: list[str]) -> float:
    from guardrails.privacy.canary import exposure

    found = [
        exposure(model, tok, s, candidates=CANDIDATES, digits=6, rng=random.Random(11))
        for s in secrets
    ]
    return sum(e.exposure for e in found) / len(found)


def test_dp_exposure_stays_near_the_base_model_while_learning() -> None:
    """Non-private gains ≥ 2 bits over base; DP (ε ≤ 2) gains under half of that and keeps
    its public held-out loss within 10% of the base model's."""
    from guardrails.generators.moe import BUNDLED_DIR, bundled_available
    from guardrails.generators.moe.loading import TOKENIZER_FILE, load_model
    from guardrails.generators.moe.tokenizer import BPETokenizer
    from guardrails.privacy.canary import insert_canaries, make_secrets, sequence_losses
    from guardrails.privacy.engine import DPSettings
    from guardrails.privacy.generator import LoRAConfig, train_lora

    if not bundled_available():
        pytest.skip("bundled generator checkpoint not installed")
    eos = json.loads((BUNDLED_DIR / "config.json").read_text())["eos_token_id"]
    tok = BPETokenizer.from_file(BUNDLED_DIR / TOKENIZER_FILE, eos_token_id=eos)
    lines = (DATA_DIR / "train.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    base_records = [json.loads(line)["text"][:80] for line in lines]
    public = (DATA_DIR / "val.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    heldout = [json.loads(line)["text"][:80] for line in public]
    rng = random.Random(7)
    secrets = make_secrets(4, digits=6, rng=rng)
    records = insert_canaries(base_records, secrets, repeats=16, rng=rng)

    base = load_model(BUNDLED_DIR)
    base_exposure = _mean_exposure(base, tok, secrets)
    base_loss = float(sequence_losses(base, heldout, tok, seq_len=24).mean())
    gained: dict[bool, float] = {}
    dp_loss = float("nan")
    for dp in (False, True):
        settings = DPSettings(
            dp=dp,
            target_epsilon=EPSILON,
            delta=1e-3,
            epochs=10,
            # DP: larger batches (the noise on the mean gradient shrinks as 1/batch), a
            # smaller step; non-private: the setting that memorises within 10 epochs
            batch_size=52 if dp else 26,
            max_physical_batch_size=52,
            lr=1e-2 if dp else 2e-2,
            clipping="standard",
            fixed_seed=3,  # a test: reproducible on purpose (the report would say NOT PRIVATE)
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
            assert result.epsilon <= EPSILON
            dp_loss = float(sequence_losses(model, heldout, tok, seq_len=24).mean())
        gained[dp] = _mean_exposure(model, tok, secrets) - base_exposure
    assert gained[False] >= 2.0, (base_exposure, gained)
    # each canary is 16 records, so group privacy allows some gain at ε 2; it must stay well
    # under the non-private gain (measured: DP 1.6 bits, non-private 5.3, base 1.7)
    assert gained[True] <= gained[False] / 2, (base_exposure, gained)
    # utility floor: at this size DP LoRA does not learn the domain (measured 7.12 -> 7.53
    # nats), so the floor is that it stays usable, not that it improves
    assert dp_loss <= 1.1 * base_loss, (base_loss, dp_loss)
