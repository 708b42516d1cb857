"""Safety classifier cost, side by side in one interleaved run, per 500-character text.

Variants (each scores the same texts, one text per call, rounds interleaved so machine load
hits every variant alike):

* ``fast numpy fp32`` - the default path (`load_classifier("fast")`): no torch at all.
* ``fast torch fp32`` - the same weights through torch's embedding_bag (the floor the numpy
  path is compared with: torch's fused kernel).
* ``fast torch int8`` - INT8 dynamic quantization of the MLP.
* ``minilm fp32`` / ``minilm int8`` - the encoder option (English all-MiniLM-L6-v2 + head).
* ``guard default`` / ``guard rules-only`` - a whole input check (normalize, rules,
  classifier) with the shipped packs, so the classifier's added cost per request is the
  difference, next to the bare regex floor of the same packs' patterns.

Then batched throughput, 32 concurrent async callers (micro-batched vs a thread per call),
load time, and macro F1 on the committed test split for fp32 and INT8.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_classifier.py [--rounds 5] [--minilm]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GOALS = {"median_ms": 1.0, "p99_ms": 5.0, "encoder_median_ms": 25.0}
DATA = Path(__file__).resolve().parent.parent / "guardrails" / "classifier" / "data" / "test.jsonl"


def _texts_500(n: int) -> list[str]:
    from guardrails.classifier.dataset import read_jsonl

    pool = [ex.text for ex in read_jsonl(DATA)]
    out = []
    i = 0
    while len(out) < n:
        t = pool[i % len(pool)]
        while len(t) < 500:
            t = t + " " + pool[(i * 7 + len(t)) % len(pool)]
        out.append(t[:500])
        i += 1
    return out


def _pct(times: list[float], q: float) -> float:
    s = sorted(times)
    return s[min(len(s) - 1, int(q * len(s)))]


def _macro_f1(clf: object, limit: int | None) -> float:
    from guardrails.classifier.dataset import read_jsonl
    from guardrails.classifier.training import evaluate

    examples = read_jsonl(DATA)
    if limit:
        examples = examples[:limit]
    metrics, _, _ = evaluate(clf, examples)  # type: ignore[arg-type]
    return sum(m.f1 for m in metrics) / len(metrics)


async def _callers(fn: Callable[[str], object], texts: list[str], callers: int) -> float:
    per = len(texts) // callers

    async def one(k: int) -> None:
        for t in texts[k * per : (k + 1) * per]:
            await fn(t)  # type: ignore[misc]

    t0 = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(callers)))
    return per * callers / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=200, help="texts per variant per round")
    parser.add_argument("--minilm", action="store_true", help="include the encoder option")
    parser.add_argument("--f1-limit", type=int, default=0, help="test examples for F1 (0: all)")
    args = parser.parse_args()

    from machine import describe  # bench/ is on sys.path when run as a script

    t0 = time.perf_counter()
    from guardrails.classifier import load_classifier

    fast = load_classifier("fast")
    load_numpy_s = time.perf_counter() - t0
    torch_loaded = "torch" in sys.modules
    t0 = time.perf_counter()
    import torch

    from guardrails.classifier.runtime import (
        SHIPPED,
        _build_fast,
        _load_tensors,
        read_config,
    )

    import_torch_s = time.perf_counter() - t0
    print(describe("numpy", "torch", "regex"))
    print(
        f"torch intra-op threads {torch.get_num_threads()}; default path loaded in "
        f"{load_numpy_s * 1000:.0f} ms without torch (torch imported by then: {torch_loaded}); "
        f"importing torch alone took {import_torch_s:.1f} s"
    )
    cfg = read_config(SHIPPED["fast"])
    tensors, _ = _load_tensors(SHIPPED["fast"], str(cfg["weights_sha256"]))
    fast_torch = load_classifier("fast", cache=False)
    fast_torch.backend = _build_fast(cfg, tensors, False)
    variants: dict[str, Callable[[str], object]] = {
        "fast numpy fp32 (default)": lambda t: fast.score([t]),
        "fast torch fp32": lambda t: fast_torch.score([t]),
    }
    fast_int8 = load_classifier("fast", int8=True)
    variants["fast torch int8"] = lambda t: fast_int8.score([t])
    mini = mini8 = None
    if args.minilm:
        mini = load_classifier("minilm")
        mini8 = load_classifier("minilm", int8=True)
        variants["minilm fp32"] = lambda t: mini.score([t])  # type: ignore[union-attr]
        variants["minilm int8"] = lambda t: mini8.score([t])  # type: ignore[union-attr]

    from guardrails import Guard, Stage
    from guardrails.policy import load_policy

    g_default = Guard(load_policy("default"))
    g_rules = Guard(load_policy("rules-only"))
    variants["guard default (rules+classifier)"] = lambda t: g_default.check(t, Stage.INPUT)
    variants["guard rules-only"] = lambda t: g_rules.check(t, Stage.INPUT)

    texts = _texts_500(args.per_round)
    for fn in variants.values():  # warm every path once
        for t in texts[:20]:
            fn(t)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            for t in texts:
                s = time.perf_counter()
                fn(t)
                times[name].append((time.perf_counter() - s) * 1000)

    print(f"\nper 500-character text, one call each, {args.rounds} interleaved rounds:")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, v in times.items():
        print(
            f"  {name:34s} median {med[name]:7.3f} ms  p99 {_pct(v, 0.99):7.3f} ms  "
            f"ratio to fast torch fp32 {med[name] / med['fast torch fp32']:.2f}x"
        )
    added = med["guard default (rules+classifier)"] - med["guard rules-only"]
    print(f"  classifier added to a guard input check: {added:.3f} ms median")

    batch = _texts_500(1024)
    print("\nbatched throughput (1,024 texts in one score() call):")
    for name, clf in (("fast numpy fp32", fast), ("fast torch fp32", fast_torch)):
        clf.score(batch[:64])
        s = time.perf_counter()
        clf.score(batch)
        print(f"  {name:20s} {len(batch) / (time.perf_counter() - s):,.0f} texts/s")

    async def batched(t: str) -> None:
        await fast.score_async([t])

    async def unbatched(t: str) -> None:
        await asyncio.to_thread(fast.score, [t])

    mb = asyncio.run(_callers(batched, batch, 32))
    ub = asyncio.run(_callers(unbatched, batch, 32))
    print(
        f"  32 concurrent callers: micro-batched {mb:,.0f} texts/s, a thread per call "
        f"{ub:,.0f} texts/s, ratio {mb / ub:.2f}x"
    )

    limit = args.f1_limit or None
    f_fp32 = _macro_f1(fast, limit)
    f_int8 = _macro_f1(fast_int8, limit)
    print(
        f"\nmacro F1 on the test split: fast fp32 {f_fp32:.4f}, fast int8 {f_int8:.4f} "
        f"({100 * (f_int8 - f_fp32):+.2f} points)"
    )
    if mini is not None and mini8 is not None:
        m_fp32 = _macro_f1(mini, limit or 400)
        m_int8 = _macro_f1(mini8, limit or 400)
        print(f"  minilm fp32 {m_fp32:.4f}, minilm int8 {m_int8:.4f} (first 400 examples)")

    d = med["fast numpy fp32 (default)"]
    p99 = _pct(times["fast numpy fp32 (default)"], 0.99)
    print("\ngoals (issue 13 item 6; the same figures depend on machine load, see above):")
    print(f"  default classifier median <= 1 ms: {'met' if d <= GOALS['median_ms'] else 'MISSED'}")
    print(f"  default classifier p99 <= 5 ms: {'met' if p99 <= GOALS['p99_ms'] else 'MISSED'}")
    g = med["guard default (rules+classifier)"]
    print(f"  rules + classifier median <= 1 ms: {'met' if g <= 1.0 else 'MISSED'} ({g:.3f} ms)")
    if args.minilm:
        m = med["minilm fp32"]
        ok = m <= GOALS["encoder_median_ms"]
        print(f"  encoder option median <= 25 ms: {'met' if ok else 'MISSED'} ({m:.2f} ms)")


if __name__ == "__main__":
    main()
