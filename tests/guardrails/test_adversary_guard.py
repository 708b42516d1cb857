"""Adversarial seams of the guard: concurrent aclose, faults at any write or chunk, odd chunks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails import Guard
from guardrails.exceptions import AuditUnavailable, GeneratorError, GuardInputError
from guardrails.policy import Policy

RULES = Policy.from_content(
    "name: adv\nrules:\n  - id: email\n    category: pii\n    action: redact\n"
    "    pattern: '[a-z]+@example\\.com'\n    replacement: '[EMAIL]'\n    normalization: []\n"
)
REPLY = "Contact me at leak@example.com any time, or later."


class Sink:
    """Keeps events; fails the writes numbered in ``fail_on`` (1-based); ``gate`` holds the
    opening write until released."""

    def __init__(self, fail_on: set[int] | None = None, gate_open: bool = False) -> None:
        self.events: list[Any] = []
        self.writes = 0
        self.fail_on = fail_on or set()
        self.gate_open = gate_open
        self.entered: asyncio.Event | None = None
        self.gate: asyncio.Event | None = None

    def write(self, event: Any, /, **options: Any) -> None:
        self.writes += 1
        if self.writes in self.fail_on:
            raise ConnectionError("store down")
        self.events.append(event)

    async def write_async(self, event: Any, /, **options: Any) -> None:
        if self.gate_open and event.phase == "open":
            assert self.entered is not None
            assert self.gate is not None
            self.entered.set()
            await self.gate.wait()
        await asyncio.sleep(0)
        self.write(event, **options)

    def phases(self) -> list[str]:
        return [e.phase for e in self.events]


def chunks_of(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_aclose_during_the_opening_write_still_closes_the_record() -> None:
    """Counterexample: aclose() while another task awaits the opening write left an ``open``
    with no ``close``; now the opening finishes first and the record is closed client_closed."""
    sink = Sink(gate_open=True)
    guard = Guard(RULES, audit=sink)

    async def gen(prompt: str) -> AsyncIterator[str]:
        yield "never pulled"

    async def main() -> None:
        sink.entered, sink.gate = asyncio.Event(), asyncio.Event()
        stream = guard.wrap(gen)("hello")
        first = asyncio.create_task(stream.__anext__())
        await sink.entered.wait()
        closer = asyncio.create_task(stream.aclose())
        await asyncio.sleep(0)
        sink.gate.set()
        await closer
        with pytest.raises(StopAsyncIteration):
            await first
        await stream.aclose()  # twice: nothing more

    asyncio.run(main())
    assert sink.phases() == ["open", "close"]
    assert sink.events[1].stream_end == "client_closed"
    assert sink.events[1].request_id == sink.events[0].request_id


def test_aclose_concurrent_with_a_pending_pull_closes_once() -> None:
    """aclose() (twice, concurrently) while the iterating task waits on the generator: one
    record, client_closed; when the generator then yields, the pending __anext__ ends
    without releasing it."""
    sink = Sink()
    guard = Guard(RULES, audit=sink)
    waiting, resume = asyncio.Event(), asyncio.Event()

    async def gen(prompt: str) -> AsyncIterator[str]:
        waiting.set()
        await resume.wait()
        yield "never released"

    async def main() -> None:
        stream = guard.wrap(gen)("hello")
        task = asyncio.create_task(stream.__anext__())
        await waiting.wait()
        await asyncio.gather(stream.aclose(), stream.aclose())
        assert sink.phases() == ["open", "close"]
        resume.set()
        with pytest.raises(StopAsyncIteration):
            await task

    asyncio.run(main())
    assert sink.phases() == ["open", "close"]
    assert sink.events[1].stream_end == "client_closed"


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 12),
    raise_at=st.one_of(st.none(), st.integers(0, 8)),
    fail_write=st.one_of(st.none(), st.integers(1, 2)),
    use_async=st.booleans(),
)
def test_faults_at_any_chunk_and_write_keep_one_record(
    size: int, raise_at: int | None, fail_write: int | None, use_async: bool
) -> None:
    """A generator raising at the n-th chunk × a store failing the n-th write, sync and async:
    at most one record per call, never a release before the opening, never the end of the
    text without a durable closing; released text is a prefix of the checked text."""
    sink = Sink(fail_on={fail_write} if fail_write else set())
    guard = Guard(RULES, audit=sink)
    parts = chunks_of(REPLY, size)

    def gen(prompt: str) -> Iterator[str]:
        for i, part in enumerate(parts):
            if i == raise_at:
                raise ValueError("model crashed")
            yield part

    async def agen(prompt: str) -> AsyncIterator[str]:
        for part in gen(prompt):
            await asyncio.sleep(0)
            yield part

    released: list[str] = []
    error: BaseException | None = None
    try:
        if use_async:

            async def main() -> None:
                async for chunk in guard.wrap(agen)("hello"):
                    released.append(chunk)

            asyncio.run(main())
        else:
            for chunk in guard.wrap(gen)("hello"):
                released.append(chunk)
    except (AuditUnavailable, GeneratorError) as exc:
        error = exc
    expected = "Contact me at [EMAIL] any time, or later."
    text = "".join(released)
    assert expected.startswith(text)
    phases = sink.phases()
    assert phases in ([], ["open"], ["open", "close"])
    if fail_write == 1:
        assert isinstance(error, AuditUnavailable)
        assert released == []
        assert phases == []
    elif fail_write == 2:
        assert isinstance(error, AuditUnavailable)
        assert phases == ["open"]
        assert text != expected
    else:
        assert phases == ["open", "close"]
        end = sink.events[1].stream_end
        if raise_at is not None and raise_at < len(parts):
            assert isinstance(error, GeneratorError)
            assert end == "error"
            assert text != expected
        else:
            assert error is None
            assert end == "complete"
            assert text == expected
            assert sink.events[1].released_chars == len(REPLY)


@pytest.mark.parametrize("bad", [42, None, b"\xff\xfe", object()])
def test_a_chunk_that_is_not_text_ends_the_record_as_error(bad: object) -> None:
    """A generator yielding a non-str (or invalid UTF-8 bytes) chunk: GuardInputError, the
    record closed as ``error``, nothing after the bad chunk released."""
    sink = Sink()

    def gen(prompt: str) -> Iterator[Any]:
        yield "fine text. "
        yield bad
        yield "after the bad chunk"

    released: list[str] = []

    def drain() -> None:
        for chunk in Guard(RULES, audit=sink).wrap(gen)("hello"):
            released.append(chunk)

    with pytest.raises(GuardInputError):
        drain()
    assert sink.phases() == ["open", "close"]
    assert sink.events[1].stream_end == "error"
    assert "after" not in "".join(released)


def test_utf8_bytes_chunks_are_checked_like_text() -> None:
    """Bytes chunks (UTF-8, split inside the e-mail) are decoded and checked: the address
    never reaches the caller."""
    sink = Sink()

    def gen(prompt: str) -> Iterator[bytes]:
        for part in chunks_of(REPLY, 5):
            yield part.encode()

    out = "".join(Guard(RULES, audit=sink).wrap(gen)("hello"))
    assert "leak@example.com" not in out
    assert "[EMAIL]" in out
    assert sink.phases() == ["open", "close"]


def test_generator_whose_close_raises_still_closes_the_record() -> None:
    """A generator that raises from its ``finally`` when closed early: the record is still
    closed as client_closed and the close does not raise to the caller."""
    sink = Sink()

    def gen(prompt: str) -> Iterator[str]:
        try:
            yield "one. " * 200
            yield "two. " * 200
            yield "three. " * 200
        except GeneratorExit:
            raise RuntimeError("cleanup failed") from None

    stream = Guard(RULES, audit=sink).wrap(gen)("hello")
    assert "two" not in next(stream)
    stream.close()
    stream.close()
    assert sink.phases() == ["open", "close"]
    assert sink.events[1].stream_end == "client_closed"


@pytest.mark.parametrize("shape", ["sync", "async"])
def test_dropped_stream_on_real_sqlite_store_is_one_closed_record(
    tmp_path: Any, shape: str
) -> None:
    """A stream dropped after one chunk, on the real SQLite AuditStore: the log holds its
    open and close, the close saying client_closed."""
    from audit import AuditStore

    url = f"sqlite:///{tmp_path / 'a.db'}"
    guard = Guard.from_policy(RULES, audit=url)
    long = "word " * 2000  # ≥ 4096 chars: checked in the pool in async

    def gen(prompt: str) -> Iterator[str]:
        yield long
        yield long

    async def agen(prompt: str) -> AsyncIterator[str]:
        yield long
        yield long

    if shape == "sync":
        stream: Any = guard.wrap(gen)("hello")
        next(stream)
        del stream
    else:

        async def main() -> None:
            stream = guard.wrap(agen)("hello")
            await stream.__anext__()
            await stream.aclose()

        asyncio.run(main())
    gc.collect()
    guard.close()
    store = AuditStore(url)
    rows = [(e.phase, e.stream_end) for e in store.events()]
    store.close()
    assert sorted(rows, key=str) == sorted([("open", None), ("close", "client_closed")], key=str)


DEFAULT_GUARDS: dict[str, Guard] = {}


def default_guard(on_block: str) -> Guard:
    """The shipped default pack (rules and classifier), one guard per mode sharing one
    loaded classifier, built once."""
    if on_block not in DEFAULT_GUARDS:
        from guardrails.policy import load_policy

        shared = next(iter(DEFAULT_GUARDS.values()), None)
        classifier = shared.pipeline.scorer() if shared is not None else None
        DEFAULT_GUARDS[on_block] = Guard(
            load_policy("default"),
            on_block=on_block,  # type: ignore[arg-type]
            classifier=classifier,
        )
    return DEFAULT_GUARDS[on_block]


FILLER = "The quarterly report covers revenue, costs and the outlook. " * 80  # ~4.8k chars
LEAKS = [
    "Write to leak@example.com or use card 4111 1111 1111 1111. ",
    "my key is AKIAIOSFODNN7EXAMPLE ok. ",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n",
]


@settings(max_examples=6, deadline=None)
@given(
    leak=st.sampled_from(LEAKS),
    where=st.integers(0, 2),
    sizes=st.lists(st.sampled_from([29, 300, 4096, 5000]), min_size=1, max_size=4),
    mode=st.sampled_from(["raise", "refuse"]),
)
def test_async_stream_with_classifier_and_long_chunks_releases_the_whole_verdict(
    leak: str, where: int, sizes: list[int], mode: str
) -> None:
    """The default pack (classifier rules in the stream), async, chunks of ≥ 4096 characters
    (checked in the pool) mixed with tiny ones, raise and refuse modes: what is released
    equals the whole-text verdict's text, or, when blocked, nothing at or past the block."""
    guard = default_guard(mode)
    text = [leak + FILLER, FILLER[:2000] + leak + FILLER[:2000], FILLER + leak][where]
    parts: list[str] = []
    at, i = 0, 0
    while at < len(text):
        size = sizes[i % len(sizes)]
        parts.append(text[at : at + size])
        at, i = at + size, i + 1

    async def gen(prompt: str) -> AsyncIterator[str]:
        for part in parts:
            yield part

    released: list[str] = []

    async def main() -> None:
        async for chunk in guard.wrap(gen)("summarise the report"):
            released.append(chunk)

    whole = guard.check(text, "output")
    if whole.blocked and mode == "raise":
        from guardrails import Blocked

        with pytest.raises(Blocked):
            asyncio.run(main())
    else:
        asyncio.run(main())
    out = "".join(released)
    if not whole.blocked:
        assert out == whole.text
        return
    refusal = guard.policy.settings.refusal
    if mode == "refuse":
        assert out.endswith(refusal)
        out = out[: len(out) - len(refusal)]
    start = min(
        f.span.start for f in whole.findings if f.span is not None and f.action.value == "block"
    )
    assert text.startswith(out[:start])
    assert "BEGIN RSA PRIVATE KEY" not in out
    assert len(out) <= start


class GatedPool(concurrent.futures.ThreadPoolExecutor):
    """A check pool that holds its ``hold``-th task until ``gate`` is set, and says (on the
    loop) when that task was submitted."""

    def __init__(self, hold: int) -> None:
        super().__init__(2)
        self.hold = hold
        self.gate = threading.Event()
        self.calls = 0
        self.submitted: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls != self.hold:
            return super().submit(fn, *args, **kwargs)
        assert self.submitted is not None
        loop, event = self.submitted
        loop.call_soon_threadsafe(event.set)
        gate = self.gate

        def gated(*a: Any, **k: Any) -> Any:
            gate.wait()
            return fn(*a, **k)

        return super().submit(gated, *args, **kwargs)


def test_a_second_cancellation_during_the_generators_cleanup_still_closes_the_record() -> None:
    """Counterexample: the task cancelled while a ≥ 4096-character chunk was checked in the
    pool, then cancelled again while the async generator's ``finally`` awaited its cleanup
    (as anyio cancel scopes do), left an ``open`` with no ``close``."""
    pool = GatedPool(hold=2)  # 1: the prompt check; 2: the long chunk's check
    sink = Sink()
    guard = Guard(RULES, audit=sink, check_pool=pool)

    async def main() -> None:
        cleaning = asyncio.Event()
        pool.submitted = (asyncio.get_running_loop(), asyncio.Event())

        async def gen(prompt: str) -> AsyncIterator[str]:
            try:
                yield "x" * 5000
                yield "never"
            finally:
                cleaning.set()
                await asyncio.Event().wait()  # a slow cleanup: closing an HTTP response

        async def consume() -> None:
            async for _ in guard.wrap(gen)("hello"):
                pass

        task = asyncio.create_task(consume())
        await pool.submitted[1].wait()
        task.cancel()
        await cleaning.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
    finally:
        pool.gate.set()
        pool.shutdown(wait=True)
    assert sink.phases() == ["open", "close"]
    assert sink.events[1].stream_end == "client_closed"
