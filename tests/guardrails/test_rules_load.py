"""A regex budget counts work, not waiting: a rule starved of CPU is retried, a rule that
really backtracks still times out, so a verdict does not depend on the machine's load."""

from __future__ import annotations

import time

import pytest

from guardrails.decision import Stage
from guardrails.policy import Policy
from guardrails.rules import RuleEngine

POLICY = Policy.from_content(
    "name: load\nsettings: {regex_timeout_ms: 20}\nrules:\n"
    "  - {id: word, pattern: 'hunter[a-z]+', action: redact}\n"
)


def test_a_rule_starved_of_cpu_is_retried_not_timed_out(monkeypatch):
    """The first attempt's budget runs out while its thread sleeps (no CPU used, as when a
    busy machine deschedules it): the rule runs again and the verdict is the one alone."""
    engine = RuleEngine(POLICY)
    alone = engine.scan("the password is huntertwo, ok", Stage.INPUT).findings
    real_run_once = engine._run_once
    attempts = []

    def starved_once(*args, **kwargs):
        attempts.append(1)
        if len(attempts) == 1:
            time.sleep(engine.timeout_s * 1.5)  # wall time passes, CPU time does not
            raise TimeoutError
        return real_run_once(*args, **kwargs)

    monkeypatch.setattr(engine, "_run_once", starved_once)
    loaded = engine.scan("the password is huntertwo, ok", Stage.INPUT).findings
    assert len(attempts) == 2
    assert [f.rule_id for f in loaded] == [f.rule_id for f in alone] == ["word"]
    assert [f.span for f in loaded] == [f.span for f in alone]


def test_a_rule_that_burns_its_budget_still_times_out():
    """A catastrophic pattern uses its whole budget in CPU: that is a timeout finding."""
    policy = Policy.from_content(
        "name: cat\nsettings: {regex_timeout_ms: 20}\nrules:\n"
        "  - {id: evil, pattern: '(a|aa)+$', action: flag}\n"
    )
    findings = RuleEngine(policy).scan("a" * 60 + "!", Stage.INPUT).findings
    assert [f.rule_id for f in findings] == ["evil"]
    assert "timed out" in (findings[0].message or "")


@pytest.mark.parametrize("starved_attempts", [4, 10])
def test_a_rule_starved_every_time_eventually_counts_as_a_timeout(monkeypatch, starved_attempts):
    """Retries are bounded: a rule whose every attempt is starved ends as a timeout finding."""
    engine = RuleEngine(POLICY)

    def always_starved(*args, **kwargs):
        time.sleep(engine.timeout_s * 1.1)
        raise TimeoutError

    monkeypatch.setattr(engine, "_run_once", always_starved)
    findings = engine.scan("the password is huntertwo", Stage.INPUT).findings
    assert [f.rule_id for f in findings] == ["word"]
    assert "timed out" in (findings[0].message or "")


def test_a_check_starved_past_its_deadline_is_checked_again(monkeypatch):
    """The whole-check deadline counts work too: a check that ran past ``check_timeout_ms``
    while its thread waited for a core is run again, and the verdict is the one alone."""
    from guardrails.pipeline import Pipeline

    policy = Policy.from_content(
        "name: d\nsettings: {check_timeout_ms: 30}\nrules:\n"
        "  - {id: word, pattern: 'hunter[a-z]+', action: redact}\n"
    )
    pipeline = Pipeline(policy)
    alone = pipeline.check("the password is huntertwo", Stage.INPUT)
    real_scan = pipeline.engine.scan
    calls = []

    def starved_once(text, stage, **options):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.05)  # past the 30 ms deadline, with no CPU used
            return type(real_scan(text, stage))(
                findings=[pipeline.engine.error_finding("check_timeout", "past the deadline")]
            )
        return real_scan(text, stage, **options)

    monkeypatch.setattr(pipeline.engine, "scan", starved_once)
    loaded = pipeline.check("the password is huntertwo", Stage.INPUT)
    assert len(calls) == 2
    assert loaded.action == alone.action
    assert loaded.rule_ids == alone.rule_ids == ("word",)
