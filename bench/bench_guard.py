"""Guard overhead: check() latency on 1 KB texts, scanning throughput, wrapped-call cost.

Run: ``.venv/bin/python bench/bench_guard.py`` (add ``--quick`` for a smoke run).

Every figure is printed beside a baseline measured in the same run, so the ratios hold even
on a shared, noisy machine:
- check() with the default policy vs. the same rules without anchors (what anchoring buys)
  and vs. the same rules on un-normalized text (what evasion-proofing costs);
- rule scanning of 1 MB of mixed text, the same three ways;
- a guarded call (input + output check, no audit; and with a durable SQLite audit log) vs.
  calling the generator bare.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import mixed_text, texts
from machine import describe
from variants import policy_variant

from guardrails import Guard, Stage
from guardrails.policy import default_policy_path, load_policy


def _latencies(guard: Guard, samples: list[str], rounds: int) -> list[float]:
    out: list[float] = []
    for _ in range(rounds):
        for text in samples:
            start = time.perf_counter()
            guard.check(text, Stage.INPUT)
            out.append((time.perf_counter() - start) * 1000)
    return sorted(out)


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    count, rounds, big_size = (100, 2, 200_000) if args.quick else (500, 6, 1_000_000)

    print(describe("regex", "pydantic", "sqlalchemy", "guardrail-layer"))
    guards = {
        "default policy": Guard(load_policy()),
        "without anchors": Guard(policy_variant(load_policy(), anchors=False)),
        "without normalization": Guard(policy_variant(load_policy(), normalization=False)),
    }
    samples = texts(count, 1024)
    for guard in guards.values():  # warm caches (the NFKC table, compiled patterns)
        _latencies(guard, samples[:20], 1)

    print(f"\ncheck() on {count} mixed 1 KB texts x {rounds} rounds (interleaved):")
    results: dict[str, list[float]] = {name: [] for name in guards}
    for _ in range(rounds):  # interleave variants so load changes hit them alike
        for name, guard in guards.items():
            results[name].extend(_latencies(guard, samples, 1))
    base = statistics.median(sorted(results["default policy"]))
    for name, values in results.items():
        values.sort()
        median = statistics.median(values)
        print(
            f"  {name:24s} median {median:6.3f} ms   p99 {_pct(values, 0.99):6.3f} ms"
            f"   ratio to default {median / base:5.2f}x"
        )
    print("  goal: median <= 0.5 ms, p99 <= 2 ms")

    big = mixed_text(big_size, seed=7)
    megabytes = len(big.encode("utf-8")) / 1e6
    print(f"\nrule scanning of {megabytes:.2f} MB of mixed text (input stage, best of 3):")
    rates: dict[str, float] = {}
    for name, guard in guards.items():
        best = min(_timed(lambda g=guard: g.engine.scan(big, Stage.INPUT)) for _ in range(3))
        rates[name] = megabytes / best
    for name, rate in rates.items():
        print(
            f"  {name:24s} {rate:7.2f} MB/s"
            f"   ratio to default {rate / rates['default policy']:5.2f}x"
        )
    print("  goal: >= 20 MB/s")

    def bare(prompt: str) -> str:
        return "Sure. Contact support@example.com for more."

    guard = guards["default policy"]
    wrapped = guard.wrap(bare)
    prompts = samples[:200]
    bare_ms = (
        min(_timed(lambda: [bare(p) for p in prompts]) for _ in range(3)) * 1000 / len(prompts)
    )
    wrapped_ms = min(
        _timed(lambda: [wrapped(p) for p in prompts if "ignore" not in p.lower()]) for _ in range(3)
    )
    wrapped_ms = wrapped_ms * 1000 / len([p for p in prompts if "ignore" not in p.lower()])
    with tempfile.TemporaryDirectory() as tmp:
        audited_guard = Guard.from_policy(default_policy_path(), audit=f"sqlite:///{tmp}/bench.db")
        audited = audited_guard.wrap(bare)
        clean = [p for p in prompts if "ignore" not in p.lower()]
        audited_ms = (
            min(_timed(lambda: [audited(p) for p in clean]) for _ in range(2)) * 1000 / len(clean)
        )
        audited_guard.close()
    print("\nper call, 1 KB prompt, single caller:")
    print(f"  bare generator          {bare_ms:8.4f} ms")
    print(f"  guarded, no audit       {wrapped_ms:8.4f} ms   (+{wrapped_ms - bare_ms:.3f} ms)")
    print(
        f"  guarded, durable SQLite {audited_ms:8.4f} ms"
        f"   (+{audited_ms - bare_ms:.3f} ms; one fsync per call)"
    )
    print("  concurrent durable writes (group commit): see bench/bench_audit.py")


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
