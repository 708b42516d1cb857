"""`guardrails eval --json`: every figure of the tables as one strict JSON document."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from guardrails.cli import app

TEST_SPLIT = Path(__file__).resolve().parents[3] / "guardrails/classifier/data/test.jsonl"


def test_eval_json_is_strict_json_with_every_figure(tmp_path):
    """eval --json prints one document with flag/block metrics per category, per-language
    figures and the goals (undefined ratios as null, never NaN)."""
    data = tmp_path / "few.jsonl"
    data.write_text(
        "".join(TEST_SPLIT.read_text(encoding="utf-8").splitlines(keepends=True)[:40]),
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["eval", "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(
        result.stdout, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))
    )
    assert document["examples"] == 40
    categories = {m["category"] for m in document["flag"]}
    assert "prompt_injection" in categories
    assert {m["category"] for m in document["block"]} == categories
    assert document["languages"]
    assert "injection_recall" in document["goals"]
