"""What the two-phase stream record costs: streams per second with the opening write, beside
the same streams with only a closing write, through the real group-commit writer.

A stream's record is an ``open`` event committed before the generator is called and a
``close`` event committed before its end (DESIGN.md, "The audit log"). The floor here is the
one-event design it replaced: the same guard and stream with the opening write skipped (the
``open`` effect answered without writing). Both sides run ``--concurrency`` async streams of
``--chunks`` chunks each against the same kind of store (a fresh SQLite file, or PostgreSQL
with ``--pg``), interleaved ``--rounds`` times; medians and the ratio are printed with the
machine and its load. The issue's goal: the two-phase record costs at most 10% of streaming
throughput (ratio ≥ 0.90).

Run: ``.venv/bin/python bench/bench_stream_record.py [--streams 300] [--concurrency 16]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe
from guardrails import Guard
from guardrails.pipeline import Write

GOAL = 0.90


def _single_phase(guard: Guard) -> None:
    """Make ``guard`` skip each stream's opening write (the one-event design)."""
    original = guard._awrite

    async def awrite(effect: Write) -> object:
        if effect.event.phase == "open":
            return None
        return await original(effect)

    guard._awrite = awrite  # type: ignore[method-assign]


async def _run(guard: Guard, streams: int, concurrency: int, chunks: int) -> float:
    async def generate(prompt: str) -> AsyncIterator[str]:
        for i in range(chunks):
            await asyncio.sleep(0)
            yield f"word{i} and some more plain text, "

    wrapped = guard.wrap(generate)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with semaphore:
            async for _ in wrapped(f"tell me about item {i}"):
                pass

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(streams)))
    return streams / (time.perf_counter() - started)


def _guard(url: str) -> Guard:
    return Guard.from_policy("rules-only", audit=url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", default=None, help="a PostgreSQL URL instead of SQLite")
    args = parser.parse_args()
    print(describe("guardrail-layer", "sqlalchemy", "psycopg"))
    results: dict[str, list[float]] = {"two-phase": [], "one-event": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            for name in ("two-phase", "one-event"):
                url = args.pg or f"sqlite:///{Path(tmp) / f'{name}-{round_no}.db'}"
                guard = _guard(url)
                if name == "one-event":
                    _single_phase(guard)
                try:
                    rate = asyncio.run(_run(guard, args.streams, args.concurrency, args.chunks))
                finally:
                    guard.close()
                results[name].append(rate)
                print(f"round {round_no + 1} {name:9s} {rate:8.1f} streams/s", flush=True)
    two = statistics.median(results["two-phase"])
    one = statistics.median(results["one-event"])
    ratio = two / one
    verdict = "met" if ratio >= GOAL else "MISSED"
    print(
        f"\nmedian streams/s: two-phase {two:.1f}, one-event {one:.1f}; ratio {ratio:.2f} "
        f"(goal >= {GOAL:.2f}: {verdict}); load after: {describe_load()}"
    )


def describe_load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
