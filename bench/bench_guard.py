"""Guard overhead against the real floor: the shipped patterns run bare in `regex`.

Run: ``nice -n 10 .venv/bin/python bench/bench_guard.py`` (add ``--quick`` for a smoke run).

Every figure is printed beside its floor, measured in the same run with the variants
interleaved round by round, so load changes hit them alike and the ratios hold on a shared
machine:
- rules-only ``check()`` latency on short prompts (200 characters) and on 1 KB prompts: the
  guard (normalization, every rule, validators, literal/window shortcuts) vs. the same rules
  with the shortcuts off (a full scan per rule) vs. the bare floor (each shipped pattern
  compiled with `regex` and run with ``finditer`` over the raw text: no normalization, no
  validators, no findings);
- scanning throughput on 100 KB of mixed text, input and output stages, the same three ways;
- a guarded call (input + output check, no audit) vs. calling the generator bare.

"Rules-only" is the shipped ``default`` policy with any classifier rule dropped.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import regex

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import mixed_text, texts
from machine import describe

from guardrails import Guard, Stage
from guardrails.policy import Policy, load_policy
from guardrails.rules import RuleEngine, keyword_pattern


def rules_only(policy: Policy) -> Policy:
    """``policy`` without its classifier rules."""
    rules = tuple(rule for rule in policy.rules if rule.classifier is None)
    model = policy.model.model_copy(update={"rules": rules})
    return dataclasses.replace(policy, model=model, path=policy.path + "-rules-only")


def full_scan_engine(policy: Policy) -> RuleEngine:
    """The same rules with every shortcut off (older engines: anchors dropped)."""
    try:
        return RuleEngine(policy, skip=False)  # type: ignore[call-arg,unused-ignore]
    except TypeError:
        from variants import policy_variant

        return RuleEngine(policy_variant(policy, anchors=False))


class BareRegex:
    """The floor: the policy's patterns of one stage, compiled with `regex`, run bare."""

    def __init__(self, policy: Policy, stage: Stage) -> None:
        self.patterns = [
            regex.compile(
                rule.pattern if rule.pattern is not None else keyword_pattern(rule.keywords or ())
            )
            for rule in policy.rules
            if rule.enabled and rule.classifier is None and stage in rule.applies_to
        ]

    def scan(self, text: str) -> int:
        count = 0
        for pattern in self.patterns:
            for _ in pattern.finditer(text, timeout=1.0):
                count += 1
        return count


def _median_ms(fn: Callable[[str], object], samples: list[str]) -> list[float]:
    out: list[float] = []
    for text in samples:
        start = time.perf_counter()
        fn(text)
        out.append((time.perf_counter() - start) * 1000)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    count, rounds, big_size, big_rounds = (
        (100, 3, 100_000, 3) if args.quick else (400, 8, 100_000, 7)
    )

    print(describe("regex", "pydantic", "guardrail-layer", "confusable-homoglyphs"))
    policy = rules_only(load_policy())
    guard = Guard(policy)
    full = full_scan_engine(policy)
    bare_in = BareRegex(policy, Stage.INPUT)
    bare_out = BareRegex(policy, Stage.OUTPUT)
    print(
        f"policy: default, rules only ({len(policy.rules)} rules; "
        f"{len(bare_in.patterns)} on input, {len(bare_out.patterns)} on output)"
    )

    variants: dict[str, Callable[[str], object]] = {
        "guard.check (rules only)": lambda t: guard.check(t, Stage.INPUT),
        "engine, shortcuts off": lambda t: full.scan(t, Stage.INPUT),
        "bare regex (floor)": bare_in.scan,
    }
    for size in (200, 1024):
        samples = texts(count, size, seed=size)
        for fn in variants.values():  # warm caches (tables, compiled patterns)
            _median_ms(fn, samples[:20])
        results: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):  # interleaved
            for name, fn in variants.items():
                results[name].extend(_median_ms(fn, samples))
        floor = statistics.median(results["bare regex (floor)"])
        print(f"\ninput check, {count} mixed {size}-character prompts x {rounds} rounds:")
        for name, values in results.items():
            median = statistics.median(values)
            print(
                f"  {name:26s} median {median:7.3f} ms   p99 {_pct(values, 0.99):7.3f} ms"
                f"   {median / floor:5.2f}x the floor"
            )
    print("  goal: rules-only check median <= 0.5 ms on short prompts")

    big = mixed_text(big_size, seed=7)
    megabytes = len(big.encode("utf-8")) / 1e6
    print(f"\nscanning {megabytes:.2f} MB of mixed text, best of {big_rounds} (interleaved):")
    for stage, bare in ((Stage.INPUT, bare_in), (Stage.OUTPUT, bare_out)):
        scans: dict[str, Callable[[], object]] = {
            "guard engine": lambda s=stage: guard.engine.scan(big, s),
            "engine, shortcuts off": lambda s=stage: full.scan(big, s),
            "bare regex (floor)": lambda b=bare: b.scan(big),
        }
        best = {name: float("inf") for name in scans}
        for _ in range(big_rounds):
            for name, fn in scans.items():
                best[name] = min(best[name], _timed(fn))
        floor_rate = megabytes / best["bare regex (floor)"]
        print(f"  {stage.value}:")
        for name, seconds in best.items():
            rate = megabytes / seconds
            print(f"    {name:24s} {rate:7.2f} MB/s   {rate / floor_rate:5.2f}x the floor")
    print("  goal: >= 20 MB/s")

    def bare(prompt: str) -> str:
        return "Sure. Contact support@example.com for more."

    wrapped = guard.wrap(bare)
    prompts = [p for p in texts(200, 1024, seed=3) if not guard.check(p).blocked]
    bare_ms = min(_timed(lambda: [bare(p) for p in prompts]) for _ in range(3)) * 1000
    wrapped_ms = min(_timed(lambda: [wrapped(p) for p in prompts]) for _ in range(3)) * 1000
    n = len(prompts)
    print(f"\nper call, 1 KB prompt, single caller, no audit ({n} prompts):")
    print(f"  bare generator          {bare_ms / n:8.4f} ms")
    print(
        f"  guarded                 {wrapped_ms / n:8.4f} ms   (+{(wrapped_ms - bare_ms) / n:.3f})"
    )
    print("  durable audit writes: see bench/bench_audit.py")


if __name__ == "__main__":
    main()
