"""Fixtures for the policy authoring tests: isolated CLI runs and small policy files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from guardrails.policy import shipped_policy_dir

OVERLAY = """\
# A tenant overlay: comments like this one must survive edits.
name: tenant
extends: base.yaml
settings:
  mode: enforce   # inline comment
rules:
  - id: tenant.codename
    keywords: [project bluebird]
    action: block
tests:
  - {name: codename, text: "status of project bluebird?", expect: block, rules: [tenant.codename]}
  - {name: clean, text: "status of the project?", expect: allow, rules: []}
"""

BASE = """\
name: base
rules:
  - id: base.secret_word
    keywords: [xyzzy]
    action: redact
tests:
  - {text: "say xyzzy", expect: redact}
"""


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """A CLI runner in an empty folder, with no audit URL or log settings inherited."""
    monkeypatch.chdir(tmp_path)
    for name in ("GUARDRAILS_AUDIT_URL", "GUARDRAILS_LOG_FORMAT", "GUARDRAILS_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


@pytest.fixture
def overlay(tmp_path: Path) -> Path:
    """A tenant overlay extending a small base, both in ``tmp_path``."""
    (tmp_path / "base.yaml").write_text(BASE, encoding="utf-8")
    path = tmp_path / "tenant.yaml"
    path.write_text(OVERLAY, encoding="utf-8")
    return path


@pytest.fixture
def default_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped pii pack (where the default PII rules are declared)."""
    target = tmp_path / "pii.yaml"
    shutil.copy(shipped_policy_dir() / "pii.yaml", target)
    return target
