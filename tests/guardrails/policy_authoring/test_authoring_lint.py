"""The linter and the backtracking analysis behind it."""

from __future__ import annotations

import pytest

from guardrails.backtracking import analyze, confirm
from guardrails.cli import app
from guardrails.policy.lint import LintLevel, lint_policy


@pytest.mark.parametrize(
    ("pattern", "kind"),
    [
        (r"(a+)+$", "nested"),
        (r"^(\w+\s?)*$", "nested"),
        (r"^(\d+)*$", "nested"),
        (r"(a|ab)*c", "alternation"),
        (r"(\w|\d)+!", "alternation"),
        (r"\d+\d*x", "adjacent"),
        (r".*\s*.*x", "adjacent"),
    ],
)
def test_risky_shapes_are_found(pattern, kind):
    """Each classic catastrophic shape is reported with its kind."""
    assert kind in [risk.kind for risk in analyze(pattern)]


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?:[a-z]+\.)+com",  # the dot separates the repetitions
        r"(?:\d[ \-]?){12,18}\d",  # bounded
        r"(?>a+)+b",  # atomic
        r"(a++)+b",  # possessive
        r"foo|bar",
        r"(?i)(?<![\w.%+-])[a-z0-9][a-z0-9._%+-]{0,63}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}",
        r"[^\]]+x",
    ],
)
def test_safe_shapes_are_not_reported(pattern):
    """Unambiguous repetitions are not reported."""
    assert analyze(pattern) == []


def test_confirm_times_a_catastrophic_pattern_out():
    """confirm() proves (\\w+\\s?)+$ slow on a crafted input and clears a linear pattern.

    (``(a+)+$`` is the textbook case, but the `regex` package matches it in near-linear time,
    so it would only be "slow" on a loaded machine.)
    """
    assert confirm(r"^(\w+\s?)+$") is not None
    assert confirm(r"^a+$", timeout_s=0.02) is None


def _write(tmp_path, body: str):
    path = tmp_path / "p.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def test_lint_reports_each_problem_with_code_and_line(tmp_path):
    """Untested, shadowed, benign-keyword, duplicate-matcher and backtracking are all found."""
    path = _write(
        tmp_path,
        """\
name: p
settings: {regex_timeout_ms: 20}
rules:
  - id: broad
    keywords: [password]
    action: block
  - id: narrow
    keywords: [password reset]
    action: flag
  - id: same
    keywords: [Password]
    action: flag
  - id: slow
    pattern: '^(\\w+\\s?)+$'
  - id: never
    pattern: 'zzqq'
tests:
  - {text: "please do a password reset", expect: block}
""",
    )
    found = {(f.code, f.rule_id): f for f in lint_policy(path)}
    assert found[("benign-keyword", "broad")].line == 4
    assert ("shadowed", "narrow") in found
    assert ("duplicate-matcher", "same") in found
    assert found[("backtracking", "slow")].level is LintLevel.ERROR
    assert ("untested", "never") in found
    assert ("untested", "broad") not in found


def test_lint_names_a_regex_that_times_out_on_a_test(tmp_path):
    """A pattern that times out on an inline test text is a regex-timeout error naming it."""
    path = _write(
        tmp_path,
        "name: p\nsettings: {regex_timeout_ms: 5}\nrules:\n  - {id: slow, pattern: '(x+x+)+y'}\n"
        f"tests:\n  - {{name: long xs, text: {'x' * 80}, expect: allow}}\n",
    )
    timeouts = [f for f in lint_policy(path) if f.code == "regex-timeout"]
    assert timeouts
    assert timeouts[0].rule_id == "slow"
    assert "long xs" in timeouts[0].message


def test_lint_of_broken_policy_lists_load_errors(tmp_path):
    """A policy that does not load yields its problems (duplicate ids by their own code)."""
    path = _write(
        tmp_path,
        "name: p\nrules:\n  - {id: a, keywords: [x]}\n  - {id: a, keywords: [y]}\n",
    )
    codes = {(f.code, f.line) for f in lint_policy(path)}
    assert ("duplicate-id", 4) in codes


def test_cli_lint_exit_codes(runner, tmp_path):
    """lint exits 0 on the shipped default, 1 on errors, and 1 on warnings with --strict."""
    assert runner.invoke(app, ["policy", "lint"]).exit_code == 0
    warn = _write(tmp_path, "name: p\nrules:\n  - {id: a, keywords: [zzqq]}\n")
    assert runner.invoke(app, ["policy", "lint", str(warn)]).exit_code == 0
    assert runner.invoke(app, ["policy", "lint", "--strict", str(warn)]).exit_code == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: p\nrules:\n  - {id: a, pattern: '^(\\w+\\s?)+$'}\n", encoding="utf-8")
    result = runner.invoke(app, ["policy", "lint", str(bad)])
    assert result.exit_code == 1
    assert "[backtracking]" in result.stdout
