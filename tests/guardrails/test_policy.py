"""Policy loading: typed model, errors with file/line/rule, layering, schema."""

from __future__ import annotations

import pytest

from guardrails.exceptions import PolicyError
from guardrails.policy import Policy, load_policy, policy_json_schema

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
