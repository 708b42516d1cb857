"""Actions, findings and verdicts: the values every check produces.

A rule or classifier category that fires yields a `Finding`; the findings of one stage merge
into one `Verdict` with the precedence ``block > redact > flag > allow``. All of them are frozen
values so they can be shared across threads, cached and compared in tests.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Action(enum.StrEnum):
    """What a finding (or a whole stage) asks the guard to do, weakest first."""

    ALLOW = "allow"
    FLAG = "flag"
    REDACT = "redact"
    BLOCK = "block"

    @property
    def rank(self) -> int:
        """Precedence: a higher rank wins when findings merge."""
        return _RANK[self]


_RANK = {Action.ALLOW: 0, Action.FLAG: 1, Action.REDACT: 2, Action.BLOCK: 3}


class Stage(enum.StrEnum):
    """Where in a guarded call a check runs."""

    INPUT = "input"
    OUTPUT = "output"


class Severity(enum.StrEnum):
    """How bad a finding is; informational for reviewers, not used for precedence."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open ``[start, end)`` range of code points in the *original* text."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"invalid span [{self.start}, {self.end})")

    def overlaps(self, other: Span) -> bool:
        """True when the two spans share at least one code point."""
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule or classifier category that fired.

    ``digest`` is a short SHA-256 of the matched original text, so the audit log can tell two
    findings apart without storing the sensitive text itself. ``replacement`` is the text a
    redaction puts in place of ``span``. Error findings (a regex timeout, a classifier failure,
    an audit-store outage) carry ``category="error"`` and the action chosen by ``on_error``.
    """

    rule_id: str
    category: str
    action: Action
    severity: Severity
    span: Span | None = None
    digest: str | None = None
    score: float | None = None
    message: str = ""
    replacement: str | None = None
    shadow: bool = False

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form for the audit log and ``--json`` output (no matched text)."""
        return {
            "rule_id": self.rule_id,
            "category": self.category,
            "action": self.action.value,
            "severity": self.severity.value,
            "span": [self.span.start, self.span.end] if self.span else None,
            "digest": self.digest,
            "score": self.score,
            "message": self.message,
            "shadow": self.shadow,
        }


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """Which policy decided: name, version and the SHA-256 digest of its source text."""

    name: str
    version: str
    digest: str

    def header(self) -> str:
        """The compact ``name@version#digest12`` form used in headers and logs."""
        return f"{self.name}@{self.version}#{self.digest[:12]}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The merged decision for one stage of one call.

    ``text`` is the text after redaction (the original text when nothing was redacted).
    ``timings_ms`` maps step names (``normalize``, ``rules``, ``classifier``) to the time
    each took.
    """

    stage: Stage
    action: Action
    findings: tuple[Finding, ...]
    text: str
    policy: PolicyRef
    timings_ms: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def blocked(self) -> bool:
        """True when the stage must not go on."""
        return self.action is Action.BLOCK

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """Ids of the enforced findings, in order of appearance, without repeats."""
        seen: dict[str, None] = {}
        for finding in self.findings:
            if not finding.shadow:
                seen.setdefault(finding.rule_id, None)
        return tuple(seen)


def merge_action(findings: tuple[Finding, ...] | list[Finding]) -> Action:
    """The strongest enforced action among ``findings`` (``allow`` when there are none).

    Shadow findings are recorded but never enforced, so they do not take part.
    """
    best = Action.ALLOW
    for finding in findings:
        if not finding.shadow and finding.action.rank > best.rank:
            best = finding.action
    return best


def apply_redactions(text: str, findings: tuple[Finding, ...] | list[Finding]) -> str:
    """Replace the spans of enforced ``redact`` findings in ``text``.

    Overlapping spans are merged first, and the replacement of the earliest finding of a
    merged group is used, so a redaction never leaves a fragment of a secret behind.
    """
    spans = sorted(
        (f.span.start, f.span.end, f.replacement if f.replacement is not None else "[REDACTED]")
        for f in findings
        if f.action is Action.REDACT and f.span is not None and not f.shadow
    )
    if not spans:
        return text
    merged: list[tuple[int, int, str]] = []
    for start, end, replacement in spans:
        if merged and start < merged[-1][1]:
            first_start, first_end, first_replacement = merged[-1]
            merged[-1] = (first_start, max(first_end, end), first_replacement)
        else:
            merged.append((start, end, replacement))
    out: list[str] = []
    pos = 0
    for start, end, replacement in merged:
        out.append(text[pos:start])
        out.append(replacement)
        pos = end
    out.append(text[pos:])
    return "".join(out)


__all__ = [
    "Action",
    "Finding",
    "PolicyRef",
    "Severity",
    "Span",
    "Stage",
    "Verdict",
    "apply_redactions",
    "merge_action",
]
