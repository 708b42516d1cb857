"""The guarded call written once, as plain steps with no I/O.

`Pipeline` owns what a call *decides*: checking a text at a stage (normalize → rules →
classifier → merge), the stream checker, and the audit events a call produces. The two
*flows* (`call_flow` for a call that returns text, `stream_flow` for one that streams) are
generators of `Effect` values: each effect is a piece of I/O (run a check, call the
generator, pull the next chunk, release text to the caller, write an audit event) that a
shell performs and answers. `guardrails.guard` holds the two shells — one synchronous, one
``async`` — which are thin loops that only do I/O, so the order of the steps, and therefore
every audit guarantee, is written in exactly one place.

The order a stream follows (see DESIGN.md, "The audit log")::

    check prompt ─► Write(open) ─► call generator ─► (Pull ─► check ─► Release)* ─►
        Write(close) ─► Release(last held text)

No opening, no call; no closing, no end: a failed closing write ends the stream with
`AuditUnavailable` instead of its last text.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from guardrails.decision import (
    Action,
    Finding,
    Severity,
    Span,
    Stage,
    Verdict,
    apply_redactions,
    merge_action,
)
from guardrails.exceptions import AuditUnavailable, GeneratorError, GuardInputError
from guardrails.logs import get_logger
from guardrails.normalize import Step, normalize
from guardrails.policy import AuditStorage, Mode, OnError, Policy, Rule
from guardrails.rules import RuleEngine, RuleScan
from guardrails.streaming import StreamChecker, StreamStep

if TYPE_CHECKING:
    from audit import AuditEvent

__all__ = [
    "END",
    "CallContext",
    "CallOutcome",
    "CallState",
    "Check",
    "ClientClosed",
    "CloseSource",
    "Effect",
    "Feed",
    "Finish",
    "Flow",
    "FlowResult",
    "Generate",
    "Pipeline",
    "Pull",
    "Release",
    "Scorer",
    "StreamEnd",
    "Write",
    "as_prompt",
    "as_text",
    "current_context",
    "guard_context",
]

log = get_logger("guardrails.pipeline")

#: The normalization steps the classifier's input gets (see `Pipeline._classifier_view`).
_CLASSIFIER_STEPS = frozenset({Step.NFKC, Step.INVISIBLE, Step.CONFUSABLES})

#: How often a check that ran past ``check_timeout_ms`` while starved of CPU is run again.
_STARVED_CHECKS = 3

StreamEnd = Literal["complete", "blocked", "client_closed", "error"]


class Scorer(Protocol):
    """**Protocol:** a safety classifier as the guard uses it (see `guardrails.classifier`)."""

    @property
    def thresholds(self) -> Mapping[str, float]: ...

    def score(self, texts: Sequence[str], /) -> list[dict[str, float]]: ...


# --- who is calling ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling, as the audit log records it. Set with `guard_context`."""

    request_id: str | None = None
    tenant: str | None = None
    user: str | None = None
    model: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


_CONTEXT: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "guardrails_call_context", default=None
)


def current_context() -> CallContext:
    """The `CallContext` set by the innermost `guard_context` (an empty one outside any)."""
    return _CONTEXT.get() or CallContext()


@contextlib.contextmanager
def guard_context(
    *,
    request_id: str | None = None,
    tenant: str | None = None,
    user: str | None = None,
    model: str | None = None,
    **metadata: Any,
) -> Iterator[CallContext]:
    """Attach caller context to every guarded call made inside the ``with`` block.

    Works across threads started inside it only if they copy the context (contextvars).
    """
    context = CallContext(request_id, tenant, user, model, metadata)
    token = _CONTEXT.set(context)
    try:
        yield context
    finally:
        _CONTEXT.reset(token)


# --- text that enters ---------------------------------------------------------------------------


def as_text(value: object, what: str) -> str:
    """Accept ``str`` or UTF-8 ``bytes``; anything else is a `GuardInputError`."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GuardInputError(
                f"{what} is not valid UTF-8: {exc.reason} at byte {exc.start}"
            ) from None
    raise GuardInputError(f"{what} must be str or UTF-8 bytes, got {type(value).__name__}")


def as_prompt(value: object) -> str:
    """A prompt as text, refusing what no audit store can keep verbatim.

    A lone surrogate (``\\ud800``) cannot be encoded, and PostgreSQL cannot store NUL: such a
    prompt is invalid input (a `GuardInputError`, a 400 in the proxy), not a store outage.
    """
    text = as_text(value, "prompt")
    nul = text.find("\x00")
    if nul >= 0:
        raise GuardInputError(f"prompt contains a NUL character at offset {nul}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise GuardInputError(
            f"prompt contains a lone surrogate U+{ord(text[exc.start]):04X} at offset {exc.start}"
        ) from None
    return text


def _storable(text: str) -> str:
    """``text`` with what a store cannot keep escaped: NUL as ``\\x00``, lone surrogates as
    ``\\udXXX`` (generator output is recorded, never refused, for these)."""
    text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    """Caller metadata as JSON values (anything else becomes its ``str``), so an odd value
    in `guard_context` cannot make an audit write fail."""
    try:
        encoded = json.dumps(value, default=str, allow_nan=False)
    except ValueError:  # NaN or infinity somewhere
        encoded = json.dumps({str(k): str(v) for k, v in value.items()})
    safe: dict[str, Any] = json.loads(encoded.replace("\\u0000", "\\\\x00"))
    return safe


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# --- the state of one call ----------------------------------------------------------------------


@dataclass(slots=True)
class CallState:
    """The state of one guarded call, gathered for its audit event(s)."""

    context: CallContext
    request_id: str
    started: float
    prompt: str = ""
    input_verdict: Verdict | None = None
    output_raw: str | None = None
    output_verdict: Verdict | None = None
    error: str | None = None
    streamed: bool = False
    released_chars: int | None = None
    #: ``open`` once a stream's opening is durable; ``closed`` once its closing is.
    record: Literal["none", "open", "closed"] = "none"
    stream_end: StreamEnd | None = None
    #: What the caller was given so far (for `CallOutcome.text` and `Blocked.released`).
    released: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What happened to one guarded call: both verdicts and what the caller may be given.

    ``text`` is the checked output ("" when blocked). For a stream it is what was released.
    """

    request_id: str
    input: Verdict
    output: Verdict | None
    text: str

    @property
    def blocked(self) -> bool:
        """True when either stage blocked."""
        return self.input.blocked or (self.output is not None and self.output.blocked)

    @property
    def verdict(self) -> Verdict:
        """The deciding verdict: the blocking one, else the output's, else the input's."""
        if self.input.blocked or self.output is None:
            return self.input
        return self.output

    @property
    def action(self) -> Action:
        """The strongest action over both stages."""
        actions = [self.input.action] + ([self.output.action] if self.output else [])
        return max(actions, key=lambda a: a.rank)


# --- effects: the I/O a flow asks its shell to perform ------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """Check ``text`` at ``stage``; answered with the `Verdict`."""

    text: str
    stage: Stage


@dataclass(frozen=True, slots=True)
class Generate:
    """Call the generator with the checked prompt; answered with what it returned."""

    prompt: str


@dataclass(frozen=True, slots=True)
class Pull:
    """Fetch the next chunk of the stream; answered with it, or `END` when exhausted."""


@dataclass(frozen=True, slots=True)
class Feed:
    """Feed ``chunk`` to the stream checker; answered with the `StreamStep`."""

    checker: StreamChecker
    chunk: str


@dataclass(frozen=True, slots=True)
class Finish:
    """The stream ended: check what is held; answered with the final `StreamStep`."""

    checker: StreamChecker


@dataclass(frozen=True, slots=True)
class Release:
    """Hand ``text`` to the caller (streams only); answered with ``None``."""

    text: str


@dataclass(frozen=True, slots=True)
class Write:
    """Commit ``event`` durably; answered with ``None``, or the failure thrown in.

    ``fallback`` is ``spill`` under ``on_error: allow``: the sink may keep the event in its
    durable spill files instead of the store, and fails only when it cannot do even that.
    """

    event: AuditEvent
    fallback: Literal["raise", "spill"]


@dataclass(frozen=True, slots=True)
class CloseSource:
    """Close the generator's iterator (it stopped early); answered with ``None``."""


Effect = Check | Generate | Pull | Feed | Finish | Release | Write | CloseSource


class _End:
    """The `Pull` answer for an exhausted stream."""

    def __repr__(self) -> str:
        return "END"


END = _End()


class ClientClosed(BaseException):
    """Thrown into a flow when the caller went away (closed the stream, cancelled the task).

    A `BaseException`, like the cancellation it stands for, so that no ``except Exception``
    on the way mistakes it for a failure of the generator or of the store.
    """


@dataclass(frozen=True, slots=True)
class FlowResult:
    """How a flow ended: the text for the caller, and the verdict if the call was blocked.

    ``source`` is set when a call flow found that the generator returned a stream: the shell
    then continues with `Pipeline.stream_flow` over it.
    """

    text: str
    blocked: Verdict | None = None
    source: object | None = None


Flow = Generator[Effect, Any, FlowResult]


def _close_source() -> Generator[Effect, Any, None]:
    """Close the generator; the caller going away meanwhile (a cancellation landing in the
    generator's own cleanup) must not skip the closing write that follows."""
    with contextlib.suppress(ClientClosed):
        yield CloseSource()


# --- the pipeline -------------------------------------------------------------------------------


class Pipeline:
    """A policy, its compiled rules and classifier rules: every decision of a guarded call.

    It performs no I/O apart from running the checks it is asked for (CPU only); the flows
    it returns are driven by the shells in `guardrails.guard`.
    """

    def __init__(self, policy: Policy, *, classifier: Scorer | None = None) -> None:
        self.policy = policy
        self.engine = RuleEngine(policy)
        self._classifier = classifier
        self._classifier_lock = threading.Lock()
        self.classifier_rules: dict[Stage, list[Rule]] = {stage: [] for stage in Stage}
        if policy.settings.classifier.enabled:
            for rule in policy.rules:
                if rule.enabled and rule.classifier is not None:
                    for stage in rule.applies_to:
                        self.classifier_rules[stage].append(rule)

    @property
    def fallback(self) -> Literal["raise", "spill"]:
        """How audit writes treat a store failure: ``spill`` under ``on_error: allow``."""
        return "spill" if self.policy.settings.on_error is OnError.ALLOW else "raise"

    # --- checking ----------------------------------------------------------------------------

    def check(self, text: str, stage: Stage) -> Verdict:
        """Check ``text`` at ``stage`` (normalize → rules → classifier → merge)."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        findings = self.findings(text, stage, timings)
        action = merge_action(findings)
        redacted = apply_redactions(text, findings)
        timings["total"] = (time.perf_counter() - started) * 1000
        return Verdict(stage, action, tuple(findings), redacted, self.policy.ref, timings)

    def findings(self, text: str, stage: Stage, timings: dict[str, float]) -> list[Finding]:
        """Every finding of rules and classifier on ``text`` at ``stage``."""
        limit = self.policy.settings.max_input_chars
        if len(text) > limit:
            return [
                Finding(
                    rule_id="max_chars",
                    category="limit",
                    action=Action.BLOCK,
                    severity=Severity.MEDIUM,
                    span=None,
                    message=(
                        f"{stage.value} is {len(text):,} characters; the policy allows {limit:,}"
                    ),
                )
            ]
        budget_ms = self.policy.settings.check_timeout_ms
        t0 = time.perf_counter()
        for attempt in range(_STARVED_CHECKS):
            allowed_ms = budget_ms * 2**attempt if budget_ms else None
            cpu_began = time.thread_time()
            deadline = time.monotonic() + allowed_ms / 1000 if allowed_ms else None
            findings = self.engine.scan(text, stage, deadline=deadline).findings
            if budget_ms is None or not any(f.rule_id == "check_timeout" for f in findings):
                break
            # Past the deadline having done less than the budget's worth of work (CPU time):
            # the thread waited for a core, on a busy machine. Check again with twice the wall
            # time, so the verdict does not depend on load; the work allowed stays the budget,
            # and the attempts are bounded, so a slow check stays bounded.
            if (time.thread_time() - cpu_began) * 1000 >= budget_ms:
                break
            if attempt < _STARVED_CHECKS - 1:
                log.warning("check_starved", stage=stage.value, budget_ms=budget_ms)
        timings["rules"] = (time.perf_counter() - t0) * 1000
        if self.classifier_rules[stage] and text.strip():
            if deadline is not None and time.monotonic() >= deadline:
                if not any(f.rule_id == "check_timeout" for f in findings):
                    findings.append(
                        self.engine.error_finding(
                            "check_timeout", "the check ran past its deadline before the classifier"
                        )
                    )
                return findings
            t1 = time.perf_counter()
            findings.extend(self.classify(text, stage))
            timings["classifier"] = (time.perf_counter() - t1) * 1000
        return findings

    @property
    def classifier(self) -> Scorer | None:
        """The classifier, if one was given or has been loaded."""
        return self._classifier

    def scorer(self) -> Scorer:
        """The classifier, loading ``settings.classifier.model`` on first use."""
        with self._classifier_lock:
            if self._classifier is None:
                from guardrails.classifier import load_classifier

                self._classifier = load_classifier(self.policy.settings.classifier.model)
            return self._classifier

    def warm(self) -> None:
        """Load the classifier now (and run it once) if the policy has classifier rules, so
        the first call does not pay for it; a proxy calls this before it reports ready."""
        if any(self.classifier_rules.values()):
            warm = getattr(self.scorer(), "warm", None)
            if callable(warm):
                warm()

    def classify(self, text: str, stage: Stage) -> list[Finding]:
        """The classifier rules of ``stage`` that fire on ``text`` (errors become findings)."""
        rules = self.classifier_rules[stage]
        try:
            scorer = self.scorer()
            scores = scorer.score([self._classifier_view(text)])[0]
            thresholds = scorer.thresholds
        except Exception as exc:
            log.error("classifier_failed", error=repr(exc))
            return [self.engine.error_finding("classifier", f"classifier failed: {exc!r}")]
        findings: list[Finding] = []
        mode = self.policy.settings.mode
        # Too little text to judge ("yes", "who are you?", "refund please"): the classifier
        # alone never blocks it (the policy's minimum, else the model's own).
        minimum = self.policy.settings.classifier.min_signal_chars
        if minimum is not None:
            from guardrails.classifier.features import has_signal as enough_signal

            short = not enough_signal(text, minimum)
        else:
            has_signal = getattr(scorer, "has_signal", None)
            short = callable(has_signal) and not has_signal(text)
        for rule in rules:
            match = rule.classifier
            assert match is not None
            score = scores.get(match.category)
            if score is None:
                findings.append(
                    self.engine.error_finding(
                        rule.id, f"classifier has no category {match.category!r}"
                    )
                )
                continue
            threshold = (
                match.threshold
                if match.threshold is not None
                else thresholds.get(match.category, 0.5)
            )
            if score >= threshold:
                action = rule.action
                message = rule.message
                if short and action is Action.BLOCK:
                    action = Action.FLAG
                    message = f"{message} (too short to block on the classifier alone)".strip()
                findings.append(
                    Finding(
                        rule_id=rule.id,
                        category=rule.category,
                        action=action,
                        severity=rule.severity,
                        span=Span(0, len(text)) if action is Action.REDACT else None,
                        score=round(score, 4),
                        message=message,
                        replacement=rule.redaction,
                        shadow=(rule.mode or mode) is Mode.SHADOW,
                    )
                )
        return findings

    def _classifier_view(self, text: str) -> str:
        """``text`` as the classifier scores it: with the policy's character-level folding
        (NFKC, invisible characters, confusables) applied, so that look-alike letters and
        zero-width or bidi characters cannot disguise a text from the classifier as they
        cannot from the rules. (Leetspeak and spaced letters stay: they are word-level.)"""
        steps = [s for s in self.policy.settings.normalization if s in _CLASSIFIER_STEPS]
        return normalize(text, steps).text if steps else text

    def stream_checker(self, stage: Stage = Stage.OUTPUT) -> StreamChecker:
        """A checker for one stream of chunks at ``stage`` (see `guardrails.streaming`)."""

        def scan(window: str, final: bool) -> tuple[list[Finding], list[int]]:
            if len(window) > self.policy.settings.max_input_chars:
                return self.findings(window, stage, {}), []
            result = self.engine.scan(window, stage, partial=not final)
            return result.findings, result.holds

        def scan_window(window: str, start: int, final: bool) -> RuleScan:
            if len(window) > self.policy.settings.max_input_chars:
                return RuleScan(findings=self.findings(window, stage, {}))
            return self.engine.scan(window, stage, partial=not final, start=start)

        rules = self.classifier_rules[stage]
        mode = self.policy.settings.mode

        def classify(text: str) -> list[Finding]:
            return self.classify(text, stage) if text.strip() else []

        return StreamChecker(
            scan=scan,
            scan_window=scan_window,
            policy=self.policy.ref,
            holdback=self.policy.settings.stream_holdback_chars,
            stage=stage,
            classify=classify if rules else None,
            classify_enforcing=any(
                r.action in (Action.BLOCK, Action.REDACT) and (r.mode or mode) is Mode.ENFORCE
                for r in rules
            ),
        )

    # --- the flows ------------------------------------------------------------------------------

    def begin(self, model_name: str | None) -> CallState:
        """A new call's state: its context (with ``model_name`` as the default model)."""
        context = current_context()
        if context.model is None and model_name is not None:
            context = replace(context, model=model_name)
        request_id = context.request_id or uuid.uuid4().hex
        return CallState(context=context, request_id=request_id, started=time.perf_counter())

    def input_flow(self, call: CallState, prompt: object) -> Flow:
        """Check the prompt; a rejected or blocked prompt is the call's one event.

        Returns a result with ``blocked`` set when the call ends here (the generator is never
        called); raises `GuardInputError` (after auditing it) for a prompt that is not text.
        """
        try:
            call.prompt = as_prompt(prompt)
        except GuardInputError as exc:
            call.error = f"invalid input: {exc}"
            call.prompt = _storable(repr(prompt)[:200])
            yield from self._write(call, "call")
            raise
        try:
            call.input_verdict = yield Check(call.prompt, Stage.INPUT)
        except ClientClosed:
            call.error = "call closed by the caller"
            yield from self._write(call, "call")
            raise
        if call.input_verdict.blocked:
            yield from self._write(call, "call")
            return FlowResult("", call.input_verdict)
        return FlowResult(call.input_verdict.text)

    def call_flow(self, call: CallState, prompt: object, *, stream: bool = False) -> Flow:
        """One call: check the prompt, call the generator, check its output, audit.

        With ``stream=True`` (the generator is known to stream: a generator function), the
        stream's opening is written before the generator is called. Otherwise the generator
        is called first; if it returns a stream instead of text, the result carries it as
        ``source`` and nothing of it has been pulled or recorded yet: the shell continues with
        `stream_flow`, which writes the opening before the first chunk is pulled.
        """
        checked = yield from self.input_flow(call, prompt)
        if checked.blocked is not None:
            return checked
        if stream:
            yield from self._open(call)
        try:
            result = yield Generate(checked.text)
        except ClientClosed:
            call.error = "call closed by the caller"
            if stream:
                call.stream_end = "client_closed"
                yield from self._write(call, "close")
            else:
                yield from self._write(call, "call")
            raise
        except Exception as exc:
            call.error = f"generator failed: {exc!r}"
            if stream:
                call.stream_end = "error"
                yield from self._write(call, "close")
            else:
                yield from self._write(call, "call")
            raise GeneratorError(f"generator failed: {exc}") from exc
        if stream or not isinstance(result, str | bytes):
            return FlowResult("", None, source=result)
        return (yield from self.text_flow(call, result))

    def stream_call_flow(self, call: CallState, prompt: object, *, known_stream: bool) -> Flow:
        """`call_flow`, continued by `stream_flow` when the generator streams.

        A generator that returns text ends the flow without a `Release`: the shell hands the
        result's text over itself (as the return value, or as a stream's single chunk).
        """
        result = yield from self.call_flow(call, prompt, stream=known_stream)
        if result.source is None:
            return result
        return (yield from self.stream_flow(call))

    def text_flow(self, call: CallState, result: object) -> Flow:
        """The output half of a call whose generator returned text."""
        try:
            output = as_text(result, "generator output")
        except GuardInputError as exc:
            call.error = str(exc)
            yield from self._write(call, "call")
            raise
        call.output_raw = output
        try:
            call.output_verdict = yield Check(output, Stage.OUTPUT)
        except ClientClosed:
            call.error = "call closed by the caller"
            yield from self._write(call, "call")
            raise
        yield from self._write(call, "call")
        if call.output_verdict.blocked:
            return FlowResult("", call.output_verdict)
        return FlowResult(call.output_verdict.text)

    def stream_flow(self, call: CallState) -> Flow:
        """Release a stream's chunks as they pass the check; close its record before the end.

        The opening is written first unless `call_flow` already wrote it. Every exit writes
        the closing exactly once: the stream completed, was blocked, its generator failed,
        or the caller went away (`ClientClosed` thrown in). Only a completed or blocked
        stream releases its last held text, and only after the closing is durable.
        """
        if call.record == "none":
            yield from self._open(call)
        checker = self.stream_checker(Stage.OUTPUT)
        step: StreamStep | None = None
        try:
            while True:
                chunk = yield Pull()
                if chunk is END:
                    step = yield Finish(checker)
                    break
                step = yield Feed(checker, as_text(chunk, "stream chunk"))
                if step.blocked:
                    break
                if step.text:
                    call.released.append(step.text)
                    yield Release(step.text)
        except ClientClosed:
            yield from _close_source()
            call.error = "stream closed by the caller"
            yield from self._close(call, checker, "client_closed")
            raise
        except GuardInputError as exc:
            yield from _close_source()
            call.error = str(exc)
            yield from self._close(call, checker, "error")
            raise
        except Exception as exc:
            yield from _close_source()
            call.error = f"generator failed: {exc!r}"
            yield from self._close(call, checker, "error")
            raise GeneratorError(f"generator failed: {exc}") from exc
        assert step is not None
        if step.blocked:
            yield from _close_source()
        final: StreamEnd = "blocked" if step.blocked else "complete"
        if step.text:  # counted as released only once the closing below is durable
            call.released.append(step.text)
        yield from self._close(call, checker, final)
        if step.text:
            yield Release(step.text)
        verdict = checker.verdict()
        return FlowResult("".join(call.released), verdict if verdict.blocked else None)

    def _open(self, call: CallState) -> Generator[Effect, Any, None]:
        call.streamed = True
        yield from self._write(call, "open")
        call.record = "open"

    def _close(
        self, call: CallState, checker: StreamChecker, end: StreamEnd
    ) -> Generator[Effect, Any, None]:
        call.output_raw = checker.raw_text
        call.output_verdict = checker.verdict()
        call.released_chars = checker.released_raw_chars
        call.stream_end = end
        yield from self._write(call, "close")
        call.record = "closed"

    def _write(
        self, call: CallState, phase: Literal["call", "open", "close"]
    ) -> Generator[Effect, Any, None]:
        event = self.build_event(call, phase)
        try:
            yield Write(event, self.fallback)
        except Exception as exc:
            raise self.audit_unavailable(call, event, exc) from exc

    # --- audit events -------------------------------------------------------------------------

    def audit_unavailable(
        self, call: CallState, event: AuditEvent, exc: BaseException
    ) -> AuditUnavailable:
        """The refusal for a call whose event could not be committed (nor spilled)."""
        log.error(
            "audit_write_failed",
            request_id=call.request_id,
            event_id=event.event_id,
            phase=event.phase,
            error=repr(exc),
            refused=True,
        )
        finding = Finding(
            rule_id="audit.store_unavailable",
            category="error",
            action=Action.BLOCK,
            severity=Severity.CRITICAL,
            message=f"audit store unavailable: {exc}",
        )
        stage = call.output_verdict.stage if call.output_verdict else Stage.INPUT
        verdict = Verdict(stage, Action.BLOCK, (finding,), "", self.policy.ref)
        return AuditUnavailable(verdict, call.request_id, released="".join(call.released))

    def stored(self, text: str | None, verdict: Verdict | None) -> str | None:
        """``text`` as the audit log keeps it (full, redacted or hashed).

        NUL characters and lone surrogates, which a store cannot keep, are written as
        escapes; the digest in ``hash`` mode is over the exact text.
        """
        if text is None:
            return None
        storage = self.policy.settings.audit.store
        if storage is AuditStorage.HASH:
            return "sha256:" + _sha256(text)
        return _storable(self._redacted_for_audit(text, verdict))

    def _redacted_for_audit(self, text: str, verdict: Verdict | None) -> str:
        if self.policy.settings.audit.store is AuditStorage.FULL or verdict is None:
            return text
        # Redacted storage hides blocked spans too: the audit log must not become the leak.
        hidden = [
            replace(f, action=Action.REDACT, replacement=f"[{f.action.value.upper()}:{f.rule_id}]")
            if f.action is Action.BLOCK and f.span is not None
            else f
            for f in verdict.findings
        ]
        return apply_redactions(text, [replace(f, shadow=False) for f in hidden])

    def build_event(
        self, call: CallState, phase: Literal["call", "open", "close"] = "call"
    ) -> AuditEvent:
        """The audit event for ``call`` at ``phase``.

        ``call`` is a whole call (ended, refused or failed); ``open`` is the first half of a
        stream (the prompt and its verdict); ``close`` its second half (the output, its
        verdict and how the stream ended). The two halves share the request id.
        """
        from audit import AuditEvent

        verdicts = {
            "call": (call.input_verdict, call.output_verdict),
            "open": (call.input_verdict, None),
            "close": (call.input_verdict, call.output_verdict),
        }[phase]
        findings: list[dict[str, Any]] = []
        timings: dict[str, float] = {}
        actions: list[Action] = []
        for verdict in verdicts:
            if verdict is None:
                continue
            actions.append(verdict.action)
            if phase == "close" and verdict.stage is Stage.INPUT:
                continue  # the opening holds the input's findings and timings
            for finding in verdict.findings:
                findings.append({"stage": verdict.stage.value, **finding.to_dict()})
            for key, value in verdict.timings_ms.items():
                timings[f"{verdict.stage.value}.{key}"] = round(value, 4)
        final = max(actions, key=lambda a: a.rank) if actions else Action.BLOCK
        if call.error is not None and not actions:
            final = Action.BLOCK
        flagged = any(a is Action.FLAG for a in actions) or any(f.get("shadow") for f in findings)
        with_output = phase != "open"
        return AuditEvent(
            request_id=call.request_id,
            policy_name=self.policy.name,
            policy_version=self.policy.version,
            policy_digest=self.policy.digest,
            action=final.value,
            tenant=call.context.tenant,
            user=call.context.user,
            model=call.context.model,
            prompt=self.stored(call.prompt, call.input_verdict) if phase != "close" else None,
            output=self.stored(call.output_raw, call.output_verdict) if with_output else None,
            text_storage=self.policy.settings.audit.store.value,
            input_action=call.input_verdict.action.value if call.input_verdict else None,
            output_action=(
                call.output_verdict.action.value
                if call.output_verdict is not None and with_output
                else None
            ),
            findings=tuple(findings),
            flagged=flagged,
            latency_ms=round((time.perf_counter() - call.started) * 1000, 3),
            timings_ms=timings,
            error=call.error if with_output else None,
            streamed=call.streamed,
            released_chars=call.released_chars if with_output else None,
            metadata=_json_safe(self._provenance(call.context.metadata)),
            phase=phase,
            stream_end=call.stream_end if phase == "close" else None,
        )

    def _provenance(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Caller metadata plus the digest of the classifier the policy loaded, if any, so
        every event names the model weights that judged it."""
        out = dict(metadata)
        digest = getattr(self._classifier, "digest", None)
        if isinstance(digest, str):
            out["classifier_digest"] = digest
        return out

    def outcome(self, call: CallState, text: str) -> CallOutcome:
        """The `CallOutcome` of ``call`` with ``text`` as what the caller was given."""
        assert call.input_verdict is not None
        return CallOutcome(call.request_id, call.input_verdict, call.output_verdict, text)
