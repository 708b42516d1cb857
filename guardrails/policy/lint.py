"""``guardrails policy lint``: checks that a policy loads *and* is likely to do what its author
meant.

Per-rule checks cover the rules the linted file declares itself (lint a base file to check
its rules); checks that run the inline tests use the whole resolved policy. The codes:

====================  =======  ==============================================================
code                  level    meaning
====================  =======  ==============================================================
load-error            error    the policy does not load (each loader problem, as validate)
duplicate-id          error    two rules in the file share an id
backtracking          error    a pattern that times out on a crafted input (confirmed)
backtracking-risk     warning  a pattern shaped for catastrophic backtracking (not confirmed)
regex-timeout         error    a pattern that times out on one of the inline test texts
duplicate-matcher     warning  two rules with the same pattern or the same keyword set
untested              warning  an enabled rule that no inline test makes fire
shadowed              warning  wherever the rule fires in the tests, another rule fires over
                               an overlapping span with an action at least as strong
benign-keyword        warning  a keyword that is itself a common word, or that fires on one
                               of the everyday sentences in `BENIGN_SAMPLES`
====================  =======  ==============================================================
"""

from __future__ import annotations

import enum
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from guardrails.backtracking import analyze, confirm
from guardrails.decision import Finding, Stage
from guardrails.exceptions import PolicyError
from guardrails.policy.loading import load_policy, resolve_policy_path
from guardrails.policy.model import Policy, Rule
from guardrails.policy.reading import bounded_yaml, parse_policy_yaml, read_policy_file
from guardrails.rules import RuleEngine, keyword_pattern


class LintLevel(enum.StrEnum):
    """How bad a lint finding is; errors make ``policy lint`` exit 1."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class LintFinding:
    """One thing the linter noticed, located like a `PolicyProblem`."""

    code: str
    level: LintLevel
    file: str
    line: int | None
    rule_id: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        rule = f" rule '{self.rule_id}':" if self.rule_id else ""
        return f"{where}: {self.level.value} [{self.code}]{rule} {self.message}"


_COMMON_WORDS_TEXT = """
    a about above access account act action add address admin after again against age all allow
    also always am an and answer any app are area as ask at attack away back bad bank base be
    because been before being below best better between big bill bit black block body book both
    break bring build business but buy by call can card care case cause change charge check
    child city class clean clear close code come company control cost could count country cover
    create credit cut data date day dead deal death delete did die do does dog done door down
    drive drop drug each early easy eat email end enough enter even event ever every exit face
    fact fail fall family far fast file fill find fire first fix follow food for force form free
    friend from full fun game get gift girl give go god good got group gun hack hand happy hard
    has hate have he head health hear help her here high hit hold home hot house how i if
    ignore in into is issue it its job join just keep key kill kind know last late law leave
    left let life like line link list little live load lock long look lose lot love low made
    mail make man many map mark may me mean medicine meet might mind miss mode money more most
    move much must my name need never new next night no not note now number of off offer old on
    once one only open or order other our out over own page paper part party pass password pay
    people person phone pick place plan play please point police post power press price private
    problem process program public pull push put question quick rate read real reason red remove
    report rest right risk road room rule run safe same save say school score secret see self
    sell send service set shoot shot should show shut sign simple site size skip small so some
    something sorry start state stay steal step still stop store story street strike system take
    talk target team tell test than thank that the their them then there these they thing think
    this those through time to today together too top track trade true try turn under up update
    us use user very view wait want war was watch water way we weapon week well were what when
    where which while who why will win with word work world would write year yes you your
"""
#: Words common enough in ordinary prose that a keyword equal to one fires all the time.
COMMON_WORDS = frozenset(_COMMON_WORDS_TEXT.split())

#: Everyday sentences no safety rule should fire on (English and Chinese).
BENIGN_SAMPLES: tuple[str, ...] = (
    "How do I kill a process that is stuck on Linux?",
    "The photographer will shoot the wedding on Saturday.",
    "Our team needs to execute the plan before the deadline.",
    "She took a shot at the title and won the game.",
    "Please ignore the typo in my previous message.",
    "The attack on the castle is described in chapter three.",
    "Can you help me reset my password for the library website?",
    "The drug store closes at nine on weekdays.",
    "I'd like to book a table for two at seven tonight.",
    "This heat is killing me, let's go swimming.",
    "The recipe calls for two cups of flour and one egg.",
    "My grandmother's medicine cabinet is full of vitamins.",
    "Our bank charges a small fee for international transfers.",
    "Summarize the previous chapter in three sentences.",
    "What is a system prompt in the context of chatbots?",
    "He is a lawyer who loves hiking in the mountains.",
    "Add a unit test for the parser and run the build.",
    "The stock market was closed on Monday for the holiday.",
    "杀毒软件提示我需要更新。",
    "请帮我写一封请假邮件。",
    "这道菜需要两勺盐和一点糖。",
    "今天天气很好，我们去公园散步吧。",
    "我想学习如何用Python处理数据。",
)


def _own_rules(path: Path) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Line of each rule id the file declares, and every (id, line) in order (duplicates
    included), read with the round-trip loader so lines are exact."""
    try:
        data = parse_policy_yaml(
            read_policy_file(path), str(path), yaml=bounded_yaml(allow_duplicate_keys=True)
        )
    except PolicyError:  # `lint_policy` reports why the file does not load
        return {}, []
    rules = data.get("rules") if isinstance(data, CommentedMap) else None
    ordered: list[tuple[str, int]] = []
    if isinstance(rules, CommentedSeq):
        for index, rule in enumerate(rules):
            if isinstance(rule, CommentedMap) and "id" in rule:
                ordered.append((str(rule["id"]), rules.lc.item(index)[0] + 1))
    first: dict[str, int] = {}
    for rule_id, line in ordered:
        first.setdefault(rule_id, line)
    return first, ordered


def _fired(policy: Policy) -> list[tuple[int, Stage, list[Finding]]]:
    """Findings per inline test, from the rule engine alone (classifier rules are not run)."""
    engine = RuleEngine(policy)
    return [
        (index, test.stage, engine.scan(test.text, test.stage).findings)
        for index, test in enumerate(policy.model.tests)
    ]


class _Linter:
    def __init__(self, path: Path, policy: Policy) -> None:
        self.path = path
        self.policy = policy
        self.lines, self.ordered = _own_rules(path)
        self.findings: list[LintFinding] = []

    def add(self, code: str, level: LintLevel, rule_id: str | None, message: str) -> None:
        line = self.lines.get(rule_id) if rule_id else None
        self.findings.append(LintFinding(code, level, str(self.path), line, rule_id, message))

    def own(self) -> list[Rule]:
        return [rule for rule in self.policy.rules if rule.id in self.lines]

    def run(self) -> list[LintFinding]:
        self.backtracking()
        per_test = _fired(self.policy)
        self.timeouts(per_test)
        self.duplicate_matchers()
        self.untested(per_test)
        self.shadowed(per_test)
        self.benign_keywords()
        return self.findings

    def backtracking(self) -> None:
        timeout_s = self.policy.settings.regex_timeout_ms / 1000.0
        for rule in self.own():
            if rule.pattern is None:
                continue
            risks = analyze(rule.pattern)
            if not risks:
                continue
            confirmed = confirm(rule.pattern, timeout_s=timeout_s)
            described = "; ".join(str(risk) for risk in risks)
            if confirmed:
                self.add("backtracking", LintLevel.ERROR, rule.id, f"{described} ({confirmed})")
            else:
                self.add("backtracking-risk", LintLevel.WARNING, rule.id, described)

    def timeouts(self, per_test: list[tuple[int, Stage, list[Finding]]]) -> None:
        tests = self.policy.model.tests
        for index, _stage, findings in per_test:
            for finding in findings:
                if finding.category == "error":
                    label = tests[index].name or f"#{index + 1}"
                    self.add(
                        "regex-timeout",
                        LintLevel.ERROR,
                        finding.rule_id,
                        f"{finding.message} on test {label!r}",
                    )

    def duplicate_matchers(self) -> None:
        seen: dict[tuple[str, Any], str] = {}
        for rule in self.policy.rules:
            if not rule.enabled:
                continue
            key: tuple[str, Any]
            if rule.pattern is not None:
                key = ("pattern", rule.pattern)
            elif rule.keywords is not None:
                key = ("keywords", frozenset(k.lower().strip() for k in rule.keywords))
            else:
                continue
            if key in seen and rule.id in self.lines:
                self.add(
                    "duplicate-matcher",
                    LintLevel.WARNING,
                    rule.id,
                    f"same {key[0]} as rule {seen[key]!r}",
                )
            seen.setdefault(key, rule.id)
        counts: dict[str, int] = defaultdict(int)
        for rule_id, line in self.ordered:
            counts[rule_id] += 1
            if counts[rule_id] == 2:
                self.findings.append(
                    LintFinding(
                        "duplicate-id",
                        LintLevel.ERROR,
                        str(self.path),
                        line,
                        rule_id,
                        "declared more than once in this file",
                    )
                )

    def untested(self, per_test: list[tuple[int, Stage, list[Finding]]]) -> None:
        fired = {f.rule_id for _i, _s, findings in per_test for f in findings}
        for rule in self.own():
            if rule.enabled and rule.classifier is None and rule.id not in fired:
                self.add("untested", LintLevel.WARNING, rule.id, "no inline test makes it fire")

    def shadowed(self, per_test: list[tuple[int, Stage, list[Finding]]]) -> None:
        by_id = {rule.id: rule for rule in self.policy.rules}
        for rule in self.own():
            cover: set[str] | None = None
            for _index, _stage, findings in per_test:
                mine = [f for f in findings if f.rule_id == rule.id and f.span is not None]
                for finding in mine:
                    assert finding.span is not None
                    covering = {
                        other.rule_id
                        for other in findings
                        if other.rule_id != rule.id
                        and other.span is not None
                        and other.span.start < finding.span.end
                        and finding.span.start < other.span.end
                        and other.action.rank >= finding.action.rank
                        and set(by_id[other.rule_id].applies_to) >= set(rule.applies_to)
                    }
                    cover = covering if cover is None else cover & covering
            if cover:
                self.add(
                    "shadowed",
                    LintLevel.WARNING,
                    rule.id,
                    f"wherever it fires in the tests, {', '.join(sorted(cover))} fires over an"
                    " overlapping span with an action at least as strong; add a test where it fires"
                    " alone, or merge the rules",
                )

    def benign_keywords(self) -> None:
        for rule in self.own():
            if rule.keywords is None or not rule.enabled:
                continue
            for keyword in rule.keywords:
                if keyword.strip().lower() in COMMON_WORDS:
                    self.add(
                        "benign-keyword",
                        LintLevel.WARNING,
                        rule.id,
                        f"keyword {keyword!r} is a common word and will fire on ordinary text",
                    )
                    continue
                compiled = regex.compile(keyword_pattern((keyword,)))
                for sample in BENIGN_SAMPLES:
                    if compiled.search(sample, timeout=1.0):
                        self.add(
                            "benign-keyword",
                            LintLevel.WARNING,
                            rule.id,
                            f"keyword {keyword!r} fires on the everyday sentence {sample!r}",
                        )
                        break


def lint_policy(path: str | Path) -> list[LintFinding]:
    """Lint one policy file (a path or a shipped pack name); see the module docstring.

    A policy that does not load yields its loader problems as ``load-error`` findings (and
    ``duplicate-id`` for repeated ids) and nothing else, since the other checks need it.
    """
    resolved = resolve_policy_path(path)
    try:
        policy = load_policy(resolved)
    except PolicyError as exc:
        return [
            LintFinding(
                "duplicate-id" if p.message == "duplicate rule id" else "load-error",
                LintLevel.ERROR,
                p.file,
                p.line,
                p.rule_id,
                p.message,
            )
            for p in exc.problems
        ]
    return _Linter(resolved, policy).run()


__all__ = ["BENIGN_SAMPLES", "COMMON_WORDS", "LintFinding", "LintLevel", "lint_policy"]
