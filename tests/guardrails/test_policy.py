"""Policy loading: typed model, errors with file/line/rule, layering, schema, and policy
files as hostile input (alias bombs, huge files, deep nesting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from guardrails.cli import app
from guardrails.exceptions import PolicyError
from guardrails.policy import Policy, load_policy, policy_json_schema
from guardrails.policy.edit import set_value
from guardrails.policy.lint import lint_policy
from guardrails.policy.reading import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    MAX_POLICY_BYTES,
    parse_policy_yaml,
    to_plain,
)
from guardrails.policy.suite import load_suite

BAD = """\
name: bad
settings:
  on_error: maybe
rules:
  - id: broken-regex
    pattern: "(unclosed"
  - id: two-matchers
    pattern: "x"
    keywords: [y]
  - id: wrong-action
    keywords: [x]
    action: explode
    colour: red
  - id: broken-regex
    pattern: ok
tests:
  - {text: hi, expect: allow, rules: [nope]}
"""


def test_every_error_is_reported_with_file_line_and_rule():
    """All problems come back at once, each naming the file, the line and the rule id."""
    with pytest.raises(PolicyError) as info:
        Policy.from_content(BAD, path="bad.yaml")
    problems = {(p.line, p.rule_id, p.message.split(":")[0]) for p in info.value.problems}
    assert (3, None, "settings.on_error") in problems
    assert (6, "broken-regex", "pattern") in problems
    assert (12, "wrong-action", "action") in problems
    assert (13, "wrong-action", "colour") in problems
    assert any(
        p.rule_id == "two-matchers" and "exactly one" in p.message for p in info.value.problems
    )
    assert any(
        p.rule_id == "broken-regex" and p.line == 14 and "duplicate" in p.message
        for p in info.value.problems
    )
    assert all(p.file == "bad.yaml" for p in info.value.problems)
    assert "bad.yaml:6:5: rule 'broken-regex': pattern: invalid regular expression" in str(
        info.value
    )


def test_unknown_rule_in_inline_test_is_an_error():
    """An inline test naming a rule that does not exist fails validation."""
    text = (
        "name: t\nrules:\n  - {id: a, pattern: x}\n"
        "tests:\n  - {text: x, expect: block, rules: [b]}\n"
    )
    with pytest.raises(PolicyError, match=r"t\.yaml:5:.* rule 'b': test #1 names an unknown rule"):
        Policy.from_content(text, path="t.yaml")


def test_yaml_syntax_error_names_the_line():
    """Broken YAML is reported with its line, never half-loaded."""
    with pytest.raises(PolicyError, match=r"s\.yaml:3:\d+: YAML syntax error"):
        Policy.from_content("name: x\nrules: [\n", path="s.yaml")


def test_missing_file_is_a_policy_error(tmp_path):
    """A path that does not exist is a clear PolicyError, not an OSError."""
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "nope.yaml")


def test_digest_changes_with_content():
    """Any change to the policy text changes its digest."""
    a = Policy.from_content("name: t\nrules:\n  - {id: a, pattern: x}\n")
    b = Policy.from_content("name: t\nrules:\n  - {id: a, pattern: y}\n")
    assert a.digest != b.digest
    assert len(a.digest) == 64


def test_extends_layers_rules_and_settings(tmp_path):
    """An overlay replaces a base rule field by field, adds its own, and merges settings."""
    (tmp_path / "base.yaml").write_text(
        "name: base\nsettings: {on_error: allow, audit: {store: full}}\n"
        "rules:\n  - {id: a, pattern: apple, action: block}\n  - {id: b, pattern: banana}\n"
    )
    (tmp_path / "tenant.yaml").write_text(
        "name: tenant\nextends: base.yaml\nsettings: {audit: {store: hash}}\n"
        "rules:\n  - {id: a, action: flag}\n  - {id: c, keywords: [cherry]}\n"
    )
    policy = load_policy(tmp_path / "tenant.yaml")
    rules = {r.id: r for r in policy.rules}
    assert [r.id for r in policy.rules] == ["a", "b", "c"]
    assert rules["a"].action.value == "flag"
    assert rules["a"].pattern == "apple"
    assert policy.settings.on_error.value == "allow"
    assert policy.settings.audit.store.value == "hash"
    assert "apple" in policy.source  # the base text is part of what the digest covers


def test_extends_cycle_is_reported(tmp_path):
    """A policy that extends itself is an error, not an infinite loop."""
    (tmp_path / "a.yaml").write_text("name: a\nextends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("name: b\nextends: a.yaml\n")
    with pytest.raises(PolicyError, match="cycle"):
        load_policy(tmp_path / "a.yaml")


def test_shipped_default_loads_by_name():
    """The shipped default policy loads by name and by default."""
    assert load_policy("default").digest == load_policy().digest
    assert len(load_policy().rules) >= 20


def test_json_schema_describes_rules():
    """The exported schema forbids unknown keys and documents rule fields."""
    schema = policy_json_schema()
    rule = schema["$defs"]["Rule"]
    assert rule["additionalProperties"] is False
    assert "pattern" in rule["properties"]
    assert rule["properties"]["id"]["description"]


# --- policy files are input ------------------------------------------------------------------


def _laughs(width: int, depth: int) -> str:
    """A "billion laughs" document: ``depth`` levels of ``width`` aliases of the level below."""
    lines = ["name: bomb\n", f"l0: &l0 [{', '.join(['lol'] * width)}]\n"]
    for level in range(1, depth + 1):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]\n")
    return "".join(lines)


ALIAS_BOMB = _laughs(9, 9)  # 9**10 strings once expanded


def _count(node: Any) -> int:
    if isinstance(node, dict):
        return 1 + sum(1 + _count(v) for v in node.values())
    if isinstance(node, list):
        return 1 + sum(_count(v) for v in node)
    return 1


def test_alias_bomb_is_refused_at_the_alias_that_crosses_the_bound(tmp_path):
    """A few-hundred-byte alias bomb is refused at file:line:column, before it is expanded."""
    assert len(ALIAS_BOMB.encode()) < 600
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == (str(path), 6)  # l4 = 9**5 nodes crosses 10,000
    assert problem.column is not None
    assert "alias *l3" in problem.message
    assert "alias bomb" in problem.message


def test_alias_bomb_fails_fast_in_every_command(runner_in_tmp, tmp_path):
    """``policy validate``, ``policy test`` and ``policy lint`` report the bomb and exit;
    ``policy set`` refuses to edit it and leaves the file as it was."""
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB, encoding="utf-8")
    where = f"{path}:6:"
    validated = runner_in_tmp.invoke(app, ["policy", "validate", str(path)])
    assert validated.exit_code == 1
    assert where in validated.output
    assert "alias bomb" in validated.output
    tested = runner_in_tmp.invoke(app, ["policy", "test", str(path)])
    assert tested.exit_code == 2
    assert where in tested.output
    (finding,) = lint_policy(path)
    assert (finding.code, finding.line) == ("load-error", 6)
    with pytest.raises(PolicyError, match="alias bomb"):
        set_value(path, "settings.mode", "shadow")
    assert path.read_text(encoding="utf-8") == ALIAS_BOMB
    test_file = tmp_path / "bomb.tests.yaml"
    test_file.write_text(ALIAS_BOMB.replace("name: bomb", "tests: []"), encoding="utf-8")
    with pytest.raises(PolicyError, match="alias bomb"):
        load_suite(test_file)


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 12), depth=st.integers(0, 12))
def test_alias_expansion_never_exceeds_the_bound(width, depth):
    """Whatever the bomb's shape, a parse either succeeds with at most MAX_ALIAS_NODES nodes
    added by aliases, or is refused with a located problem."""
    text = _laughs(width, depth)
    try:
        data = parse_policy_yaml(text, "b.yaml")
    except PolicyError as exc:
        (problem,) = exc.problems
        assert problem.line is not None
        assert "alias bomb" in problem.message
        return
    written = _count(to_plain(parse_policy_yaml(text.replace("*l", "l"), "b.yaml")))
    assert _count(to_plain(data)) - written <= MAX_ALIAS_NODES


def test_recursive_alias_is_refused():
    """An alias inside the node it names (a cyclic document) is refused at its line."""
    with pytest.raises(PolicyError, match=r"r\.yaml:2:\d+: recursive alias \*loop"):
        Policy.from_content("name: r\nx: &loop [a, [b, *loop]]\n", path="r.yaml")


def test_small_aliases_still_load():
    """Ordinary reuse through anchors and aliases keeps working."""
    policy = Policy.from_content(
        "name: a\nrules:\n"
        "  - {id: one, pattern: x, applies_to: &both [input, output]}\n"
        "  - {id: two, pattern: y, applies_to: *both}\n"
    )
    assert policy.rules[1].applies_to == policy.rules[0].applies_to


def test_deep_nesting_is_refused():
    """Nesting deeper than MAX_DEPTH is refused with its line, not a RecursionError."""
    text = (
        "name: d\nx: " + "[" * 400 + "]" * 400 + "\n"
    )  # past the recursion limit (3 frames a level)
    with pytest.raises(PolicyError, match=rf"d\.yaml:2:\d+: nested deeper than {MAX_DEPTH}"):
        Policy.from_content(text, path="d.yaml")


def test_oversized_file_is_refused_with_its_line(tmp_path):
    """A file over MAX_POLICY_BYTES is refused at the line where it crosses the limit."""
    line = "# " + "x" * 1021 + "\n"  # 1 KiB a line
    path = tmp_path / "big.yaml"
    path.write_text("name: big\n" + line * (MAX_POLICY_BYTES // len(line) + 1), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    (problem,) = caught.value.problems
    assert problem.line == MAX_POLICY_BYTES // len(line) + 1
    assert f"{MAX_POLICY_BYTES:,} bytes" in problem.message
    with pytest.raises(PolicyError, match="larger than the limit"):
        Policy.from_content(path.read_text(encoding="utf-8"), path="big.yaml")


def test_huge_sparse_file_is_refused_without_reading_it(tmp_path):
    """A 64 GiB (sparse) file is refused after reading only the limit, not loaded whole."""
    path = tmp_path / "huge.yaml"
    with path.open("wb") as stream:
        stream.truncate(64 << 30)
    with pytest.raises(PolicyError, match="larger than the limit"):
        load_policy(path)


def test_yaml_errors_read_the_same_everywhere(tmp_path):
    """Loading, editing and test suites report one broken file with the same problem."""
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nrules: [\n  - {id: a\n", encoding="utf-8")
    seen = []
    for attempt in (
        lambda: load_policy(path),
        lambda: set_value(path, "settings.mode", "shadow"),
        lambda: load_suite(path),
    ):
        with pytest.raises(PolicyError) as caught:
            attempt()
        seen.append(caught.value.problems)
    assert seen[0] == seen[1] == seen[2]
    assert seen[0][0].line is not None


@pytest.fixture
def runner_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """A CLI runner in ``tmp_path`` with no audit URL or log settings inherited."""
    monkeypatch.chdir(tmp_path)
    for name in ("GUARDRAILS_AUDIT_URL", "GUARDRAILS_LOG_FORMAT", "GUARDRAILS_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()
