"""Round-trip editing: comments and formatting survive, bad edits write nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from guardrails.cli import app
from guardrails.exceptions import PolicyError
from guardrails.policy import load_policy
from guardrails.policy.edit import (
    add_rule,
    parse_key,
    remove_rule,
    set_enabled,
    set_value,
)


def _changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    return [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]


def test_set_rule_field_changes_one_line_of_default(default_copy):
    """Setting a rule's action in a shipped pack changes exactly that line."""
    before = default_copy.read_text(encoding="utf-8")
    edit = set_value(default_copy, "rules[pii.email].action", "block")
    after = default_copy.read_text(encoding="utf-8")
    assert _changed_lines(before, after) == [("    action: redact", "    action: block")]
    assert edit.after == after
    assert load_policy(default_copy).rules[0].action.value == "block"


def test_set_nested_setting_keeps_comments(overlay):
    """A new nested setting is added; the file's comments and flow-style tests survive."""
    set_value(overlay, "settings.audit.store", "full")
    text = overlay.read_text(encoding="utf-8")
    assert "# A tenant overlay: comments like this one must survive edits." in text
    assert "mode: enforce   # inline comment" in text
    assert '  - {name: codename, text: "status of project bluebird?"' in text
    assert load_policy(overlay).settings.audit.store.value == "full"


def test_disable_base_rule_writes_overlay_entry(overlay):
    """Disabling a rule only the base declares adds an ``{id, enabled: false}`` overlay."""
    edit = set_enabled(overlay, "base.secret_word", False)
    assert "  - id: base.secret_word\n    enabled: false\n" in edit.after
    rule = next(r for r in load_policy(overlay).rules if r.id == "base.secret_word")
    assert rule.enabled is False
    assert rule.keywords == ("xyzzy",)  # the rest still comes from the base


def test_add_and_remove_rule(overlay):
    """add-rule appends a block-style rule after --after; remove-rule takes it out again."""
    original = overlay.read_text(encoding="utf-8")
    add_rule(
        overlay, "{id: tenant.second, keywords: [falcon], action: flag}", after="tenant.codename"
    )
    ids = [r.id for r in load_policy(overlay).rules]
    assert ids[-2:] == ["tenant.codename", "tenant.second"]
    assert "  - id: tenant.second\n    keywords:\n" in overlay.read_text(encoding="utf-8")
    remove_rule(overlay, "tenant.second")
    assert overlay.read_text(encoding="utf-8") == original


def _assert_untouched(path: Path, text: str, mtime: int) -> None:
    assert path.read_text(encoding="utf-8") == text
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda p: add_rule(p, "{id: bad.regex, pattern: '(unclosed'}"),
            "invalid regular expression",
        ),
        (lambda p: add_rule(p, "{id: bad.field, keywords: [x], colour: red}"), "unknown field"),
        (lambda p: add_rule(p, "{id: base.secret_word, keywords: [x]}"), "already exists"),
        (lambda p: set_value(p, "settings.on_error", "explode"), "on_error"),
        (lambda p: set_value(p, "settings.max_input_chars", "many"), "max_input_chars"),
        (lambda p: set_value(p, "rules[nope].action", "block"), "no such rule"),
        (lambda p: set_value(p, "extends", "tenant.yaml"), "extends cycle"),
        (lambda p: set_value(p, "extends", "missing.yaml"), "missing.yaml"),
        (lambda p: remove_rule(p, "tenant.codename"), "names an unknown rule"),
        (lambda p: remove_rule(p, "base.secret_word"), "disable it instead"),
        (lambda p: set_value(p, "rules[", "x"), "cannot parse key path"),
    ],
)
def test_bad_edits_write_nothing(overlay, edit, message):
    """Each bad edit raises PolicyError naming the problem, and the file is untouched."""
    text, mtime = overlay.read_text(encoding="utf-8"), overlay.stat().st_mtime_ns
    with pytest.raises(PolicyError) as caught:
        edit(overlay)
    assert message in str(caught.value)
    _assert_untouched(overlay, text, mtime)


def test_broken_yaml_is_named_with_line(tmp_path):
    """An edit of a file that is not YAML names the line and writes nothing."""
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nrules: [\n", encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        set_value(path, "version", "2")
    assert "YAML syntax error" in str(caught.value)
    assert caught.value.problems[0].line is not None
    assert path.read_text(encoding="utf-8") == "name: x\nrules: [\n"


def test_missing_file_is_named(tmp_path):
    """Editing a file that does not exist says it cannot be read."""
    with pytest.raises(PolicyError, match="cannot read"):
        set_enabled(tmp_path / "nope.yaml", "x", False)


def test_edit_keeps_file_mode(overlay):
    """The atomic replace keeps the file's permission bits."""
    os.chmod(overlay, 0o640)
    set_value(overlay, "version", "2")
    assert overlay.stat().st_mode & 0o777 == 0o640


def test_parse_key_paths():
    """Dotted keys, bracketed rule ids (with dots) and list indexes parse as segments."""
    assert parse_key("rules[pii.email].action") == ["rules", "pii.email", "action"]
    assert parse_key("settings.audit.store") == ["settings", "audit", "store"]
    assert parse_key("tests[0].expect") == ["tests", 0, "expect"]


def test_cli_dry_run_prints_diff_and_writes_nothing(runner, overlay):
    """--dry-run shows the unified diff and leaves the file as it was."""
    text = overlay.read_text(encoding="utf-8")
    result = runner.invoke(app, ["policy", "disable", str(overlay), "tenant.codename", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "+    enabled: false" in result.stdout
    assert overlay.read_text(encoding="utf-8") == text


def test_cli_set_rejects_invalid_value_with_exit_2(runner, overlay):
    """A rejected CLI edit exits 2, names the rule and field, and says nothing was written."""
    result = runner.invoke(
        app, ["policy", "set", str(overlay), "rules[tenant.codename].action", "explode"]
    )
    assert result.exit_code == 2
    assert "tenant.codename" in result.output
    assert "nothing written" in result.output


def test_cli_add_rule_from_file(runner, overlay, tmp_path):
    """add-rule @FILE reads the rule from a YAML file."""
    rule = tmp_path / "rule.yaml"
    rule.write_text("id: tenant.more\npattern: 'foo\\d+'\naction: flag\n", encoding="utf-8")
    result = runner.invoke(app, ["policy", "add-rule", str(overlay), f"@{rule}"])
    assert result.exit_code == 0, result.output
    assert any(r.id == "tenant.more" for r in load_policy(overlay).rules)
