"""``guardrails serve`` options from the command line, ``GUARDRAILS_*`` variables and a
YAML ``--config`` file, in that order of precedence (uvicorn replaced by a recorder)."""

from __future__ import annotations

import json
import logging

import pytest
from typer.testing import CliRunner

from guardrails.cli import app
from guardrails.cli.serve_config import structured_formatter, uvicorn_log_config
from guardrails.proxy.config import CONFIG_ENV


@pytest.fixture
def served(monkeypatch, tmp_path):
    """Run `serve` up to uvicorn.run and return the ProxyConfig it would serve."""
    import uvicorn

    monkeypatch.chdir(tmp_path)
    for name in ("GUARDRAILS_AUDIT_URL", "GUARDRAILS_KEYS_FILE", "GUARDRAILS_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(CONFIG_ENV, "")  # serve sets it: restored after the test
    monkeypatch.setenv("GUARDRAILS_CONSOLE_SECRET", "test")
    seen: dict = {}

    def fake_run(*args, **kwargs):
        import os

        seen["config"] = json.loads(os.environ[CONFIG_ENV])
        seen["uvicorn"] = kwargs

    monkeypatch.setattr(uvicorn, "run", fake_run)

    def run(args: list[str], env: dict[str, str] | None = None):
        result = CliRunner().invoke(app, ["serve", "--port", "0", *args], env=env or {})
        return result, seen

    return run


def test_precedence_command_line_then_environment_then_file(served, tmp_path):
    """File < environment < command line, option by option."""
    config = tmp_path / "serve.yaml"
    config.write_text(
        "upstream: http://127.0.0.1:9/v1\n"
        "insecure-no-auth: true\n"
        "max_messages: 7\n"
        "max-body-bytes: 1234\n"
        "upstream-timeout: 11\n",
        encoding="utf-8",
    )
    result, seen = served(
        ["--config", str(config), "--upstream-timeout", "3"],
        env={"GUARDRAILS_MAX_MESSAGES": "9"},
    )
    assert result.exit_code == 0, result.output
    got = seen["config"]
    assert got["upstream"] == "http://127.0.0.1:9/v1"  # file
    assert got["allow_anonymous"] is True  # file
    assert got["max_body_bytes"] == 1234  # file
    assert got["max_messages"] == 9  # environment beats file
    assert got["upstream_timeout_s"] == 3.0  # command line beats file


def test_every_option_reads_its_environment_variable(served, tmp_path):
    """GUARDRAILS_UPSTREAM, GUARDRAILS_INSECURE_NO_AUTH... with no file and no flags."""
    env = {
        "GUARDRAILS_UPSTREAM": "http://127.0.0.1:8/v1",
        "GUARDRAILS_INSECURE_NO_AUTH": "1",
        "GUARDRAILS_RELOAD_INTERVAL": "0.5",
        "GUARDRAILS_POLICY": "rules-only",
    }
    result, seen = served([], env=env)
    assert result.exit_code == 0, result.output
    assert seen["config"]["upstream"] == "http://127.0.0.1:8/v1"
    assert seen["config"]["reload_interval_s"] == 0.5
    assert seen["config"]["policy"].endswith("rules-only.yaml")


def test_config_file_errors_name_file_and_key(served, tmp_path):
    """An unknown key, or a file that is not a mapping, exits 2 naming it."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("prot: 8080\n", encoding="utf-8")
    result, _ = served(["--config", str(bad)])
    assert result.exit_code == 2
    assert "prot" in result.output
    assert "bad.yaml" in result.output.replace("\n", "")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n", encoding="utf-8")
    result, _ = served(["--config", str(listed)])
    assert result.exit_code == 2
    assert "mapping" in result.output


def test_uvicorn_lines_are_structured_json(capsys, monkeypatch):
    """A uvicorn log record renders as one JSON object with event, level, component."""
    monkeypatch.setenv("GUARDRAILS_LOG_FORMAT", "json")
    handler = logging.StreamHandler()
    handler.setFormatter(structured_formatter())
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, "Started %s", ("x",), None
    )
    line = handler.format(record)
    doc = json.loads(line)
    assert doc["event"] == "Started x"
    assert doc["level"] == "info"
    assert doc["component"] == "uvicorn.error"
    assert "timestamp" in doc
    config = uvicorn_log_config("info")
    assert config["loggers"]["uvicorn"]["handlers"] == ["structured"]
