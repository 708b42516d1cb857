"""Helpers for testing code that uses guardrails, and the runner of policy inline tests.

`run_policy_tests` is what ``guardrails policy test`` runs; `FakeGenerator` stands in for a
model in users' own tests (it returns canned responses and records the prompts it saw).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from guardrails.decision import Action, Verdict

if TYPE_CHECKING:
    from guardrails.guard import Guard
    from guardrails.policy import Policy, PolicyTest


@dataclass(frozen=True, slots=True)
class PolicyTestResult:
    """The outcome of one inline policy test."""

    index: int
    test: PolicyTest
    verdict: Verdict

    @property
    def actual_rules(self) -> frozenset[str]:
        """Every rule that fired, shadow findings included."""
        return frozenset(f.rule_id for f in self.verdict.findings)

    @property
    def passed(self) -> bool:
        """Action matches, and the fired rules match exactly when the test lists them."""
        if self.verdict.action is not self.test.expect:
            return False
        return self.test.rules is None or self.actual_rules == frozenset(self.test.rules)

    @property
    def label(self) -> str:
        """The test's name, or its number and the start of its text."""
        return self.test.name or f"#{self.index + 1} {self.test.text[:40]!r}"

    def explain(self) -> str:
        """Expected against actual, for a failure report."""
        expected_rules = sorted(self.test.rules) if self.test.rules is not None else "(any)"
        return (
            f"expected {self.test.expect.value} {expected_rules}, "
            f"got {self.verdict.action.value} {sorted(self.actual_rules)}"
        )


def run_policy_tests(policy: Policy, *, guard: Guard | None = None) -> list[PolicyTestResult]:
    """Run the inline ``tests`` of ``policy`` and return one result per test."""
    from guardrails.guard import Guard

    checker = guard or Guard(policy)
    return [
        PolicyTestResult(index, test, checker.check(test.text, test.stage))
        for index, test in enumerate(policy.model.tests)
    ]


@dataclass
class FakeGenerator:
    """A generator that answers from a list, for tests: ``FakeGenerator(["hi", "bye"])``.

    Call it directly for whole answers, `stream` for chunks of ``chunk_size`` characters, and
    the async twins for ``async`` code. ``prompts`` records what the guard let through.
    """

    responses: Sequence[str]
    chunk_size: int = 4
    prompts: list[str] = field(default_factory=list)
    _next: int = 0

    def _answer(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.responses:
            raise RuntimeError("FakeGenerator has no responses")
        answer = self.responses[self._next % len(self.responses)]
        self._next += 1
        return answer

    def __call__(self, prompt: str, /, **options: Any) -> str:
        return self._answer(prompt)

    def stream(self, prompt: str, /, **options: Any) -> Iterator[str]:
        answer = self._answer(prompt)
        for start in range(0, len(answer), self.chunk_size):
            yield answer[start : start + self.chunk_size]

    async def acall(self, prompt: str, /, **options: Any) -> str:
        return self._answer(prompt)

    async def astream(self, prompt: str, /, **options: Any) -> AsyncIterator[str]:
        for chunk in self.stream(prompt):
            yield chunk


__all__ = ["Action", "FakeGenerator", "PolicyTestResult", "run_policy_tests"]
