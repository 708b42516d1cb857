"""The shipped packs: they load, their inline tests pass, they are tested both ways, and the
committed JSON Schema is the one the model exports."""

from __future__ import annotations

import json

import pytest

from guardrails.decision import Action
from guardrails.policy import load_policy, policy_json_schema, shipped_policy_dir
from guardrails.policy.lint import LintLevel, lint_policy
from guardrails.policy.reading import parse_policy_yaml, read_policy_file
from guardrails.testing import run_policy_tests

PACKS = [
    "pii",
    "secrets",
    "prompt-injection",
    "medical",
    "finance",
    "legal",
    "default",
    "moderation",
    "pii-national",
]
SCHEMA_LINE = "# yaml-language-server: $schema=./policy.schema.json"


@pytest.mark.parametrize("pack", PACKS)
def test_pack_inline_tests_pass(pack):
    """Every inline test of the pack passes."""
    results = run_policy_tests(load_policy(pack))
    failures = [f"{r.label}: {r.explain()}" for r in results if not r.passed]
    assert failures == []


#: Packs held to ten tests each way: all but ``moderation``, an alias of default kept for
#: compatibility that declares no rules (its few tests exercise default's).
TESTED_BOTH_WAYS = [p for p in PACKS if p != "moderation"]


def _declared_rule_ids(pack: str) -> list[str]:
    """Ids of the rules the pack's file itself declares (not its bases')."""
    path = shipped_policy_dir() / f"{pack}.yaml"
    declared = parse_policy_yaml(read_policy_file(path), str(path)).get("rules") or []
    return [str(rule["id"]) for rule in declared]


@pytest.mark.parametrize("pack", TESTED_BOTH_WAYS)
def test_pack_has_ten_positive_and_ten_negative_tests(pack):
    """At least 10 tests expect a rule to act and at least 10 expect the text to pass."""
    tests = load_policy(pack).model.tests
    positive = [t for t in tests if t.expect is not Action.ALLOW]
    negative = [t for t in tests if t.expect is Action.ALLOW]
    assert len(positive) >= 10
    assert len(negative) >= 10


@pytest.mark.parametrize("pack", PACKS)
def test_pack_rules_each_have_a_positive_test(pack):
    """Each rule the pack declares is named by at least one of its inline tests."""
    policy = load_policy(pack)
    own = set(_declared_rule_ids(pack))
    named = {rule_id for t in policy.model.tests for rule_id in t.rules or ()}
    assert own - named == set()


@pytest.mark.parametrize("pack", PACKS)
def test_pack_lints_without_errors_or_warnings(pack):
    """The linter finds nothing in the shipped packs."""
    assert [str(f) for f in lint_policy(pack)] == []
    assert LintLevel.ERROR.value == "error"


@pytest.mark.parametrize("pack", PACKS)
def test_pack_starts_with_schema_comment(pack):
    """Every shipped pack's first line points editors at the committed schema."""
    first = (shipped_policy_dir() / f"{pack}.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == SCHEMA_LINE


def test_committed_schema_matches_model():
    """policies/policy.schema.json equals policy_json_schema() (regenerate with
    ``guardrails policy schema -o policies/policy.schema.json``)."""
    committed = json.loads((shipped_policy_dir() / "policy.schema.json").read_text("utf-8"))
    assert committed == policy_json_schema()


def test_building_blocks_compose_to_default_rule_ids():
    """extends: [pii, secrets, prompt-injection] yields the rule ids default takes from its
    bases, in default's order (default's own rules come after)."""
    blocks = shipped_policy_dir()
    composed = [
        r.id
        for name in ("pii", "secrets", "prompt-injection")
        for r in load_policy(blocks / f"{name}.yaml").rules
    ]
    own = set(_declared_rule_ids("default"))
    assert composed == [r.id for r in load_policy("default").rules if r.id not in own]


def test_domain_packs_compose(tmp_path):
    """extends: [medical, finance, legal] loads (default arrives three times, layered once)
    and every domain rule is present."""
    path = tmp_path / "combined.yaml"
    path.write_text("name: combined\nextends: [medical, finance, legal]\n", encoding="utf-8")
    ids = [r.id for r in load_policy(path).rules]
    assert len(ids) == len(set(ids))
    assert {
        "medical.lethal_dose",
        "finance.non_public_information",
        "legal.outcome_guarantee",
    } <= set(ids)


def test_later_base_overrides_earlier_field_by_field(tmp_path):
    """Two bases declaring one id: the later base's fields win, the earlier's others stay."""
    (tmp_path / "a.yaml").write_text(
        "name: a\nrules:\n  - {id: r, keywords: [x], severity: low}\n", encoding="utf-8"
    )
    (tmp_path / "b.yaml").write_text(
        "name: b\nrules:\n  - {id: r, keywords: [y], action: flag}\n", encoding="utf-8"
    )
    (tmp_path / "c.yaml").write_text("name: c\nextends: [a.yaml, b.yaml]\n", encoding="utf-8")
    (rule,) = load_policy(tmp_path / "c.yaml").rules
    assert (rule.keywords, rule.action.value, rule.severity.value) == (("y",), "flag", "low")


def test_cli_show_resolved(runner, overlay):
    """show --resolved prints the effective policy with the base's rules layered in."""
    from guardrails.cli import app

    result = runner.invoke(app, ["policy", "show", "--resolved", str(overlay)])
    assert result.exit_code == 0, result.output
    assert "id: base.secret_word" in result.stdout
    assert "extends" not in result.stdout.split("\n", 1)[1]
    plain = runner.invoke(app, ["policy", "show", str(overlay)])
    assert plain.stdout == overlay.read_text(encoding="utf-8")
