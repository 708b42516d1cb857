"""Incremental output checking: release stream chunks only after they pass the rules.

Text arrives in arbitrary chunks. `StreamChecker` keeps the unreleased tail in a buffer and,
at each chunk, scans only that buffer, with the last released characters as context that
lookbehinds may see (`RuleEngine.scan` with ``start=``). The engine says where text must be
held back: the first position whose matches could still change when more text arrives (any
path of a rule's matcher reads the end of the text there, including a match that a
validator rejected while it was still short, e.g. half an IBAN) and where normalization
could still change. The checker releases text only up to there, minus a fixed hold-back
window, and never in the middle of a match (a finding or a rejected one), so the next scan
starts where the whole-text scan would be. A block counts only once it is settled.

What is proven, by hypothesis over every inline test of every shipped pack, padded and cut
into random chunks (one-character chunks included; tests/guardrails/test_stream_invariant.py):
the concatenation of what a stream releases equals the whole-text verdict's ``.text``, and a
stream the whole text blocks releases nothing from the blocked span on. The context is the
last 64 released characters: a normalization run (spaced-out letters, leetspeak) longer
than that, straddling a release point, is outside what those tests cover.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from guardrails.decision import (
    Action,
    Finding,
    PolicyRef,
    Span,
    Stage,
    Verdict,
    apply_redactions,
    merge_action,
)
from guardrails.exceptions import GuardInputError

if TYPE_CHECKING:
    from guardrails.rules import RuleScan

_CONTEXT_CHARS = 64

# (window text, final?) -> (findings in window coordinates, holds in window coordinates)
ScanFn = Callable[[str, bool], tuple[list[Finding], list[int]]]
# (window text, where new text starts, final?) -> the engine's scan, in window coordinates
WindowScanFn = Callable[[str, int, bool], "RuleScan"]


@dataclass(frozen=True, slots=True)
class StreamStep:
    """What one `StreamChecker.feed` or `finish` allows: ``text`` may be sent now.

    ``verdict`` is set when the stream is blocked; nothing more may be sent then.
    """

    text: str
    verdict: Verdict | None = None

    @property
    def blocked(self) -> bool:
        """True when the stream must end here."""
        return self.verdict is not None and self.verdict.blocked


@dataclass(slots=True)
class StreamChecker:
    """The output check of one stream. Not thread-safe: one stream, one checker."""

    scan: ScanFn | None
    policy: PolicyRef
    holdback: int
    stage: Stage = Stage.OUTPUT
    #: Scores text with the classifier rules of the stage (None: the policy has none).
    classify: Callable[[str], list[Finding]] | None = None
    #: True when a classifier rule may block or redact: then nothing is released before the
    #: classifier has seen the text around it (the last `classify_window` characters).
    classify_enforcing: bool = False
    classify_window: int = 2048
    #: The preferred scanner: ``(window, start, final)`` -> `RuleScan`, where matches start
    #: at ``start`` and the text before it is released context (see `RuleEngine.scan`).
    #: When set, ``scan`` is not used.
    scan_window: WindowScanFn | None = None
    _buffer: str = ""
    _context: str = ""
    _raw: list[str] = field(default_factory=list)
    _released: list[str] = field(default_factory=list)
    _raw_released: int = 0
    _findings: list[Finding] = field(default_factory=list)
    _error_keys: set[tuple[str, str]] = field(default_factory=set)
    _blocked: Verdict | None = None
    _finished: bool = False

    @property
    def released_text(self) -> str:
        """Everything released so far, as the caller received it (after redaction)."""
        return "".join(self._released)

    @property
    def raw_text(self) -> str:
        """Everything the generator produced so far, released or not."""
        return "".join(self._raw)

    @property
    def released_raw_chars(self) -> int:
        """How many characters of the generator's output have been released."""
        return self._raw_released

    @property
    def findings(self) -> tuple[Finding, ...]:
        """Findings so far, with spans in the generator's output."""
        return tuple(self._findings)

    def feed(self, chunk: str) -> StreamStep:
        """Add a chunk; returns what may be released now (possibly nothing)."""
        if self._blocked is not None or self._finished:
            raise RuntimeError("stream already ended")
        if not isinstance(chunk, str):
            raise GuardInputError(f"stream chunks must be str, got {type(chunk).__name__}")
        self._raw.append(chunk)
        self._buffer += chunk
        return self._advance(final=False)

    def finish(self) -> StreamStep:
        """The stream ended: check and release whatever is still held."""
        if self._blocked is not None:
            return StreamStep("", self._blocked)
        step = self._advance(final=True)
        self._finished = True
        return step

    def verdict(self) -> Verdict:
        """The verdict over the whole stream so far (blocked, or the merge of all findings)."""
        if self._blocked is not None:
            return self._blocked
        findings = tuple(self._findings)
        return Verdict(
            self.stage, merge_action(findings), findings, self.released_text, self.policy
        )

    def _advance(self, *, final: bool) -> StreamStep:
        buffer = self._buffer
        if not buffer and not final:
            return StreamStep("")
        offset = len(self._context)
        window = self._context + buffer
        spans: list[tuple[int, int]] = []
        if self.scan_window is not None:
            scanned = self.scan_window(window, offset, final)
            window_findings, window_holds, spans = scanned.findings, scanned.holds, scanned.spans
        elif self.scan is not None:
            window_findings, window_holds = self.scan(window, final)
        else:
            raise TypeError("StreamChecker needs scan or scan_window")
        findings: list[Finding] = []
        for finding in window_findings:
            if finding.span is None:
                findings.append(finding)
                continue
            start, end = finding.span.start - offset, finding.span.end - offset
            if end <= 0:
                continue  # wholly inside already-released context: handled then
            findings.append(replace(finding, span=Span(max(start, 0), end)))

        if self.classify is not None and (final or self.classify_enforcing):
            findings.extend(self._classified(final))

        # Text from the first unsettled position on may still change what matches there:
        # nothing is released from it, and a block that starts there is only tentative.
        stable = len(buffer)
        if not final:
            for hold in window_holds:
                stable = min(stable, max(hold - offset, 0))
        blocking = [
            f
            for f in findings
            if f.action is Action.BLOCK
            and not f.shadow
            and (final or f.span is None or f.span.start < stable)
        ]
        if blocking:
            absolute = [self._absolute(f) for f in findings]
            self._findings.extend(absolute)
            self._blocked = Verdict(
                self.stage,
                Action.BLOCK,
                tuple(self._findings),
                self.released_text,
                self.policy,
            )
            self._buffer = ""
            return StreamStep("", self._blocked)

        release = len(buffer) if final else max(0, min(stable, len(buffer) - self.holdback))
        # Never cut through a finding or any other match (one a validator rejected too): the
        # next scan starts where this release ends and must see the same matches.
        cuts = [(f.span.start, f.span.end) for f in findings if f.span is not None]
        cuts.extend((s - offset, e - offset) for s, e in spans if e > offset)
        changed = True
        while changed:
            changed = False
            for start, end in cuts:
                if start < release < end:
                    release = max(start, 0)
                    changed = True
        settled = [f for f in findings if f.span is None or f.span.end <= release]
        for finding in settled:
            if finding.span is None:
                key = (finding.rule_id, finding.message)
                if key in self._error_keys:
                    continue
                self._error_keys.add(key)
            self._findings.append(self._absolute(finding))
        released_raw = buffer[:release]
        text = apply_redactions(released_raw, settled)
        self._released.append(text)
        self._raw_released += release
        self._context = (self._context + released_raw)[-_CONTEXT_CHARS:]
        self._buffer = buffer[release:]
        return StreamStep(text)

    def _classified(self, final: bool) -> list[Finding]:
        """Classifier findings for the text so far, as stream findings (no span).

        Before the end only blocking findings count (a classifier cannot point at a span to
        redact in text already sent, so ``redact`` blocks here); at the end every finding is
        recorded once, over the whole output.
        """
        assert self.classify is not None
        raw = "".join(self._raw)
        text = raw if final else raw[-self.classify_window :]
        out: list[Finding] = []
        for finding in self.classify(text):
            action = Action.BLOCK if finding.action is Action.REDACT else finding.action
            converted = replace(finding, span=None, action=action)
            if final or (converted.action is Action.BLOCK and not converted.shadow):
                out.append(converted)
        return out

    def _absolute(self, finding: Finding) -> Finding:
        if finding.span is None:
            return finding
        base = self._raw_released
        return replace(finding, span=Span(finding.span.start + base, finding.span.end + base))


__all__ = [
    "ScanFn",
    "StreamChecker",
    "StreamStep",
    "WindowScanFn",
]
