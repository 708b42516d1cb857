"""The guard: the pipeline every call passes through, and the wrappers around generators.

``check`` runs one stage (normalize → rules → classifier → merge) and returns a `Verdict`.
``wrap`` (or ``@guard``) puts a generator behind both stages: the prompt is checked before the
generator is called (a block means it is never called), the output after, streams chunk by
chunk through a `StreamChecker`; every call then becomes one audit event, committed before
the call returns when an audit store is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import inspect
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

import structlog

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
from guardrails.exceptions import AuditUnavailable, Blocked, GeneratorError, GuardInputError
from guardrails.logs import get_logger
from guardrails.policy import (
    AuditOutage,
    AuditStorage,
    Mode,
    OnError,
    Policy,
    Rule,
    load_policy,
)
from guardrails.rules import RuleEngine
from guardrails.streaming import StreamChecker

if TYPE_CHECKING:
    from audit import AuditEvent

log = get_logger("guardrails.guard")

OnBlock = Literal["raise", "refuse"]
_Mode = Literal["raise", "refuse", "outcome"]
F = TypeVar("F", bound=Callable[..., Any])


class Scorer(Protocol):
    """**Protocol:** a safety classifier as the guard uses it (see `guardrails.classifier`)."""

    @property
    def thresholds(self) -> Mapping[str, float]: ...

    def score(self, texts: Sequence[str], /) -> list[dict[str, float]]: ...


class AuditSink(Protocol):
    """**Protocol:** where audit events go; `audit.AuditWriter` is the real one.

    ``write`` must return only after the event is durable and raise when it is not.
    """

    def write(self, event: AuditEvent, /) -> object: ...

    async def write_async(self, event: AuditEvent, /) -> object: ...


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


def _as_text(value: object, what: str) -> str:
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


@dataclass(slots=True)
class _Call:
    """The state of one guarded call, gathered for its audit event."""

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
    extra_findings: list[Finding] = field(default_factory=list)


class Guard:
    """A policy, its compiled rules, an optional classifier and an optional audit sink.

    Build one with `Guard.from_policy`; it is thread-safe and meant to live as long as the
    process (or until `close`).
    """

    def __init__(
        self,
        policy: Policy,
        *,
        audit: AuditSink | None = None,
        classifier: Scorer | None = None,
        on_block: OnBlock = "raise",
        model: str | None = None,
    ) -> None:
        self.policy = policy
        self.engine = RuleEngine(policy)
        self.audit = audit
        self.on_block: OnBlock = on_block
        self.model = model
        self._classifier = classifier
        self._classifier_lock = threading.Lock()
        self._classifier_rules: dict[Stage, list[Rule]] = {stage: [] for stage in Stage}
        if policy.settings.classifier.enabled:
            for rule in policy.rules:
                if rule.enabled and rule.classifier is not None:
                    for stage in rule.applies_to:
                        self._classifier_rules[stage].append(rule)
        self._unwritten: deque[AuditEvent] = deque()
        self._unwritten_lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []
        self._record_policy: Callable[[str, str, str, str], None] | None = None

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_policy(
        cls,
        policy: str | Path | Policy | None = None,
        *,
        audit: str | AuditSink | None = None,
        hmac_key: bytes | None = None,
        classifier: Scorer | None = None,
        on_block: OnBlock = "raise",
        model: str | None = None,
    ) -> Guard:
        """A guard for ``policy`` (a path, a shipped pack name, a `Policy`, or ``None`` for
        the shipped default).

        Args:
            audit: a database URL (the schema is created or upgraded), an `AuditSink`, or
                ``None`` for no audit log.
            hmac_key: key the audit hash chain with HMAC-SHA256.
            classifier: a scorer to use instead of loading ``settings.classifier.model``.
            on_block: ``raise`` `Blocked`, or ``refuse`` by returning the policy's refusal.
            model: the model name audited for calls that do not set one.
        """
        loaded = policy if isinstance(policy, Policy) else load_policy(policy)
        closers: list[Callable[[], None]] = []
        sink: AuditSink | None
        if isinstance(audit, str):
            from audit import AuditStore

            audit_settings = loaded.settings.audit
            spill_dir = (
                Path(audit_settings.spill_dir)
                if audit_settings.outage is AuditOutage.SPILL
                else None
            )
            store = AuditStore(audit, hmac_key=hmac_key, auto_upgrade=True, spill_dir=spill_dir)
            store.record_policy(loaded.digest, loaded.name, loaded.version, loaded.source)
            writer = store.writer()
            sink = writer
            closers = [writer.close, store.close]
        else:
            store = None
            sink = audit
        guard = cls(loaded, audit=sink, classifier=classifier, on_block=on_block, model=model)
        guard._closers = closers
        guard._record_policy = store.record_policy if store is not None else None
        return guard

    def with_policy(self, policy: Policy) -> Guard:
        """A guard for ``policy`` sharing this one's audit writer (one chain), classifier and
        options: what a hot reload swaps in. The new policy's text is recorded first.

        The returned guard owns nothing: close this (the original) guard, last.
        """
        if self._record_policy is not None:
            self._record_policy(policy.digest, policy.name, policy.version, policy.source)
        guard = Guard(
            policy,
            audit=self.audit,
            classifier=self._classifier,
            on_block=self.on_block,
            model=self.model,
        )
        guard._record_policy = self._record_policy
        return guard

    def close(self) -> None:
        """Flush audit events still waiting for a retry, then close what the guard opened."""
        self._retry_unwritten()
        for closer in self._closers:
            closer()
        self._closers = []

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- checking ------------------------------------------------------------------------------

    def check(self, text: str | bytes, stage: Stage | str = Stage.INPUT) -> Verdict:
        """Check ``text`` at ``stage`` and return the verdict (never raises on a block).

        Raises:
            GuardInputError: ``text`` is not a str or UTF-8 bytes.
        """
        value = _as_text(text, "text")
        return self._check(value, Stage(stage))

    def _check(self, text: str, stage: Stage) -> Verdict:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        findings = self._findings(text, stage, timings)
        action = merge_action(findings)
        redacted = apply_redactions(text, findings)
        timings["total"] = (time.perf_counter() - started) * 1000
        return Verdict(stage, action, tuple(findings), redacted, self.policy.ref, timings)

    def _findings(
        self, text: str, stage: Stage, timings: dict[str, float], *, partial: bool = False
    ) -> list[Finding]:
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
        t0 = time.perf_counter()
        findings = self.engine.scan(text, stage).findings if not partial else []
        timings["rules"] = (time.perf_counter() - t0) * 1000
        if self._classifier_rules[stage] and text.strip():
            t1 = time.perf_counter()
            findings.extend(self._classify(text, stage))
            timings["classifier"] = (time.perf_counter() - t1) * 1000
        return findings

    def _scorer(self) -> Scorer:
        with self._classifier_lock:
            if self._classifier is None:
                from guardrails.classifier import load_classifier

                self._classifier = cast(
                    Scorer, load_classifier(self.policy.settings.classifier.model)
                )
            return self._classifier

    def _classify(self, text: str, stage: Stage) -> list[Finding]:
        rules = self._classifier_rules[stage]
        try:
            scorer = self._scorer()
            scores = scorer.score([text])[0]
            thresholds = scorer.thresholds
        except Exception as exc:
            log.error("classifier_failed", error=repr(exc))
            return [self.engine.error_finding("classifier", f"classifier failed: {exc!r}")]
        findings: list[Finding] = []
        mode = self.policy.settings.mode
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
                findings.append(
                    Finding(
                        rule_id=rule.id,
                        category=rule.category,
                        action=rule.action,
                        severity=rule.severity,
                        span=Span(0, len(text)) if rule.action is Action.REDACT else None,
                        score=round(score, 4),
                        message=rule.message,
                        replacement=rule.redaction,
                        shadow=(rule.mode or mode) is Mode.SHADOW,
                    )
                )
        return findings

    def stream_checker(self, stage: Stage | str = Stage.OUTPUT) -> StreamChecker:
        """A checker for one stream of output chunks (see `guardrails.streaming`)."""
        checked_stage = Stage(stage)

        def scan(window: str, final: bool) -> tuple[list[Finding], list[int]]:
            if len(window) > self.policy.settings.max_input_chars:
                return self._findings(window, checked_stage, {}), []
            result = self.engine.scan(window, checked_stage, partial=not final)
            return result.findings, result.holds

        rules = self._classifier_rules[checked_stage]
        mode = self.policy.settings.mode

        def classify(text: str) -> list[Finding]:
            return self._classify(text, checked_stage) if text.strip() else []

        return StreamChecker(
            scan=scan,
            policy=self.policy.ref,
            holdback=self.policy.settings.stream_holdback_chars,
            stage=checked_stage,
            classify=classify if rules else None,
            classify_enforcing=any(
                r.action in (Action.BLOCK, Action.REDACT) and (r.mode or mode) is Mode.ENFORCE
                for r in rules
            ),
        )

    # --- wrapping --------------------------------------------------------------------------------

    def __call__(self, fn: F) -> F:
        """Use the guard as a decorator: ``@guard`` wraps the generator function below it."""
        return self.wrap(fn)

    def wrap(self, fn: F, *, on_block: OnBlock | None = None, model: str | None = None) -> F:
        """Put ``fn`` behind the guard.

        ``fn(prompt, **options)`` may return a str, an iterator of str chunks, or be
        ``async`` (returning a str) or an async generator (yielding chunks). The wrapper has
        the same shape. The prompt must be the first positional argument.

        Args:
            on_block: override the guard's ``raise``/``refuse`` choice for this function.
            model: the model name audited for this function's calls.
        """
        block_mode: OnBlock = on_block or self.on_block
        model_name = model or self.model or getattr(fn, "__name__", None)
        call_target = type(fn).__call__  # an object whose __call__ is async or a generator
        if inspect.isasyncgenfunction(fn) or inspect.isasyncgenfunction(call_target):

            @functools.wraps(fn)
            def async_stream_wrapper(
                prompt: Any, /, *args: Any, **kwargs: Any
            ) -> AsyncIterator[str]:
                return self._astream(fn, prompt, args, kwargs, block_mode, model_name)

            return cast(F, async_stream_wrapper)
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call_target):

            @functools.wraps(fn)
            async def async_wrapper(prompt: Any, /, *args: Any, **kwargs: Any) -> Any:
                return await self._acall(fn, prompt, args, kwargs, block_mode, model_name)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def sync_wrapper(prompt: Any, /, *args: Any, **kwargs: Any) -> Any:
            return self._call(fn, prompt, args, kwargs, block_mode, model_name)

        return cast(F, sync_wrapper)

    # --- the call paths ---------------------------------------------------------------------------

    def _begin(
        self, prompt: object, model_name: str | None, sink: list[_Call] | None = None
    ) -> tuple[_Call, str | None]:
        context = _CONTEXT.get() or CallContext()
        if context.model is None and model_name is not None:
            context = replace(context, model=model_name)
        request_id = context.request_id or uuid.uuid4().hex
        call = _Call(context=context, request_id=request_id, started=time.perf_counter())
        if sink is not None:
            sink.append(call)
        try:
            call.prompt = _as_text(prompt, "prompt")
        except GuardInputError as exc:
            call.error = f"invalid input: {exc}"
            call.prompt = repr(prompt)[:200]
            return call, str(exc)
        call.input_verdict = self._check(call.prompt, Stage.INPUT)
        return call, None

    def _blocked(
        self, call: _Call, verdict: Verdict, block_mode: _Mode, *, released: str = ""
    ) -> str:
        """Raise `Blocked` or return the refusal (``""`` in outcome mode, where the caller
        reads the verdict instead), after logging; the audit is already written."""
        log.info(
            "guard_blocked",
            request_id=call.request_id,
            stage=verdict.stage.value,
            rules=list(verdict.rule_ids),
        )
        if block_mode == "raise":
            raise Blocked(verdict, call.request_id, released=released)
        if block_mode == "outcome":
            return ""
        return self.policy.settings.refusal

    def _call(
        self,
        fn: Callable[..., Any],
        prompt: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        block_mode: _Mode,
        model_name: str | None,
        sink: list[_Call] | None = None,
    ) -> Any:
        call, input_error = self._begin(prompt, model_name, sink)
        with structlog.contextvars.bound_contextvars(request_id=call.request_id):
            if input_error is not None:
                self._audit(call)
                raise GuardInputError(input_error)
            verdict = call.input_verdict
            assert verdict is not None
            if verdict.blocked:
                self._audit(call)
                return self._blocked(call, verdict, block_mode)
            try:
                result = fn(verdict.text, *args, **kwargs)
            except Exception as exc:
                call.error = f"generator failed: {exc!r}"
                self._audit(call)
                raise GeneratorError(f"generator failed: {exc}") from exc
            if isinstance(result, str | bytes):
                return self._finish_text(call, result, block_mode)
            if isinstance(result, Iterator):
                return self._stream(call, result, block_mode)
            call.error = f"generator returned {type(result).__name__}, not text"
            self._audit(call)
            raise GuardInputError(call.error)

    def _finish_text(self, call: _Call, raw: str | bytes, block_mode: _Mode) -> str:
        try:
            output = _as_text(raw, "generator output")
        except GuardInputError as exc:
            call.error = str(exc)
            self._audit(call)
            raise
        call.output_raw = output
        call.output_verdict = self._check(output, Stage.OUTPUT)
        self._audit(call)
        if call.output_verdict.blocked:
            return self._blocked(call, call.output_verdict, block_mode)
        return call.output_verdict.text

    def _stream(self, call: _Call, chunks: Iterator[Any], block_mode: _Mode) -> Iterator[str]:
        call.streamed = True
        checker = self.stream_checker(Stage.OUTPUT)
        with structlog.contextvars.bound_contextvars(request_id=call.request_id):
            try:
                for chunk in chunks:
                    step = checker.feed(_as_text(chunk, "stream chunk"))
                    if step.text:
                        yield step.text
                    if step.blocked:
                        break
                else:
                    step = checker.finish()
                    if step.text:
                        yield step.text
            except (GeneratorExit, asyncio.CancelledError, Exception) as exc:
                error = self._stream_error(call, exc)
                if error is exc:
                    raise
                raise error from exc
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
                self._end_stream(call, checker)
                self._audit(call)
            verdict = checker.verdict()
            if verdict.blocked:
                marker = self._blocked(call, verdict, block_mode, released=checker.released_text)
                if marker:
                    yield marker

    @staticmethod
    def _end_stream(call: _Call, checker: StreamChecker) -> None:
        """Record what a finished (or stopped) stream produced and released."""
        call.output_raw = checker.raw_text
        call.output_verdict = checker.verdict()
        call.released_chars = checker.released_raw_chars

    @staticmethod
    def _stream_error(call: _Call, exc: BaseException) -> BaseException:
        """Record why a stream stopped early; return what to raise in its place.

        The caller going away and invalid chunks keep their exception; anything the
        generator raised becomes a `GeneratorError`.
        """
        if isinstance(exc, GeneratorExit | asyncio.CancelledError):
            call.error = "stream closed by the caller"
            return exc
        if isinstance(exc, GuardInputError):
            call.error = str(exc)
            return exc
        call.error = f"generator failed: {exc!r}"
        return GeneratorError(f"generator failed: {exc}")

    async def _acall(
        self,
        fn: Callable[..., Any],
        prompt: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        block_mode: _Mode,
        model_name: str | None,
        sink: list[_Call] | None = None,
    ) -> Any:
        call, input_error = self._begin(prompt, model_name, sink)
        with structlog.contextvars.bound_contextvars(request_id=call.request_id):
            if input_error is not None:
                await self._aaudit(call)
                raise GuardInputError(input_error)
            verdict = call.input_verdict
            assert verdict is not None
            if verdict.blocked:
                await self._aaudit(call)
                return self._blocked(call, verdict, block_mode)
            try:
                result = await fn(verdict.text, *args, **kwargs)
            except Exception as exc:
                call.error = f"generator failed: {exc!r}"
                await self._aaudit(call)
                raise GeneratorError(f"generator failed: {exc}") from exc
            try:
                output = _as_text(result, "generator output")
            except GuardInputError as exc:
                call.error = str(exc)
                await self._aaudit(call)
                raise
            call.output_raw = output
            call.output_verdict = self._check(output, Stage.OUTPUT)
            await self._aaudit(call)
            if call.output_verdict.blocked:
                return self._blocked(call, call.output_verdict, block_mode)
            return call.output_verdict.text

    async def _astart(
        self, prompt: object, model_name: str | None, sink: list[_Call] | None = None
    ) -> _Call:
        """The input half of an async stream: check, and audit the call if it ends here."""
        call, input_error = self._begin(prompt, model_name, sink)
        if input_error is not None:
            with structlog.contextvars.bound_contextvars(request_id=call.request_id):
                await self._aaudit(call)
            raise GuardInputError(input_error)
        assert call.input_verdict is not None
        if call.input_verdict.blocked:
            with structlog.contextvars.bound_contextvars(request_id=call.request_id):
                await self._aaudit(call)
        return call

    async def _astream(
        self,
        fn: Callable[..., Any],
        prompt: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        block_mode: _Mode,
        model_name: str | None,
    ) -> AsyncIterator[str]:
        call = await self._astart(prompt, model_name)
        async for chunk in self._astream_body(call, fn, args, kwargs, block_mode):
            yield chunk

    async def _astream_body(
        self,
        call: _Call,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        block_mode: _Mode,
    ) -> AsyncIterator[str]:
        """The rest of an async stream, after `_astart` let the prompt through (or not)."""
        verdict = call.input_verdict
        assert verdict is not None
        with structlog.contextvars.bound_contextvars(request_id=call.request_id):
            if verdict.blocked:
                marker = self._blocked(call, verdict, block_mode)
                if marker:
                    yield marker
                return
            call.streamed = True
            checker = self.stream_checker(Stage.OUTPUT)
            try:
                chunks = fn(verdict.text, *args, **kwargs)
            except Exception as exc:
                call.error = f"generator failed: {exc!r}"
                await self._aaudit(call)
                raise GeneratorError(f"generator failed: {exc}") from exc
            try:
                async for chunk in chunks:
                    step = checker.feed(_as_text(chunk, "stream chunk"))
                    if step.text:
                        yield step.text
                    if step.blocked:
                        break
                else:
                    step = checker.finish()
                    if step.text:
                        yield step.text
            except (GeneratorExit, asyncio.CancelledError, Exception) as exc:
                error = self._stream_error(call, exc)
                if error is exc:
                    raise
                raise error from exc
            finally:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
                self._end_stream(call, checker)
                await self._aaudit(call)
            if checker.verdict().blocked:
                marker = self._blocked(
                    call, checker.verdict(), block_mode, released=checker.released_text
                )
                if marker:
                    yield marker

    # --- outcomes: the same paths, returning verdicts instead of raising --------------------

    def call(
        self, fn: Callable[..., Any], prompt: object, /, *args: Any, **kwargs: Any
    ) -> CallOutcome:
        """Run ``fn(prompt, ...)`` (returning a str) through the guard; never raises on a block.

        The outcome carries the request id and both verdicts, for callers (such as the proxy)
        that build their own response from them. Invalid input and generator failures still
        raise (`GuardInputError`, `GeneratorError`), after being audited.
        """
        sink: list[_Call] = []
        text = self._call(fn, prompt, args, kwargs, "outcome", self.model, sink)
        if not isinstance(text, str):
            raise GuardInputError("Guard.call needs a generator that returns a str; use stream()")
        return _outcome(sink[0], text)

    async def acall(
        self, fn: Callable[..., Any], prompt: object, /, *args: Any, **kwargs: Any
    ) -> CallOutcome:
        """The async twin of `call`, for ``async def`` generators."""
        sink: list[_Call] = []
        text = await self._acall(fn, prompt, args, kwargs, "outcome", self.model, sink)
        return _outcome(sink[0], text)

    def stream(
        self, fn: Callable[..., Any], prompt: object, /, *args: Any, **kwargs: Any
    ) -> GuardedStream:
        """Check ``prompt`` now and return a `GuardedStream` of the checked output chunks.

        If the prompt is blocked, ``stream.outcome.blocked`` is already true and iterating
        yields nothing (the generator is never called). A block mid-stream ends iteration;
        the outcome then says where and why. Nothing raises on a block.
        """
        sink: list[_Call] = []
        result = self._call(fn, prompt, args, kwargs, "outcome", self.model, sink)
        chunks: Iterator[str] = iter(()) if isinstance(result, str) else result
        return GuardedStream(sink[0], chunks)

    async def astream(
        self, fn: Callable[..., Any], prompt: object, /, *args: Any, **kwargs: Any
    ) -> AsyncGuardedStream:
        """The async twin of `stream`: await it to check the prompt, then ``async for``."""
        call = await self._astart(prompt, self.model)
        return AsyncGuardedStream(call, self._astream_body(call, fn, args, kwargs, "outcome"))

    # --- auditing -------------------------------------------------------------------------------

    def _stored(self, text: str | None, verdict: Verdict | None) -> str | None:
        """``text`` as the audit log keeps it (full, redacted or hashed).

        NUL characters, which PostgreSQL cannot store in text, are written as the escape
        ``\\x00``; the digest in ``hash`` mode is over the exact text.
        """
        if text is None:
            return None
        storage = self.policy.settings.audit.store
        if storage is AuditStorage.HASH:
            return "sha256:" + _sha256(text)
        return self._redacted_for_audit(text, verdict).replace("\x00", "\\x00")

    def _redacted_for_audit(self, text: str, verdict: Verdict | None) -> str:
        if self.policy.settings.audit.store is AuditStorage.FULL:
            return text
        if verdict is None:
            return text
        # Redacted storage hides blocked spans too: the audit log must not become the leak.
        hidden = [
            replace(f, action=Action.REDACT, replacement=f"[{f.action.value.upper()}:{f.rule_id}]")
            if f.action is Action.BLOCK and f.span is not None
            else f
            for f in verdict.findings
        ]
        return apply_redactions(text, [replace(f, shadow=False) for f in hidden])

    def build_event(self, call: _Call) -> AuditEvent:
        """The audit event for a finished (or refused) call."""
        from audit import AuditEvent

        findings: list[dict[str, Any]] = []
        timings: dict[str, float] = {}
        actions: list[Action] = []
        for verdict in (call.input_verdict, call.output_verdict):
            if verdict is None:
                continue
            actions.append(verdict.action)
            for finding in verdict.findings:
                findings.append({"stage": verdict.stage.value, **finding.to_dict()})
            for key, value in verdict.timings_ms.items():
                timings[f"{verdict.stage.value}.{key}"] = round(value, 4)
        final = max(actions, key=lambda a: a.rank) if actions else Action.BLOCK
        if call.error is not None and not actions:
            final = Action.BLOCK
        flagged = any(a is Action.FLAG for a in actions) or any(f.get("shadow") for f in findings)
        return AuditEvent(
            request_id=call.request_id,
            policy_name=self.policy.name,
            policy_version=self.policy.version,
            policy_digest=self.policy.digest,
            action=final.value,
            tenant=call.context.tenant,
            user=call.context.user,
            model=call.context.model,
            prompt=self._stored(call.prompt, call.input_verdict),
            output=self._stored(call.output_raw, call.output_verdict),
            text_storage=self.policy.settings.audit.store.value,
            input_action=call.input_verdict.action.value if call.input_verdict else None,
            output_action=call.output_verdict.action.value if call.output_verdict else None,
            findings=tuple(findings),
            flagged=flagged,
            latency_ms=round((time.perf_counter() - call.started) * 1000, 3),
            timings_ms=timings,
            error=call.error,
            streamed=call.streamed,
            released_chars=call.released_chars,
            metadata=_json_safe(self._provenance(call.context.metadata)),
        )

    def _provenance(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Caller metadata plus the digest of the classifier the policy loaded, if any, so
        every event names the model weights that judged it."""
        out = dict(metadata)
        digest = getattr(self._classifier, "digest", None)
        if isinstance(digest, str):
            out["classifier_digest"] = digest
        return out

    def _audit(self, call: _Call) -> None:
        if self.audit is None:
            return
        event = self.build_event(call)
        self._retry_unwritten()
        try:
            self.audit.write(event)
        except Exception as exc:
            self._audit_failed(call, event, exc)

    async def _aaudit(self, call: _Call) -> None:
        if self.audit is None:
            return
        event = self.build_event(call)
        if self._unwritten:
            await asyncio.to_thread(self._retry_unwritten)
        try:
            await self.audit.write_async(event)
        except Exception as exc:
            self._audit_failed(call, event, exc)

    def _audit_failed(self, call: _Call, event: AuditEvent, exc: Exception) -> None:
        """An event could not be committed: fail closed, or keep it for a retry and go on."""
        if self.policy.settings.on_error is OnError.BLOCK:
            log.error(
                "audit_write_failed",
                request_id=call.request_id,
                event_id=event.event_id,
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
            raise AuditUnavailable(verdict, call.request_id) from exc
        with self._unwritten_lock:
            self._unwritten.append(event)
        log.error(
            "audit_write_deferred",
            request_id=call.request_id,
            event_id=event.event_id,
            error=repr(exc),
            pending=len(self._unwritten),
        )

    def _retry_unwritten(self) -> None:
        """Write events that failed under ``on_error: allow`` before anything newer."""
        if self.audit is None or not self._unwritten:
            return
        with self._unwritten_lock:
            while self._unwritten:
                event = self._unwritten[0]
                try:
                    self.audit.write(event)
                except Exception as exc:
                    log.warning("audit_retry_failed", pending=len(self._unwritten), error=repr(exc))
                    return
                self._unwritten.popleft()

    @property
    def pending_audit_events(self) -> int:
        """Events not yet committed because the store failed under ``on_error: allow``."""
        return len(self._unwritten)


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


def _outcome(call: _Call, text: str) -> CallOutcome:
    assert call.input_verdict is not None
    return CallOutcome(call.request_id, call.input_verdict, call.output_verdict, text)


class GuardedStream:
    """The checked chunks of one stream (from `Guard.stream`); ``outcome`` grows as it goes."""

    def __init__(self, call: _Call, chunks: Iterator[str]) -> None:
        self._call = call
        self._chunks = chunks
        self._released: list[str] = []

    @property
    def request_id(self) -> str:
        """The call's request id (also its audit event's)."""
        return self._call.request_id

    @property
    def outcome(self) -> CallOutcome:
        """Verdicts so far: the input's at once, the output's when the stream has ended."""
        return _outcome(self._call, "".join(self._released))

    def __iter__(self) -> Iterator[str]:
        for chunk in self._chunks:
            self._released.append(chunk)
            yield chunk

    def close(self) -> None:
        """Stop early (e.g. the client went away); the audit event says so."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class AsyncGuardedStream:
    """The async twin of `GuardedStream` (from ``await guard.astream(...)``)."""

    def __init__(self, call: _Call, chunks: AsyncIterator[str]) -> None:
        self._call = call
        self._chunks = chunks
        self._released: list[str] = []

    @property
    def request_id(self) -> str:
        """The call's request id (also its audit event's)."""
        return self._call.request_id

    @property
    def outcome(self) -> CallOutcome:
        """Verdicts so far: the input's at once, the output's when the stream has ended."""
        return _outcome(self._call, "".join(self._released))

    async def __aiter__(self) -> AsyncIterator[str]:
        async for chunk in self._chunks:
            self._released.append(chunk)
            yield chunk

    async def aclose(self) -> None:
        """Stop early (e.g. the client went away); the audit event says so."""
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()
