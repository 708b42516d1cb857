"""The guard: thin synchronous and ``async`` shells around the one pipeline.

Every decision of a guarded call — which checks run in which order, what is released, which
audit events are written and when — lives in `guardrails.pipeline` as flows of effects. This
module only performs those effects: `_Driver` with plain calls, `_AsyncDriver` with ``await``
(checks run in a bounded thread pool, off the event loop; audit writes are shielded from
cancellation). The public face is `Guard` (``check``, ``wrap``/``@guard``, ``call``/``acall``,
``stream``/``astream``) and the two stream objects.

What a caller can rely on (each held by a test in ``tests/guardrails/test_guard_matrix.py``):

* every call through any entry point and any generator shape is one audit record: one
  ``call`` event, or for a stream an ``open`` event committed before the generator is called
  (or, for a function that turns out to return an iterator, before its first chunk is pulled)
  and a ``close`` event committed before the last text is released;
* a stream whose opening cannot be written releases nothing (`AuditUnavailable`); one whose
  closing cannot be written ends with `AuditUnavailable` instead of its last text;
* a caller that goes away — closing the stream, dropping it, cancelling the task — still
  gets its record closed, marked ``client_closed``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

import structlog

from guardrails.decision import Stage, Verdict
from guardrails.exceptions import Blocked, GuardInputError
from guardrails.logs import get_logger
from guardrails.pipeline import (
    END,
    CallContext,
    CallOutcome,
    CallState,
    Check,
    ClientClosed,
    CloseSource,
    Effect,
    Feed,
    Finish,
    Flow,
    FlowResult,
    Generate,
    Pipeline,
    Pull,
    Release,
    Scorer,
    Write,
    as_text,
    guard_context,
)
from guardrails.policy import AuditOutage, OnError, Policy, load_policy
from guardrails.streaming import StreamChecker

if TYPE_CHECKING:
    from audit import AuditEvent
    from guardrails.rules import RuleEngine

__all__ = [
    "AsyncGuardedStream",
    "AuditSink",
    "CallContext",
    "CallOutcome",
    "Guard",
    "GuardedStream",
    "OnBlock",
    "Scorer",
    "guard_context",
]

log = get_logger("guardrails.guard")

OnBlock = Literal["raise", "refuse"]
_Mode = Literal["raise", "refuse", "outcome"]
F = TypeVar("F", bound=Callable[..., Any])

#: Stream chunks at least this long are checked in the pool rather than on the event loop.
_OFFLOAD_CHUNK_CHARS = 4096


class AuditSink(Protocol):
    """**Protocol:** where audit events go; `audit.AuditWriter` is the real one.

    ``write`` must return only after the event is durable and raise when it is not. The
    guard passes ``fallback="spill"`` (under ``on_error: allow``) to ask the sink to keep the
    event durably elsewhere (its spill files) rather than fail; a sink that cannot, raises.
    """

    def write(self, event: AuditEvent, /, **options: Any) -> object: ...

    async def write_async(self, event: AuditEvent, /, **options: Any) -> object: ...


@dataclass(slots=True)
class _Run:
    """The I/O side of one call: the generator, its arguments, and the stream it returned."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    source: Any = None
    closed: bool = False


class Guard:
    """A policy's pipeline, an optional classifier and an optional audit sink.

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
        check_pool: concurrent.futures.Executor | None = None,
    ) -> None:
        self.pipeline = Pipeline(policy, classifier=classifier)
        self.audit = audit
        self.on_block: OnBlock = on_block
        self.model = model
        self._pool = check_pool
        self._owns_pool = False
        self._closers: list[Callable[[], None]] = []
        self._record_policy: Callable[[str, str, str, str], None] | None = None

    @property
    def policy(self) -> Policy:
        """The policy in force."""
        return self.pipeline.policy

    @property
    def engine(self) -> RuleEngine:
        """The policy's compiled rules."""
        return self.pipeline.engine

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
                ``None`` for no audit log. With a URL, ``spill`` outage mode and
                ``on_error: allow`` both keep events the store refused in fsynced spill files
                under ``settings.audit.spill_dir``, replayed exactly once when it is back.
            hmac_key: key the audit hash chain with HMAC-SHA256.
            classifier: a scorer to use instead of loading ``settings.classifier.model``.
            on_block: ``raise`` `Blocked`, or ``refuse`` by returning the policy's refusal.
            model: the model name audited for calls that do not set one.
        """
        loaded = policy if isinstance(policy, Policy) else load_policy(policy)
        closers: list[Callable[[], None]] = []
        sink: AuditSink | None
        store = None
        if isinstance(audit, str):
            from audit import AuditStore

            settings = loaded.settings
            spilling = (
                settings.audit.outage is AuditOutage.SPILL or settings.on_error is OnError.ALLOW
            )
            spill_dir = Path(settings.audit.spill_dir) if spilling else None
            store = AuditStore(audit, hmac_key=hmac_key, auto_upgrade=True, spill_dir=spill_dir)
            store.record_policy(loaded.digest, loaded.name, loaded.version, loaded.source)
            writer = store.writer()
            sink = cast(AuditSink, writer)
            closers = [writer.close, store.close]
        else:
            sink = audit
        guard = cls(loaded, audit=sink, classifier=classifier, on_block=on_block, model=model)
        guard._closers = closers
        guard._record_policy = store.record_policy if store is not None else None
        return guard

    def with_policy(self, policy: Policy) -> Guard:
        """A guard for ``policy`` sharing this one's audit writer (one chain), classifier,
        check pool and options: what a hot reload swaps in. The new policy's text is recorded
        first.

        The returned guard owns nothing: close this (the original) guard, last.
        """
        if self._record_policy is not None:
            self._record_policy(policy.digest, policy.name, policy.version, policy.source)
        guard = Guard(
            policy,
            audit=self.audit,
            classifier=self.pipeline.classifier,
            on_block=self.on_block,
            model=self.model,
            check_pool=self._check_pool(),
        )
        guard._record_policy = self._record_policy
        return guard

    def close(self) -> None:
        """Close what the guard opened (audit writer and store, check pool)."""
        for closer in self._closers:
            closer()
        self._closers = []
        if self._owns_pool and self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            self._owns_pool = False

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
        return self.pipeline.check(as_text(text, "text"), Stage(stage))

    async def acheck(self, text: str | bytes, stage: Stage | str = Stage.INPUT) -> Verdict:
        """`check`, run in the guard's bounded thread pool so the event loop stays free."""
        verdict: Verdict = await self._offload(
            self.pipeline.check, as_text(text, "text"), Stage(stage)
        )
        return verdict

    def warm(self) -> Guard:
        """Load and run the policy's classifier now (no-op without classifier rules), so
        the first call does not wait for it. Returns the guard."""
        self.pipeline.warm()
        return self

    def stream_checker(self, stage: Stage | str = Stage.OUTPUT) -> StreamChecker:
        """A checker for one stream of chunks (see `guardrails.streaming`)."""
        return self.pipeline.stream_checker(Stage(stage))

    def _check_pool(self) -> concurrent.futures.Executor:
        if self._pool is None:
            workers = min(4, os.cpu_count() or 1)
            self._pool = concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix="guardrails-check"
            )
            self._owns_pool = True
        return self._pool

    async def _offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run CPU-bound ``fn(*args)`` in the check pool, with the caller's contextvars."""
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._check_pool(), functools.partial(context.run, fn, *args)
        )

    # --- wrapping --------------------------------------------------------------------------------

    def __call__(self, fn: F) -> F:
        """Use the guard as a decorator: ``@guard`` wraps the generator function below it."""
        return self.wrap(fn)

    def wrap(self, fn: F, *, on_block: OnBlock | None = None, model: str | None = None) -> F:
        """Put ``fn`` behind the guard.

        ``fn(prompt, **options)`` may return a str, an iterator of str chunks, or be
        ``async`` (returning a str) or an async generator (yielding chunks). The wrapper has
        the same shape: a sync stream is a `GuardedStream` (the prompt is checked and the
        record opened when the wrapper is called), an async one an `AsyncGuardedStream`
        that does nothing until first iterated. The prompt must be the first positional
        argument.

        Args:
            on_block: override the guard's ``raise``/``refuse`` choice for this function.
            model: the model name audited for this function's calls.
        """
        mode: _Mode = on_block or self.on_block
        model_name = model or self.model or getattr(fn, "__name__", None)
        call_target = type(fn).__call__  # an object whose __call__ is async or a generator
        if inspect.isasyncgenfunction(fn) or inspect.isasyncgenfunction(call_target):

            @functools.wraps(fn)
            def async_stream_wrapper(
                prompt: Any, /, *args: Any, **kwargs: Any
            ) -> AsyncGuardedStream:
                call = self.pipeline.begin(model_name)
                flow = self.pipeline.stream_call_flow(call, prompt, known_stream=True)
                return AsyncGuardedStream(self, call, flow, _Run(fn, args, kwargs), mode)

            return cast(F, async_stream_wrapper)
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call_target):

            @functools.wraps(fn)
            async def async_wrapper(prompt: Any, /, *args: Any, **kwargs: Any) -> Any:
                return await self._acall(fn, prompt, args, kwargs, mode, model_name)

            return cast(F, async_wrapper)
        known_stream = inspect.isgeneratorfunction(fn) or inspect.isgeneratorfunction(call_target)

        @functools.wraps(fn)
        def sync_wrapper(prompt: Any, /, *args: Any, **kwargs: Any) -> Any:
            return self._call(fn, prompt, args, kwargs, mode, model_name, known_stream)

        return cast(F, sync_wrapper)

    # --- the sync shell --------------------------------------------------------------------------

    def _call(
        self,
        fn: Callable[..., Any],
        prompt: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        mode: _Mode,
        model_name: str | None,
        known_stream: bool,
    ) -> Any:
        """A sync call: text back, or a primed `GuardedStream` when ``fn`` streams."""
        call = self.pipeline.begin(model_name)
        run = _Run(fn, args, kwargs)
        flow = self.pipeline.stream_call_flow(call, prompt, known_stream=known_stream)
        stream = GuardedStream(self, call, flow, run, mode)
        if stream.ended and run.source is None:
            if not known_stream:  # fn returned text, or the prompt was refused
                return stream.result_text()
            if mode == "raise":  # a blocked prompt raises at the call, not at iteration
                stream.result_text()
        return stream

    def _perform(self, effect: Effect, run: _Run) -> Any:
        """Perform one effect with plain calls (the sync shell)."""
        if isinstance(effect, Check):
            return self.pipeline.check(effect.text, effect.stage)
        if isinstance(effect, Feed):
            return effect.checker.feed(effect.chunk)
        if isinstance(effect, Finish):
            return effect.checker.finish()
        if isinstance(effect, Pull):
            if run.source is None:
                return END
            if not isinstance(run.source, Iterator):
                raise GuardInputError(
                    f"generator returned {type(run.source).__name__}; a sync call needs text "
                    "or an iterator of text (use acall/astream for async generators)"
                )
            return next(run.source, END)
        if isinstance(effect, Write):
            return self._write(effect)
        if isinstance(effect, Generate):
            result = run.fn(effect.prompt, *run.args, **run.kwargs)
            if inspect.isawaitable(result):
                close = getattr(result, "close", None)
                if close is not None:
                    close()  # never awaited: say so instead of warning
                raise GuardInputError(
                    f"{getattr(run.fn, '__name__', 'generator')} is async: use acall/astream"
                )
            if not isinstance(result, str | bytes):
                run.source = result
            return result
        if isinstance(effect, CloseSource):
            return _close_source(run)
        raise AssertionError(f"unexpected effect {effect!r}")

    def _write(self, effect: Write) -> object:
        if self.audit is None:
            return None
        if effect.fallback == "spill":
            return self.audit.write(effect.event, fallback="spill")
        return self.audit.write(effect.event)

    # --- the async shell -------------------------------------------------------------------------

    async def _acall(
        self,
        fn: Callable[..., Any],
        prompt: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        mode: _Mode,
        model_name: str | None,
    ) -> Any:
        call = self.pipeline.begin(model_name)
        run = _Run(fn, args, kwargs)
        flow = self.pipeline.stream_call_flow(call, prompt, known_stream=False)
        stream = AsyncGuardedStream(self, call, flow, run, mode)
        await stream.prime()
        if run.source is None and stream.ended:
            return stream.result_text()
        return stream

    async def _aperform(self, effect: Effect, run: _Run) -> Any:
        """Perform one effect with ``await`` (the async shell): checks off the event loop."""
        if isinstance(effect, Check):
            return await self._offload(self.pipeline.check, effect.text, effect.stage)
        if isinstance(effect, Feed):
            if len(effect.chunk) >= _OFFLOAD_CHUNK_CHARS:
                return await self._offload(effect.checker.feed, effect.chunk)
            return effect.checker.feed(effect.chunk)
        if isinstance(effect, Finish):
            return await self._offload(effect.checker.finish)
        if isinstance(effect, Pull):
            source = run.source
            if source is None:
                return END
            if isinstance(source, AsyncIterator):
                try:
                    return await anext(source)
                except StopAsyncIteration:
                    return END
            if isinstance(source, Iterator):
                return next(source, END)
            raise GuardInputError(
                f"generator returned {type(source).__name__}, not text or a stream of text"
            )
        if isinstance(effect, Generate):
            result = run.fn(effect.prompt, *run.args, **run.kwargs)
            if inspect.isawaitable(result):
                result = await result
            if not isinstance(result, str | bytes):
                run.source = result
            return result
        if isinstance(effect, CloseSource):
            aclose = getattr(run.source, "aclose", None)
            if aclose is not None and not run.closed:
                run.closed = True
                try:
                    await aclose()
                except Exception as exc:
                    log.warning("generator_close_failed", error=repr(exc))
                return None
            return _close_source(run)
        raise AssertionError(f"unexpected effect {effect!r}")

    async def _awrite(self, effect: Write) -> object:
        if self.audit is None:
            return None
        if effect.fallback == "spill":
            return await self.audit.write_async(effect.event, fallback="spill")
        return await self.audit.write_async(effect.event)

    # --- outcomes: the same flows, returning verdicts instead of raising ------------------------

    def call(
        self, fn: Callable[..., Any], prompt: object, /, *args: Any, **kwargs: Any
    ) -> CallOutcome:
        """Run ``fn(prompt, ...)`` through the guard; never raises on a block.

        The outcome carries the request id and both verdicts, for callers (such as the proxy)
        that build their own response from them. A generator that streams is read to its
        end (one record: its opening and closing). Invalid input, generator failures and an
        audit store that cannot record the call still raise (`GuardInputError`,
        `GeneratorError`, `AuditUnavailable`), after being audited where the store allows.
        """
        stream = GuardedStream(
            self,
            call := self.pipeline.begin(self.model),
            self.pipeline.stream_call_flow(call, prompt, known_stream=False),
            _Run(fn, args, kwargs),
            "outcome",
        )
        for _ in stream:
            pass
        return stream.outcome

    async def acall(
        self, fn: Callable[..., Any], prompt: object, /, *args: Any, **kwargs: Any
    ) -> CallOutcome:
        """The async twin of `call`, for any generator shape (``async`` or not)."""
        call = self.pipeline.begin(self.model)
        flow = self.pipeline.stream_call_flow(call, prompt, known_stream=False)
        stream = AsyncGuardedStream(self, call, flow, _Run(fn, args, kwargs), "outcome")
        async for _ in stream:
            pass
        return stream.outcome

    def stream(
        self, fn: Callable[..., Any], prompt: object, /, *args: Any, **kwargs: Any
    ) -> GuardedStream:
        """Check ``prompt`` now and return a `GuardedStream` of the checked output chunks.

        If the prompt is blocked, ``stream.outcome.blocked`` is already true and iterating
        yields nothing (the generator is never called). A generator that returns text is a
        stream of one chunk. A block mid-stream ends iteration; the outcome then says where
        and why. Nothing raises on a block.
        """
        call = self.pipeline.begin(self.model)
        known = inspect.isgeneratorfunction(fn)
        flow = self.pipeline.stream_call_flow(call, prompt, known_stream=known)
        return GuardedStream(self, call, flow, _Run(fn, args, kwargs), "outcome")

    async def astream(
        self, fn: Callable[..., Any], prompt: object, /, *args: Any, **kwargs: Any
    ) -> AsyncGuardedStream:
        """The async twin of `stream`: await it to check the prompt and open the record,
        then ``async for``."""
        call = self.pipeline.begin(self.model)
        known = inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn)
        flow = self.pipeline.stream_call_flow(call, prompt, known_stream=known)
        stream = AsyncGuardedStream(self, call, flow, _Run(fn, args, kwargs), "outcome")
        await stream.prime()
        return stream


def _close_source(run: _Run) -> None:
    """Close the generator's iterator once; its failure to close is logged, not raised (the
    record must still be closed after it)."""
    if run.closed:
        return
    run.closed = True
    close = getattr(run.source, "close", None)
    if close is not None:
        try:
            close()
        except Exception as exc:
            log.warning("generator_close_failed", error=repr(exc))


@dataclass(slots=True)
class _Stepper:
    """The bookkeeping both drivers share: where a flow stands and how it ended."""

    flow: Flow
    effect: Effect | None = None
    started: bool = False
    ended: bool = False
    result: FlowResult | None = None
    emitted_marker: bool = False
    cancel_pending: bool = False
    extra: list[str] = field(default_factory=list)
    #: How many times the flow was resumed: tells a driver whether another task (a
    #: concurrent ``aclose``) moved the flow on while it awaited an effect.
    count: int = 0

    def send(self, value: Any = None, error: BaseException | None = None) -> None:
        """Resume the flow with ``value`` (or ``error`` thrown in); note its next effect."""
        self.started = True
        self.count += 1
        try:
            effect = self.flow.throw(error) if error is not None else self.flow.send(value)
        except StopIteration as stop:
            self.effect, self.ended, self.result = None, True, stop.value
            return
        except BaseException:
            self.effect, self.ended = None, True
            raise
        self.effect = effect


class _StreamBase:
    """What the two stream objects share: the call, its outcome, and how a block ends it."""

    def __init__(self, guard: Guard, call: CallState, flow: Flow, run: _Run, mode: _Mode) -> None:
        self._guard = guard
        self._call = call
        self._run = run
        self._mode: _Mode = mode
        self._steps = _Stepper(flow)

    @property
    def request_id(self) -> str:
        """The call's request id (also its audit record's)."""
        return self._call.request_id

    @property
    def ended(self) -> bool:
        """True once the call's flow has finished (its record is complete)."""
        return self._steps.ended

    @property
    def outcome(self) -> CallOutcome:
        """Verdicts so far: the input's at once, the output's when the stream has ended."""
        return self._guard.pipeline.outcome(self._call, "".join(self._call.released))

    def result_text(self) -> str:
        """A finished call's text for a ``raise``/``refuse`` caller (raises `Blocked`)."""
        result = self._steps.result
        assert result is not None
        if result.blocked is None:
            return result.text
        marker = self._block_marker(result)
        return marker or ""

    def _block_marker(self, result: FlowResult) -> str | None:
        """After a block: raise (``raise``), the refusal text (``refuse``), or nothing."""
        verdict = result.blocked
        assert verdict is not None
        log.info(
            "guard_blocked",
            request_id=self._call.request_id,
            stage=verdict.stage.value,
            rules=list(verdict.rule_ids),
        )
        if self._mode == "raise":
            raise Blocked(verdict, self._call.request_id, released=result.text)
        if self._mode == "refuse":
            return self._guard.policy.settings.refusal
        return None

    def _close_with(self, perform: Callable[[Effect], Any]) -> None:
        """Throw `ClientClosed` into a started, unfinished flow and finish it, performing
        its last effects (the closing write) with ``perform``; nothing more is released."""
        steps = self._steps
        if steps.ended or not steps.started:
            return
        with contextlib.suppress(ClientClosed):
            steps.send(error=ClientClosed())
            while (effect := steps.effect) is not None:
                if isinstance(effect, Release):
                    steps.send(None)
                    continue
                try:
                    value = perform(effect)
                except Exception as exc:
                    steps.send(error=exc)
                    continue
                steps.send(value)

    def _close_blocking(self) -> None:
        """Close the record without awaiting anything (from a finalizer)."""
        raise NotImplementedError

    def __del__(self) -> None:
        try:
            self._close_blocking()
        except BaseException as exc:  # nothing may escape a finalizer; say what was lost
            log.error("stream_close_failed", request_id=self._call.request_id, error=repr(exc))

    def _after_end(self) -> str | None:
        """The one marker to hand out once the flow ended (None: the stream is over)."""
        steps = self._steps
        if steps.emitted_marker or steps.result is None:
            return None
        steps.emitted_marker = True
        result = steps.result
        if result.blocked is not None:
            return self._block_marker(result)
        if self._run.source is None and result.text and not self._call.released:
            self._call.released.append(result.text)  # a text result is a one-chunk stream
            return result.text
        return None


class GuardedStream(_StreamBase, Iterator[str]):
    """The checked chunks of one sync stream; ``outcome`` grows as it goes.

    Created primed: the prompt has been checked and, when the call streams, its record opened
    (or `AuditUnavailable` raised) before the caller holds the object. Closing it, or
    dropping it unfinished, closes the record as ``client_closed``.
    """

    def __init__(self, guard: Guard, call: CallState, flow: Flow, run: _Run, mode: _Mode) -> None:
        super().__init__(guard, call, flow, run, mode)
        with structlog.contextvars.bound_contextvars(request_id=call.request_id):
            self._advance(prime=True)

    def _advance(self, *, prime: bool = False) -> str | None:
        """Perform effects until text is released (returned) or the flow ends (None); with
        ``prime``, stop before the first chunk is pulled."""
        steps = self._steps
        if not steps.started:
            steps.send()
        elif isinstance(steps.effect, Release):
            steps.send(None)
        while (effect := steps.effect) is not None:
            if isinstance(effect, Release):
                return effect.text
            if prime and isinstance(effect, Pull):
                return None
            try:
                value = self._guard._perform(effect, self._run)
            except Exception as exc:
                steps.send(error=exc)
                continue
            steps.send(value)
        return None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if not self._steps.ended:
            with structlog.contextvars.bound_contextvars(request_id=self._call.request_id):
                text = self._advance()
            if text is not None:
                return text
        marker = self._after_end()
        if marker:
            return marker
        raise StopIteration

    def close(self) -> None:
        """Stop early (e.g. the client went away); the record is closed as ``client_closed``."""
        self._close_with(lambda effect: self._guard._perform(effect, self._run))

    def _close_blocking(self) -> None:
        self.close()


class AsyncGuardedStream(_StreamBase, AsyncIterator[str]):
    """The async twin of `GuardedStream`.

    From ``await guard.astream(...)`` it is primed like the sync one; from a wrapped async
    generator function it does nothing until first iterated. Cancelling the task that
    iterates, or ``aclose()``, closes the record as ``client_closed``; audit writes are
    shielded, so a cancelled caller never withdraws a record half-way.
    """

    async def prime(self) -> None:
        """Check the prompt and open the record, stopping before the first chunk."""
        with structlog.contextvars.bound_contextvars(request_id=self._call.request_id):
            await self._advance(prime=True)

    _closing: bool = False
    _inflight: asyncio.Future[object] | None = None

    async def _advance(self, *, prime: bool = False) -> str | None:
        steps = self._steps
        if self._closing:  # an aclose() owns the flow now
            return None
        if not steps.started:
            steps.send()
        elif isinstance(steps.effect, Release):
            steps.send(None)
        while (effect := steps.effect) is not None:
            if steps.cancel_pending and not isinstance(effect, Write | CloseSource):
                steps.cancel_pending = False
                await self._cancel_flow()
                raise asyncio.CancelledError
            if isinstance(effect, Release):
                return effect.text
            if prime and isinstance(effect, Pull):
                return None
            before = steps.count
            try:
                if isinstance(effect, Write):
                    value = await self._shielded_write(effect, driver=True)
                else:
                    value = await self._guard._aperform(effect, self._run)
            except asyncio.CancelledError:
                await self._cancel_flow()
                raise
            except Exception as exc:
                if steps.count != before or self._closing:
                    return None  # a concurrent aclose() took the flow over meanwhile
                steps.send(error=exc)
                continue
            if steps.count != before or self._closing:
                return None
            steps.send(value)
        return None

    async def _shielded_write(self, effect: Write, *, driver: bool = False) -> object:
        """Write, finishing the write even if the caller is cancelled meanwhile (the
        cancellation is then delivered at the flow's next step)."""
        task = asyncio.ensure_future(self._guard._awrite(effect))
        if driver:
            self._inflight = task
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.cancelled():
                    raise
                self._steps.cancel_pending = True
                if task.done():
                    return task.result()

    async def _cancel_flow(self) -> None:
        """The caller went away: let the flow close the record, performing its last writes."""
        steps = self._steps
        if steps.ended or not steps.started or self._closing:
            return
        self._closing = True
        inflight = self._inflight
        if inflight is not None and not inflight.done() and isinstance(steps.effect, Write):
            # A concurrent aclose() while the iterating task awaits a write (the opening):
            # let that write finish and hand its result to the flow first, so the record
            # the flow closes below is one that was opened, in order.
            before = steps.count
            await asyncio.wait([inflight])
            if steps.count == before and not steps.ended:
                if inflight.cancelled():
                    steps.send(error=RuntimeError("the audit write was cancelled"))
                elif (error := inflight.exception()) is not None:
                    steps.send(error=error)
                else:
                    steps.send(inflight.result())
            if steps.ended:
                return
        cancelled = False
        with contextlib.suppress(ClientClosed):
            steps.send(error=ClientClosed())
            while (effect := steps.effect) is not None:
                if isinstance(effect, Release):
                    steps.send(None)
                    continue
                try:
                    if isinstance(effect, Write):
                        value = await self._shielded_write(effect)
                    else:
                        value = await self._guard._aperform(effect, self._run)
                except asyncio.CancelledError:
                    if not isinstance(effect, CloseSource):
                        raise
                    # Cancelled again inside the generator's own cleanup: give up closing
                    # the generator, not the record; the cancellation is re-raised after.
                    log.warning("generator_close_cancelled", request_id=self._call.request_id)
                    cancelled = True
                    value = None
                except Exception as exc:
                    steps.send(error=exc)
                    continue
                steps.send(value)
        if cancelled:
            raise asyncio.CancelledError

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        if not self._steps.ended:
            with structlog.contextvars.bound_contextvars(request_id=self._call.request_id):
                text = await self._advance()
            if text is not None:
                return text
        marker = self._after_end()
        if marker:
            return marker
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop early (e.g. the client went away); the record is closed as ``client_closed``."""
        await self._cancel_flow()

    def _close_blocking(self) -> None:
        # Dropped unfinished without aclose(): close the record with blocking writes (the
        # async source is left to asyncio's own async-generator finalizer).
        def perform(effect: Effect) -> Any:
            if isinstance(effect, Write):
                return self._guard._write(effect)
            if isinstance(effect, Check | Feed | Finish):
                return self._guard._perform(effect, self._run)
            return None

        self._close_with(perform)
