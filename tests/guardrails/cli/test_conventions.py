"""One CLI convention, held by walking every command of the real Typer app.

The conventions, each with the test that holds it:

- every command's ``--help`` works and exits 0: `test_every_command_has_help`
- ``--json`` on every command that prints data: `test_data_commands_take_json`
- ``-f`` means one thing (``--follow``): `test_short_f_means_follow_only`
- no double negatives (``--no-no-audit``): `test_no_double_negative_flags`
- the audit filter options are defined once (same options, same help):
  `test_audit_filter_options_are_one_definition`
- ``--audit`` on the group as well as per command: `test_audit_on_the_group`
- errors name what was read: `test_show_names_the_database_it_read`,
  `test_misspelled_pack_lists_the_packs`
- ``--generator module:function`` finds modules in the current folder:
  `test_generator_module_in_the_current_folder`
- ``serve``/``console`` bind before the banner; a port in use is one line and exit 2:
  ``tests/guardrails/cli/test_console_cli.py``
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from audit import AuditEvent, AuditStore
from guardrails.cli import app
from guardrails.cli.event_filter import FILTER_OPTIONS

ROOT = typer.main.get_command(app)

# Commands that print no data of their own, or whose output already is JSON, with why.
NO_JSON_FLAG = {
    "serve": "runs a server",
    "console": "runs a server",
    "demo": "an interactive walk-through for people",
    "policy set": "edits a policy file",
    "policy enable": "edits a policy file",
    "policy disable": "edits a policy file",
    "policy add-rule": "edits a policy file",
    "policy remove-rule": "edits a policy file",
    "policy schema": "prints the JSON Schema (JSON already)",
    "db upgrade": "migrates; prints one status line",
    "db downgrade": "migrates; prints one status line",
    "audit keygen": "writes a key pair; prints the two paths",
    "audit prove": "prints the proof document (JSON already)",
    "audit consistency": "prints the proof document (JSON already)",
    "audit export": "writes JSONL (JSON already)",
    "audit purge": "removes bodies; prints one status line",
    "audit replay-spill": "replays spill files; prints one count",
    "train classifier": "trains; writes the model, its card and report files",
    "train generator": "trains; writes the model and its report files",
    "privacy train-classifier": "trains; writes the model and a JSON privacy report",
    "privacy train-generator": "trains; writes the adapters and a JSON privacy report",
    "keys add": "prints only the new key (once)",
    "keys revoke": "revokes; prints one status line",
}


def _commands(command=ROOT, path=()):
    if hasattr(command, "commands"):
        for name, sub in sorted(command.commands.items()):
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), command


COMMANDS = dict(_commands())


def _options(command) -> dict[str, object]:
    """Every option string of a command -> its parameter."""
    found = {}
    for param in command.params:
        for opt in (*param.opts, *getattr(param, "secondary_opts", ())):
            found[opt] = param
    return found


@pytest.fixture
def runner(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("GUARDRAILS_"):
            monkeypatch.delenv(name)
    return CliRunner()


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_has_help(runner, path):
    """``guardrails <command> --help`` exits 0 and shows the command's usage."""
    result = runner.invoke(app, [*path.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_data_commands_take_json():
    """Every command has --json unless it is listed with the reason it prints no data."""
    missing = [
        p for p, c in COMMANDS.items() if "--json" not in _options(c) and p not in NO_JSON_FLAG
    ]
    assert missing == []
    stale = [p for p in NO_JSON_FLAG if p in COMMANDS and "--json" in _options(COMMANDS[p])]
    assert stale == []  # an exemption that is no longer needed goes


def test_short_f_means_follow_only():
    """Wherever -f exists it is --follow."""
    for path, command in COMMANDS.items():
        param = _options(command).get("-f")
        if param is not None:
            assert "--follow" in param.opts, path


def test_no_double_negative_flags():
    """No flag says no twice (--no-no-audit, --no-insecure-no-auth)."""
    for path, command in COMMANDS.items():
        for opt in _options(command):
            assert not re.match(r"--no-(.*-)?no-", opt), f"{path}: {opt}"


def test_audit_filter_options_are_one_definition():
    """query, stats and export take exactly the same filter options with the same help."""
    names = {
        name: [o for o in hint.__metadata__[0].param_decls]
        for name, (hint, _) in FILTER_OPTIONS.items()
    }
    expected = {decl for decls in names.values() for decl in decls}
    helps = None
    for path in ("audit query", "audit stats", "audit export"):
        options = _options(COMMANDS[path])
        assert expected <= set(options), path
        mine = {opt: options[opt].help for opt in expected}
        helps = helps or mine
        assert mine == helps, path


def _log(tmp_path, name: str) -> tuple[str, str]:
    url = f"sqlite:///{tmp_path / name}"
    with AuditStore(url, auto_upgrade=True) as store:
        store.record_policy("d" * 64, "p", "1", "rules: []\n")
        with store.writer() as writer:
            event = AuditEvent(
                request_id="r",
                policy_name="p",
                policy_version="1",
                policy_digest="d" * 64,
                action="allow",
                prompt="hello",
            )
            writer.write(event)
    return url, event.event_id


def test_audit_on_the_group(runner, tmp_path):
    """``audit --audit URL query`` reads URL; a command's own --audit wins over the group's."""
    first, first_id = _log(tmp_path, "one.db")
    second, second_id = _log(tmp_path, "two.db")
    grouped = runner.invoke(app, ["audit", "--audit", first, "query", "--all", "--json"])
    assert grouped.exit_code == 0, grouped.output
    assert [e["event_id"] for e in json.loads(grouped.output)] == [first_id]
    both = runner.invoke(
        app, ["audit", "--audit", first, "query", "--audit", second, "--all", "--json"]
    )
    assert [e["event_id"] for e in json.loads(both.output)] == [second_id]
    assert "GUARDRAILS_AUDIT_URL" not in os.environ  # the group option does not leak


def test_show_names_the_database_it_read(runner, tmp_path):
    """`audit show` of an id the log lacks names the database it read."""
    url, _ = _log(tmp_path, "three.db")
    result = runner.invoke(app, ["audit", "show", "nope", "--audit", url])
    assert result.exit_code == 2
    assert "three.db" in result.output.replace("\n", "")


def test_misspelled_pack_lists_the_packs(runner):
    """A pack name that is almost right: exit 2, 'did you mean', and the shipped packs."""
    result = runner.invoke(app, ["check", "--policy", "defualt", "hello"])
    assert result.exit_code == 2
    assert "did you mean 'default'?" in result.output
    assert "shipped packs:" in result.output
    assert "prompt-injection" in result.output


def test_generator_module_in_the_current_folder(tmp_path):
    """`guardrails run --generator mine:answer` imports mine.py from the current folder."""
    (tmp_path / "mine.py").write_text(
        "def answer(prompt, **kw):\n    return 'from mine: ' + prompt\n", encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAILS_")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from guardrails.cli import main; main()",
            "run",
            "--generator",
            "mine:answer",
            "--policy",
            "rules-only",
            "--audit",
            f"sqlite:///{tmp_path / 'a.db'}",
            "--json",
            "hello",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"] == "from mine: hello"
