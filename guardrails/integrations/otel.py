"""OpenTelemetry spans for a guard: `traced`.

``traced(guard)`` instruments a guard in place: every call through ``guard.wrap`` (and the
``@guard`` decorator) is a ``guardrails.call`` span, with child spans ``guardrails.check``
(one per stage checked), ``guardrails.generate`` (the wrapped generator; for a stream, until
its last chunk) and ``guardrails.audit.write``. Attributes name the action, the rules and the
policy (name, version, digest), the request id and the model, never the prompt or output
text. Spans go to the global tracer provider unless one is given.

Needs ``opentelemetry-api`` (the ``otel`` extra); an SDK and an exporter are the
application's choice.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer, TracerProvider

from guardrails.decision import Verdict
from guardrails.guard import Guard

__all__ = ["traced"]

F = TypeVar("F", bound=Callable[..., Any])
_NAME = "guardrails"


def _verdict_attributes(span: Span, verdict: Verdict, *, prefix: str) -> None:
    span.set_attribute(f"{prefix}.action", verdict.action.value)
    if verdict.rule_ids:
        span.set_attribute(f"{prefix}.rules", list(verdict.rule_ids))


class _TracedSink:
    """The guard's audit sink with a span per write; sets the call span's attributes."""

    def __init__(self, inner: Any, tracer: Tracer) -> None:
        self._inner = inner
        self._tracer = tracer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _annotate(self, event: Any) -> None:
        call = trace.get_current_span()
        rules = sorted({str(f.get("rule_id")) for f in event.findings if f.get("rule_id")})
        for span in (call,):
            span.set_attribute("guardrails.action", str(event.action))
            span.set_attribute("guardrails.request_id", str(event.request_id))
            span.set_attribute("guardrails.policy.name", str(event.policy_name))
            span.set_attribute("guardrails.policy.version", str(event.policy_version))
            span.set_attribute("guardrails.policy.digest", str(event.policy_digest))
            if rules:
                span.set_attribute("guardrails.rules", rules)
            if event.model:
                span.set_attribute("guardrails.model", str(event.model))

    def write(self, event: Any, /, **options: Any) -> object:
        self._annotate(event)
        with self._tracer.start_as_current_span("guardrails.audit.write") as span:
            span.set_attribute("guardrails.request_id", str(event.request_id))
            return self._inner.write(event, **options)

    async def write_async(self, event: Any, /, **options: Any) -> object:
        self._annotate(event)
        with self._tracer.start_as_current_span("guardrails.audit.write") as span:
            span.set_attribute("guardrails.request_id", str(event.request_id))
            return await self._inner.write_async(event, **options)


def _iterate_in(span: Span, source: Iterator[Any], on_end: Callable[[], None]) -> Iterator[Any]:
    """``source``, each step run with ``span`` current; ``on_end`` when it ends or closes."""
    try:
        while True:
            with trace.use_span(span, end_on_exit=False):
                try:
                    item = next(source)
                except StopIteration:
                    return
            yield item
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            with trace.use_span(span, end_on_exit=False):
                close()
        on_end()


async def _aiterate_in(
    span: Span, source: AsyncIterator[Any], on_end: Callable[[], None]
) -> AsyncIterator[Any]:
    try:
        while True:
            with trace.use_span(span, end_on_exit=False):
                try:
                    item = await anext(source)
                except StopAsyncIteration:
                    return
            yield item
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with trace.use_span(span, end_on_exit=False):
                await aclose()
        on_end()


def _end(span: Span, error: BaseException | None = None) -> None:
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.set_attribute("guardrails.error", type(error).__name__)
    span.end()


def traced(guard: Guard, *, tracer_provider: TracerProvider | None = None) -> Guard:
    """Instrument ``guard`` in place (and return it) as the module docstring says."""
    tracer = trace.get_tracer(_NAME, tracer_provider=tracer_provider)
    pipeline = guard.pipeline
    check = pipeline.check

    def traced_check(text: Any, stage: Any) -> Verdict:
        with tracer.start_as_current_span("guardrails.check") as span:
            verdict = check(text, stage)
            span.set_attribute("guardrails.stage", verdict.stage.value)
            _verdict_attributes(span, verdict, prefix="guardrails")
            for name, ms in verdict.timings_ms.items():
                span.set_attribute(f"guardrails.timing_ms.{name}", float(ms))
            return verdict

    setattr(pipeline, "check", traced_check)  # noqa: B010 - an instance override, on purpose
    if guard.audit is not None:
        guard.audit = _TracedSink(guard.audit, tracer)
    wrap = guard.wrap

    def traced_generator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            def agen(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                span = tracer.start_span("guardrails.generate")
                return _aiterate_in(span, fn(*args, **kwargs), span.end)

            return agen
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def coro(*args: Any, **kwargs: Any) -> Any:
                with tracer.start_as_current_span("guardrails.generate"):
                    return await fn(*args, **kwargs)

            return coro

        @functools.wraps(fn)
        def plain(*args: Any, **kwargs: Any) -> Any:
            span = tracer.start_span("guardrails.generate")
            try:
                with trace.use_span(span, end_on_exit=False):
                    result = fn(*args, **kwargs)
            except BaseException as exc:
                _end(span, exc)
                raise
            if isinstance(result, Iterator):
                return _iterate_in(span, result, span.end)
            span.end()
            return result

        return plain

    def traced_wrap(fn: F, **options: Any) -> F:
        guarded = wrap(traced_generator(fn), **options)
        if inspect.iscoroutinefunction(guarded):

            @functools.wraps(fn)
            async def acall(*args: Any, **kwargs: Any) -> Any:
                span = tracer.start_span("guardrails.call")
                try:
                    with trace.use_span(span, end_on_exit=False):
                        result = await guarded(*args, **kwargs)
                except BaseException as exc:
                    _end(span, exc)
                    raise
                span.end()
                return result

            return acall  # type: ignore[return-value]

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            span = tracer.start_span("guardrails.call")
            try:
                with trace.use_span(span, end_on_exit=False):
                    result = guarded(*args, **kwargs)
            except BaseException as exc:
                _end(span, exc)
                raise
            if isinstance(result, AsyncIterator):
                return _aiterate_in(span, result, span.end)
            if isinstance(result, Iterator):
                return _iterate_in(span, result, span.end)
            span.end()
            return result

        return call  # type: ignore[return-value]

    setattr(guard, "wrap", traced_wrap)  # noqa: B010 - an instance override, on purpose
    return guard
