"""`guardrails train generator --dp`: a DP LoRA run, adapters that reload, provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DATA_DIR
from typer.testing import CliRunner


def test_train_generator_cli_writes_adapter_report_and_provenance(tmp_path: Path) -> None:
    """It spends ≤ ε, writes adapters that reload to the same logits, records the report."""
    import torch

    from audit import AuditStore
    from guardrails.cli import app
    from guardrails.generators.moe import BUNDLED_DIR, bundled_available
    from guardrails.generators.moe.loading import load_model
    from guardrails.privacy import read_report
    from guardrails.privacy.lora import load_adapter

    if not bundled_available():
        pytest.skip("bundled generator checkpoint not installed")
    lines = (DATA_DIR / "train.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    data = tmp_path / "notes.txt"
    data.write_text("\n".join(json.loads(x)["text"][:60].replace("\n", " ") for x in lines))
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    out = tmp_path / "lora"
    args = ["train", "generator", "--data", str(data), "--out", str(out)]
    args += ["--dp", "--epsilon", "4", "--accountant", "rdp", "--clipping", "standard"]
    args += ["--epochs", "1", "--batch-size", "8", "--seq-len", "16", "--lr", "0.01"]
    result = CliRunner().invoke(app, [*args, "--audit", url])
    assert result.exit_code == 0, result.output
    report = read_report(out)
    assert report.epsilon is not None
    assert report.epsilon <= 4.0
    assert report.model_kind == "generator:moe-lora"
    assert set(report.files) == {"adapter.safetensors", "adapter_config.json"}
    assert report.epsilon_rdp is not None
    assert report.epsilon <= report.epsilon_rdp
    assert report.extra["heldout_perplexity_after"] is None  # no public held-out given
    x = torch.randint(0, 100, (1, 8))
    a = load_adapter(load_model(BUNDLED_DIR), out)
    b = load_adapter(load_model(BUNDLED_DIR), out)
    assert torch.allclose(a(x), b(x))
    assert not torch.allclose(a(x), load_model(BUNDLED_DIR)(x))
    with AuditStore(url) as store:
        (event,) = store.events(action="provenance")
        assert event.metadata["report_sha256"] == report.digest()
        assert event.metadata["privacy_report"]["files"] == report.files
