"""Training: the loop learns, and `guardrails train generator` writes a usable checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
from typer.testing import CliRunner  # noqa: E402

from guardrails.generators.moe import load_pretrained  # noqa: E402
from guardrails.generators.moe.training import TrainSettings, train  # noqa: E402

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
