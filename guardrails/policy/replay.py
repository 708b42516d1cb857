"""Replaying a candidate policy over traffic stored in the audit log.

Each stored event is checked again, stage by stage, with the candidate, and the candidate's
verdict is compared with the one recorded (the event's ``input_action`` / ``output_action``
and findings). What the stored text allows depends on the policy that recorded it:

- ``full``: the exact text is there; the replay is exact.
- ``redacted``: spans that the recording policy redacted or blocked were replaced before
  storage (``[EMAIL]``, ``[BLOCK:rule]``), so nothing can re-examine them. The recorded
  findings for those spans are carried over to the candidate's rule of the same id when it is
  still enabled for that stage (with the candidate's action and mode); a candidate rule can
  never newly fire inside them. Everything else in the text is checked for real. Such events
  are counted as ``partial``.
- ``hash``: only a SHA-256 of the text was kept. These events cannot be replayed at all and
  are counted as ``skipped_hash``; a team that wants replay must store ``redacted`` or
  ``full`` text.

An output is only known when the recorded prompt got through: a prompt the candidate would
newly allow after a recorded block has no output to replay.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from guardrails.decision import Action, Finding, Stage, merge_action
from guardrails.policy.model import Mode, Policy

if TYPE_CHECKING:
    from audit import AuditStore
    from audit.store import StoredEvent

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """``7d``, ``24h``, ``30m``, ``2w`` before now, or an ISO date/time (UTC if naive).

    Raises:
        ValueError: neither a duration nor an ISO date.
    """
    match = _DURATION.match(value.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"cannot read {value!r} as a duration (7d, 24h, 30m, 2w) or an ISO date"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ReplayExample:
    """One stage of one stored event whose outcome the candidate changes."""

    request_id: str
    stage: Stage
    before: str
    after: str
    text: str
    rules_before: tuple[str, ...]
    rules_after: tuple[str, ...]


@dataclass(slots=True)
class RuleChange:
    """How often a rule fires differently under the candidate, with a few examples."""

    rule_id: str
    newly_fired: int = 0
    stopped_firing: int = 0
    examples: list[ReplayExample] = field(default_factory=list)


@dataclass(slots=True)
class ReplayReport:
    """What the candidate would have changed on the replayed traffic."""

    candidate: str
    events_read: int = 0
    limit_reached: bool = False
    stages_replayed: int = 0
    partial: int = 0
    skipped_hash: int = 0
    unknown_output: int = 0
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    newly_blocked: list[ReplayExample] = field(default_factory=list)
    newly_allowed: list[ReplayExample] = field(default_factory=list)
    newly_blocked_count: int = 0
    newly_allowed_count: int = 0
    rules: dict[str, RuleChange] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        """Stages whose action differs under the candidate."""
        return sum(self.transitions.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``--json``)."""

        def example(e: ReplayExample) -> dict[str, Any]:
            return {
                "request_id": e.request_id,
                "stage": e.stage.value,
                "before": e.before,
                "after": e.after,
                "text": e.text,
                "rules_before": list(e.rules_before),
                "rules_after": list(e.rules_after),
            }

        return {
            "candidate": self.candidate,
            "events_read": self.events_read,
            "limit_reached": self.limit_reached,
            "stages_replayed": self.stages_replayed,
            "partial": self.partial,
            "skipped_hash": self.skipped_hash,
            "unknown_output": self.unknown_output,
            "changed": self.changed,
            "transitions": [
                {"before": b, "after": a, "count": n} for (b, a), n in self.transitions.items()
            ],
            "newly_blocked": self.newly_blocked_count,
            "newly_allowed": self.newly_allowed_count,
            "newly_blocked_examples": [example(e) for e in self.newly_blocked],
            "newly_allowed_examples": [example(e) for e in self.newly_allowed],
            "rules": [
                {
                    "rule_id": c.rule_id,
                    "newly_fired": c.newly_fired,
                    "stopped_firing": c.stopped_firing,
                    "examples": [example(e) for e in c.examples],
                }
                for c in sorted(self.rules.values(), key=lambda c: c.rule_id)
            ],
        }


def _carried(candidate: Policy, stage: Stage, recorded: list[dict[str, Any]]) -> list[Finding]:
    """Recorded findings whose text the stored (redacted) copy hides, re-attributed to the
    candidate's rule of the same id."""
    rules = {rule.id: rule for rule in candidate.rules}
    out: list[Finding] = []
    for found in recorded:
        if found.get("span") is None or found.get("action") not in ("redact", "block"):
            continue
        rule = rules.get(str(found.get("rule_id")))
        if rule is None or not rule.enabled or stage not in rule.applies_to:
            continue
        out.append(
            Finding(
                rule_id=rule.id,
                category=rule.category,
                action=rule.action,
                severity=rule.severity,
                shadow=(rule.mode or candidate.settings.mode) is Mode.SHADOW,
            )
        )
    return out


def replay(
    candidate: Policy,
    store: AuditStore,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    tenant: str | None = None,
    limit: int = 10_000,
    examples: int = 3,
    excerpt: int = 160,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Replay ``candidate`` over the stored events in the window; see the module docstring.

    Args:
        limit: read at most this many events (oldest first).
        examples: keep this many examples per rule and per newly blocked/allowed list.
        excerpt: stored text in examples is cut to this many characters.
        progress: called with 1 after each event (for a progress bar).
    """
    from guardrails.guard import Guard

    guard = Guard(candidate)
    report = ReplayReport(candidate=candidate.ref.header())
    events = store.events(since=since, until=until, tenant=tenant, limit=limit, newest_first=False)
    report.events_read = len(events)
    report.limit_reached = len(events) >= limit
    for event in events:
        if event.text_storage == "hash":
            report.skipped_hash += 1
            continue
        _replay_event(guard, candidate, event, report, examples, excerpt)
        if progress is not None:
            progress(1)
    return report


def _replay_event(
    guard: Any,
    candidate: Policy,
    event: StoredEvent,
    report: ReplayReport,
    examples: int,
    excerpt: int,
) -> None:
    redacted = event.text_storage == "redacted"
    counted_partial = False
    stages = ((Stage.INPUT, event.prompt, event.input_action),
              (Stage.OUTPUT, event.output, event.output_action))  # fmt: skip
    for stage, text, before in stages:
        if text is None or before is None:
            continue
        recorded = [f for f in event.findings if f.get("stage") == stage.value]
        verdict = guard.check(text, stage)
        findings = list(verdict.findings)
        if redacted:
            carried = _carried(candidate, stage, recorded)
            if any(f.get("span") is not None for f in recorded) and not counted_partial:
                report.partial += 1
                counted_partial = True
            findings += carried
        after = merge_action(findings).value
        report.stages_replayed += 1
        rules_before = tuple(sorted({str(f.get("rule_id")) for f in recorded}))
        rules_after = tuple(sorted({f.rule_id for f in findings}))
        example = ReplayExample(
            event.request_id,
            stage,
            before,
            after,
            text[:excerpt] + ("…" if len(text) > excerpt else ""),
            rules_before,
            rules_after,
        )
        for rule_id in set(rules_after) - set(rules_before):
            change = report.rules.setdefault(rule_id, RuleChange(rule_id))
            change.newly_fired += 1
            if len(change.examples) < examples:
                change.examples.append(example)
        for rule_id in set(rules_before) - set(rules_after):
            change = report.rules.setdefault(rule_id, RuleChange(rule_id))
            change.stopped_firing += 1
            if len(change.examples) < examples:
                change.examples.append(example)
        if after == before:
            continue
        report.transitions[(before, after)] += 1
        if after == Action.BLOCK.value:
            report.newly_blocked_count += 1
            if len(report.newly_blocked) < examples:
                report.newly_blocked.append(example)
        elif before == Action.BLOCK.value:
            report.newly_allowed_count += 1
            if len(report.newly_allowed) < examples:
                report.newly_allowed.append(example)
            if stage is Stage.INPUT and event.output is None:
                report.unknown_output += 1


__all__ = ["ReplayExample", "ReplayReport", "RuleChange", "parse_since", "replay"]
