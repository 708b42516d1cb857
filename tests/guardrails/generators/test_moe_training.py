"""Training: the loop learns, and `guardrails train generator` writes a usable checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from guardrails.generators.moe import load_pretrained
from guardrails.generators.moe.training import TrainSettings, train

TINY = {
    "batch_size": 4,
    "seq_len": 16,
    "vocab_size": 300,
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "num_experts": 4,
    "top_k": 2,
    "moe_intermediate_size": 16,
    "shared_intermediate_size": 16,
    "max_position_embeddings": 64,
    "warmup": 5,
    "eval_every": 0,
    "threads": 1,
}


@pytest.fixture
def corpus(tmp_path, tiny_text):
    """A small text file with enough tokens for held-out blocks."""
    path = tmp_path / "corpus.txt"
    path.write_text(tiny_text * 6, encoding="utf-8")
    return path


def test_training_reduces_loss_and_writes_checkpoint(tmp_path, corpus):
    """60 steps on a repetitive text cut the loss; the output directory loads and generates."""
    settings = TrainSettings(steps=60, lr=1e-2, **TINY)
    report = train(tmp_path / "ckpt", settings=settings, corpus=corpus, plots=False)
    first, last = sum(report.losses[:5]) / 5, sum(report.losses[-5:]) / 5
    assert last < first - 1.0
    assert report.heldout_perplexity < 300
    assert len(report.expert_load) == 2
    assert sum(report.expert_load[0]) == pytest.approx(1.0)
    gen = load_pretrained(tmp_path / "ckpt")
    assert gen.generate("The guard", max_tokens=8, seed=0)


def test_cli_train_generator_writes_checkpoint_plots_and_card(tmp_path, corpus):
    """`guardrails train generator` at a tiny size writes weights, tokenizer, PNGs and card."""
    from guardrails.cli import app

    out = tmp_path / "cli-ckpt"
    args = ["train", "generator", "--corpus", str(corpus), "--out", str(out), "--steps", "4"]
    args += ["--batch-size", "2", "--seq-len", "16", "--vocab-size", "300"]
    args += ["--hidden-size", "32", "--layers", "1", "--heads", "4", "--kv-heads", "2"]
    args += ["--experts", "4", "--top-k", "2", "--expert-size", "8", "--shared-size", "8"]
    args += ["--eval-every", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "held-out perplexity" in result.output
    for name in ("config.json", "model.safetensors", "tokenizer.json", "MODEL_CARD.md"):
        assert (out / name).is_file(), name
    assert (out / "loss_curve.png").stat().st_size > 1000
    assert (out / "expert_load.png").stat().st_size > 1000
    log = json.loads((out / "training_log.json").read_text())
    assert log["steps"] == 4
    card = (out / "MODEL_CARD.md").read_text()
    assert str(corpus) in card
    assert "PSF" not in card


def test_cli_rejects_inconsistent_shapes(tmp_path):
    """Heads that do not divide the width exit with code 2 and say why."""
    from guardrails.cli import app

    args = ["train", "generator", "--out", str(tmp_path), "--hidden-size", "30", "--heads", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "must divide" in result.output


def test_importing_the_packages_does_not_import_torch():
    """`import guardrails.generators.moe` (and its parents) leaves torch unloaded."""
    code = (
        "import sys, guardrails, guardrails.generators, guardrails.generators.moe as m;"
        "m.bundled_available();"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def _skewed_block():
    import torch

    from guardrails.generators.moe.config import MoEConfig
    from guardrails.generators.moe.routing import MoEBlock

    cfg = MoEConfig(
        vocab_size=16,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        head_dim=8,
        intermediate_size=16,
        moe_intermediate_size=8,
        num_experts=8,
        num_experts_per_tok=2,
        router_score="sigmoid",
    )
    g = torch.Generator().manual_seed(0)
    block = MoEBlock(cfg).train()
    with torch.no_grad():
        block.gate.weight.copy_(torch.randn(8, 16, generator=g))
        block.gate.weight[:2] += 2.0  # experts 0 and 1 win for most tokens
    x = torch.randn(256, 16, generator=g) + 0.5
    return block, x


def test_bias_update_balances_expert_load():
    """DeepSeek-V3's bias update drives a skewed router's load CV down by more than half."""
    import torch

    from guardrails.generators.moe.training import load_cv

    block, x = _skewed_block()
    with torch.no_grad():
        block(x)
        before = load_cv(block.expert_counts)
        for _ in range(300):
            block(x)
            block.update_balance_bias(0.01)
        block(x)
        after = load_cv(block.expert_counts)
    assert before > 0.5
    assert after < before / 2
    # the bias steers the choice only: the weights of the chosen experts are unbiased scores
    assert float(block.gate.e_score_correction_bias[0]) < 0


def test_bias_balancing_needs_sigmoid_routing():
    """balance='bias' with softmax routing is refused (the bias only steers sigmoid routing)."""
    with pytest.raises(ValueError, match="sigmoid"):
        TrainSettings(balance="bias")


def test_training_with_sigmoid_routing_and_bias_balancing(tmp_path, corpus):
    """A sigmoid-routed run with bias balancing learns, reports load CV, saves the bias."""
    settings = TrainSettings(steps=40, lr=1e-2, router="sigmoid", balance="bias", **TINY)
    report = train(tmp_path / "ckpt", settings=settings, corpus=corpus, plots=False)
    assert sum(report.losses[-5:]) / 5 < sum(report.losses[:5]) / 5 - 0.5
    assert len(report.expert_load_cv) == 2
    gen = load_pretrained(tmp_path / "ckpt")
    assert gen.model.config.router_score == "sigmoid"
    biases = [m.gate.e_score_correction_bias for m in gen.model.modules() if hasattr(m, "gate")]
    assert any(bool(b.abs().sum() > 0) for b in biases)
