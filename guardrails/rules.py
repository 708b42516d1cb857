"""The rule engine: compiled pattern and keyword rules, run over normalized views of a text.

Rules are compiled once per policy. A scan normalizes the text once per distinct set of
normalization steps the rules ask for (usually two views: a light one for PII and secrets,
where digits must stay digits, and the full one for prompt-injection phrasing), runs every
rule of the stage with a bounded regex call, checks validators, and maps each match back to
the original text. A regex timeout becomes an error finding handled by ``on_error``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import regex

from guardrails.decision import Action, Finding, Severity, Span, Stage
from guardrails.normalize import NormalizedText, Step, canonical_steps, normalize
from guardrails.policy import Mode, OnError, Policy, Rule
from guardrails.validators import get_validator

_CJK = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]")


def keyword_pattern(keywords: tuple[str, ...]) -> str:
    """One case-insensitive alternation for ``keywords``.

    Latin phrases match on word boundaries (``kill`` does not fire inside ``skill``) with any
    run of whitespace between their words; CJK phrases, which have no spaces, match anywhere.
    """

    def phrase(keyword: str) -> str:
        return r"\s+".join(regex.escape(word) for word in keyword.split())

    ordered = sorted({k.strip() for k in keywords}, key=len, reverse=True)
    bounded = [phrase(k) for k in ordered if not _CJK.search(k)]
    free = [phrase(k) for k in ordered if _CJK.search(k)]
    parts = []
    if bounded:
        parts.append(r"(?<![\p{L}\p{N}_])(?:" + "|".join(bounded) + r")(?![\p{L}\p{N}_])")
    if free:
        parts.append("(?:" + "|".join(free) + ")")
    return "(?i:" + "|".join(parts) + ")"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A pattern or keyword rule ready to run."""

    rule: Rule
    pattern: regex.Pattern[str]
    view: tuple[Step, ...]
    validator: Callable[[str], bool] | None
    shadow: bool
    anchors: tuple[str, ...] = ()


@dataclass(slots=True)
class RuleScan:
    """What one scan found.

    ``holds`` (partial scans only) are original offsets where a match may still be growing: a
    partial match at the end of the text, or a complete one that touches the end. A stream
    must not release text from there on.
    """

    findings: list[Finding] = field(default_factory=list)
    holds: list[int] = field(default_factory=list)
    views_ms: float = 0.0


def _anchors(rule: Rule) -> tuple[str, ...]:
    """The literals a rule's matches must contain: declared ones, or for keyword rules the
    longest word of each phrase (rarer than short ones; a CJK phrase is its own anchor)."""
    if rule.anchors is not None:
        return tuple(sorted({a.lower() for a in rule.anchors}))
    if rule.keywords is not None:
        return tuple(sorted({max(k.split(), key=len).lower() for k in rule.keywords}))
    return ()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class RuleEngine:
    """Runs a policy's pattern and keyword rules. Thread-safe: it keeps no per-call state."""

    def __init__(self, policy: Policy) -> None:
        settings = policy.settings
        self.policy = policy
        self.timeout_s = settings.regex_timeout_ms / 1000.0
        self.window = settings.anchor_window_chars
        self.on_error = settings.on_error
        self._by_stage: dict[Stage, list[CompiledRule]] = {stage: [] for stage in Stage}
        for rule in policy.rules:
            if not rule.enabled or rule.classifier is not None:
                continue
            source = (
                rule.pattern if rule.pattern is not None else keyword_pattern(rule.keywords or ())
            )
            compiled = CompiledRule(
                rule=rule,
                pattern=regex.compile(source),
                view=canonical_steps(
                    rule.normalization if rule.normalization is not None else settings.normalization
                ),
                validator=get_validator(rule.validator) if rule.validator else None,
                shadow=(rule.mode or settings.mode) is Mode.SHADOW,
                anchors=_anchors(rule),
            )
            for stage in rule.applies_to:
                self._by_stage[stage].append(compiled)

    def rules_for(self, stage: Stage) -> list[CompiledRule]:
        """The enabled pattern/keyword rules of ``stage``, in policy order."""
        return self._by_stage[stage]

    def scan(self, text: str, stage: Stage, *, partial: bool = False) -> RuleScan:
        """Run every rule of ``stage`` over ``text``.

        With ``partial=True`` (streaming) matches that reach the end of ``text`` are reported
        as holds too, since more text could still complete or extend them.
        """
        result = RuleScan()
        views: dict[tuple[Step, ...], NormalizedText] = {}
        lowered: dict[tuple[Step, ...], str | None] = {}
        for compiled in self._by_stage[stage]:
            view = views.get(compiled.view)
            if view is None:
                view = views[compiled.view] = self._view(text, compiled.view, views)
            windows: list[tuple[int, int]] | None = None
            if compiled.anchors:
                if compiled.view not in lowered:
                    low = view.text.lower()
                    # lower() may change the length (e.g. U+0130); then offsets would lie.
                    lowered[compiled.view] = low if len(low) == len(view.text) else None
                low_text = lowered[compiled.view]
                if low_text is not None:
                    windows = self._windows(low_text, compiled.anchors, partial)
                    if not windows:
                        continue
            self._run(compiled, view, result, partial, windows)
        result.findings.sort(key=lambda f: (f.span.start if f.span else -1, f.rule_id))
        return result

    @staticmethod
    def _view(
        text: str, steps: tuple[Step, ...], views: dict[tuple[Step, ...], NormalizedText]
    ) -> NormalizedText:
        """Normalize, starting from the longest cached view whose steps are a prefix."""
        best: tuple[Step, ...] = ()
        for done in views:
            if len(done) > len(best) and steps[: len(done)] == done:
                best = done
        if best:
            return normalize(text, steps, start=views[best], done=best)
        return normalize(text, steps)

    def _windows(
        self, low_text: str, anchors: tuple[str, ...], partial: bool
    ) -> list[tuple[int, int]]:
        """Merged ``[start, end)`` ranges around every anchor occurrence (plus, for a stream,
        the tail, where an anchor may still be arriving)."""
        radius = self.window
        size = len(low_text)
        spans: list[tuple[int, int]] = []
        for anchor in anchors:
            index = low_text.find(anchor)
            while index != -1:
                spans.append((max(0, index - radius), min(size, index + len(anchor) + radius)))
                index = low_text.find(anchor, index + 1)
        if partial:
            spans.append((max(0, size - radius), size))
        if not spans:
            return []
        spans.sort()
        merged = [spans[0]]
        for start, end in spans[1:]:
            if start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged

    def _run(
        self,
        compiled: CompiledRule,
        view: NormalizedText,
        result: RuleScan,
        partial: bool,
        windows: list[tuple[int, int]] | None = None,
    ) -> None:
        for start, end in windows or [(0, len(view.text))]:
            self._run_window(compiled, view, result, partial, start, end)

    def _run_window(
        self,
        compiled: CompiledRule,
        view: NormalizedText,
        result: RuleScan,
        partial: bool,
        window_start: int,
        window_end: int,
    ) -> None:
        rule = compiled.rule
        end_of_text = len(view.text)
        # Only a window that reaches the real end of the text can hold a growing match.
        partial = partial and window_end == end_of_text
        try:
            matches = compiled.pattern.finditer(
                view.text, window_start, window_end, partial=partial, timeout=self.timeout_s
            )
            for match in matches:
                group = rule.group if rule.group is not None else 0
                start, end = match.span(group)
                if start < 0:
                    continue
                if partial and (match.partial or match.end() >= end_of_text):
                    result.holds.append(view.to_original(match.start(), match.start())[0])
                    if match.partial:
                        continue
                if start == end:
                    continue
                original_start, original_end = view.to_original(start, end)
                matched = view.original[original_start:original_end]
                if compiled.validator is not None and not compiled.validator(view.text[start:end]):
                    continue
                result.findings.append(
                    Finding(
                        rule_id=rule.id,
                        category=rule.category,
                        action=rule.action,
                        severity=rule.severity,
                        span=Span(original_start, original_end),
                        digest=_digest(matched),
                        message=rule.message,
                        replacement=rule.redaction,
                        shadow=compiled.shadow,
                    )
                )
        except TimeoutError:
            result.findings.append(
                self.error_finding(rule.id, f"regex timed out after {self.timeout_s * 1000:.0f} ms")
            )

    def error_finding(self, rule_id: str, message: str) -> Finding:
        """A finding for a failure inside the guard, with the action ``on_error`` chooses:
        block when failing closed, flag (allowed but marked for review) when failing open."""
        action = Action.BLOCK if self.on_error is OnError.BLOCK else Action.FLAG
        return Finding(
            rule_id=rule_id,
            category="error",
            action=action,
            severity=Severity.HIGH,
            message=message,
        )
