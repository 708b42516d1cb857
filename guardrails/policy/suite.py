"""Policy test suites: inline tests and separate test files, run and reported case by case.

A separate test file keeps cases beside (not inside) a policy, e.g. a tenant's regression
cases for a shipped pack::

    policy: ../policies/finance.yaml   # relative to this file, or a shipped pack name
    tests:
      - {name: promo copy, text: "Guaranteed returns!", stage: output, expect: block}

Each case becomes a `CaseReport` that knows where it was declared (file and line) and can
say what differed: the action expected against the one taken, the rules that were expected
but did not fire, the rules that fired unexpectedly, and any error finding (a regex that
timed out on the case's text names its rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from guardrails.exceptions import PolicyError, PolicyProblem
from guardrails.policy.loading import load_policy, resolve_policy_path
from guardrails.policy.model import Policy, PolicyTest
from guardrails.policy.reading import parse_policy_yaml, read_policy_file, to_plain
from guardrails.testing import PolicyTestResult

if TYPE_CHECKING:
    from guardrails.guard import Guard

_TEST_FILE_KEYS = frozenset({"policy", "tests", "$schema"})


class TestFileModel(BaseModel):
    """The schema of a separate policy test file."""

    __test__ = False  # not a pytest class, whatever its name says
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_: str | None = Field(None, alias="$schema")
    policy: str | None = Field(None, description="Policy under test (path or pack name).")
    tests: tuple[PolicyTest, ...] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class TestSuite:
    """Cases to run against one policy, and where each case was declared."""

    __test__ = False

    policy: Policy
    source: str
    tests: tuple[PolicyTest, ...]
    lines: tuple[int | None, ...]


@dataclass(frozen=True, slots=True)
class CaseReport:
    """One case's outcome, located in the file that declared it."""

    source: str
    line: int | None
    result: PolicyTestResult

    @property
    def passed(self) -> bool:
        """Action matched, the rules matched when listed, and nothing errored."""
        return self.result.passed and not self.errors

    @property
    def where(self) -> str:
        """``file:line`` of the case."""
        return f"{self.source}:{self.line}" if self.line is not None else self.source

    @property
    def errors(self) -> tuple[str, ...]:
        """Failures inside the guard on this text (a regex timeout, a classifier error)."""
        return tuple(
            f"rule '{f.rule_id}': {f.message}"
            for f in self.result.verdict.findings
            if f.category == "error"
        )

    def diff(self) -> list[str]:
        """What differed, one line each: ``- expected`` / ``+ actual`` in diff style."""
        test, verdict = self.result.test, self.result.verdict
        lines: list[str] = []
        if verdict.action is not test.expect:
            lines += [f"action: - {test.expect.value}", f"        + {verdict.action.value}"]
        if test.rules is not None:
            expected, actual = set(test.rules), set(self.result.actual_rules)
            lines += [f"rules:  - {r} (expected, did not fire)" for r in sorted(expected - actual)]
            lines += [f"rules:  + {r} (fired, not expected)" for r in sorted(actual - expected)]
        lines += [f"error:  {e}" for e in self.errors]
        return lines


def _locate_tests(data: object) -> tuple[int | None, ...]:
    tests = data.get("tests") if isinstance(data, CommentedMap) else None
    if not isinstance(tests, CommentedSeq):
        return ()
    return tuple(tests.lc.item(i)[0] + 1 for i in range(len(tests)))


def _read_yaml(path: Path) -> object:
    return parse_policy_yaml(read_policy_file(path), str(path))


def is_test_file(data: object) -> bool:
    """Whether a loaded YAML document is a separate test file rather than a policy."""
    return isinstance(data, dict) and "tests" in data and set(data) <= _TEST_FILE_KEYS


def load_suite(path: str | Path, *, policy: str | None = None) -> TestSuite:
    """A policy's inline tests, or a separate test file's cases with the policy it names.

    ``policy`` (``--policy``) replaces a test file's own ``policy:``; for a policy file it
    is ignored.

    Raises:
        PolicyError: the file or its policy does not load, the test file is malformed, names
            no policy, or a case names a rule the policy does not have.
    """
    resolved = resolve_policy_path(path)
    data = _read_yaml(resolved)
    if not is_test_file(data):
        loaded = load_policy(resolved)
        return TestSuite(loaded, str(resolved), loaded.model.tests, _locate_tests(data))
    assert isinstance(data, CommentedMap)
    lines = _locate_tests(data)
    try:
        model = TestFileModel.model_validate(to_plain(data))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            line = lines[loc[1]] if len(loc) > 1 and isinstance(loc[1], int) else None
            field = ".".join(str(p) for p in loc)
            problems.append(
                PolicyProblem(str(resolved), line, None, None, f"{field}: {error['msg']}")
            )
        raise PolicyError(problems) from None
    target = policy or model.policy
    if target is None:
        raise PolicyError(
            [PolicyProblem(str(resolved), 1, 1, None, "names no policy: add policy: or --policy")]
        )
    if policy is None:
        target = str(resolve_policy_path(target, base_dir=resolved.parent))
    loaded = load_policy(target)
    known = {rule.id for rule in loaded.rules}
    unknown = [
        PolicyProblem(str(resolved), lines[i] if i < len(lines) else None, None, rule_id,
                      f"test #{i + 1} names a rule that {loaded.path} does not have")
        for i, test in enumerate(model.tests)
        for rule_id in test.rules or ()
        if rule_id not in known
    ]  # fmt: skip
    if unknown:
        raise PolicyError(unknown)
    return TestSuite(loaded, str(resolved), model.tests, lines)


def run_suite(
    suite: TestSuite, *, guard: Guard | None = None, match: str | None = None
) -> list[CaseReport]:
    """Run every case of ``suite`` (only those whose label contains ``match``, if given)."""
    from guardrails.guard import Guard

    checker = guard or Guard(suite.policy)
    reports = []
    for index, test in enumerate(suite.tests):
        result = PolicyTestResult(index, test, checker.check(test.text, test.stage))
        if match is not None and match.lower() not in result.label.lower():
            continue
        line = suite.lines[index] if index < len(suite.lines) else None
        reports.append(CaseReport(suite.source, line, result))
    return reports


__all__ = ["CaseReport", "TestFileModel", "TestSuite", "is_test_file", "load_suite", "run_suite"]
