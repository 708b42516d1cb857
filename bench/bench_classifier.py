"""Safety classifier speed, side by side: fp32 vs INT8, per backbone, and micro-batching.

For each backbone (``fast`` byte n-gram model, ``minilm`` head on frozen all-MiniLM-L6-v2):
single-text latency (median, p99) on 500-character texts, batched throughput, both in fp32
and with INT8 dynamic quantization, plus macro F1 on the committed test split so a speed-up
can be weighed against accuracy. Then 32 concurrent async callers, each sending one text at
a time: micro-batched (`score_async`) against unbatched (`score` in a thread per call).
Texts come from the committed test split, cut or repeated to 500 characters.

Run: ``.venv/bin/python bench/bench_classifier.py [--models fast,minilm] [--threads 1]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GOALS = {"median_ms": 1.0, "throughput": 2000.0, "int8_speedup": 1.5, "int8_f1_drop": 0.01}
DATA = Path(__file__).resolve().parent.parent / "guardrails" / "classifier" / "data" / "test.jsonl"


def _cpu_model() -> str:
    from machine import cpu_model  # bench/ is on sys.path when run as a script

    return cpu_model()


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


def _latency(clf, texts: list[str]) -> tuple[float, float]:
    for t in texts[:20]:
        clf.score([t])
    times = []
    for t in texts:
        t0 = time.perf_counter()
        clf.score([t])
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))]


def _throughput(clf, texts: list[str]) -> float:
    clf.score(texts[:64])
    t0 = time.perf_counter()
    clf.score(texts)
    return len(texts) / (time.perf_counter() - t0)


def _macro_f1(clf, limit: int | None) -> float:
    from guardrails.classifier.dataset import read_jsonl
    from guardrails.classifier.training import evaluate

    examples = read_jsonl(DATA)
    if limit:
        examples = examples[:limit]
    metrics, _, _ = evaluate(clf, examples)
    return sum(m.f1 for m in metrics) / len(metrics)


async def _callers(fn, texts: list[str], callers: int) -> float:
    per = len(texts) // callers

    async def one(k: int) -> None:
        for t in texts[k * per : (k + 1) * per]:
            await fn(t)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(callers)))
    return per * callers / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fast,minilm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--single", type=int, default=500, help="single-text calls (fast)")
    parser.add_argument("--batch-texts", type=int, default=2048, help="texts for throughput (fast)")
    parser.add_argument(
        "--minilm-scale",
        type=float,
        default=0.1,
        help="fraction of the fast model's call counts used for minilm",
    )
    parser.add_argument(
        "--f1-limit",
        type=int,
        default=0,
        help="score only the first N test examples for F1 (0: all)",
    )
    args = parser.parse_args()

    import torch

    from guardrails.classifier import load_classifier

    print(
        f"machine: {_cpu_model()}, {os.cpu_count()} logical CPUs visible; "
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"intra-op threads {args.threads}"
    )
    rows = []
    for name in args.models.split(","):
        scale = 1.0 if name == "fast" else args.minilm_scale
        texts = _texts_500(max(int(args.batch_texts * scale), 64))
        singles = texts[: max(int(args.single * scale), 20)]
        res = {}
        for int8 in (False, True):
            clf = load_classifier(name, int8=int8, num_threads=args.threads)
            med, p99 = _latency(clf, singles)
            thr = _throughput(clf, texts)
            f1 = _macro_f1(clf, args.f1_limit or (None if name == "fast" else 300))
            res[int8] = (med, p99, thr, f1)
            print(
                f"{name:7s} {'int8' if int8 else 'fp32'}: median {med:.3f} ms  p99 {p99:.3f} ms  "
                f"batched {thr:,.0f} texts/s  macro-F1 {f1:.4f}",
                flush=True,
            )
        rows.append((name, res))

        clf = load_classifier(name, num_threads=args.threads, max_wait_ms=2.0, max_batch_size=64)
        calls = texts[: max(int(1024 * scale), 64)]

        async def batched(t: str, clf=clf) -> None:
            await clf.score_async([t])

        async def unbatched(t: str, clf=clf) -> None:
            await asyncio.to_thread(clf.score, [t])

        mb = asyncio.run(_callers(batched, calls, 32))
        ub = asyncio.run(_callers(unbatched, calls, 32))
        print(
            f"{name:7s} 32 concurrent callers: micro-batched {mb:,.0f} texts/s, unbatched "
            f"{ub:,.0f} texts/s, ratio {mb / ub:.2f}x",
            flush=True,
        )
        rows[-1] = (name, {**res, "mb": (mb, ub)})

    print("\nsummary (ratios compare within this run; absolute times drift on shared machines)")
    for name, res in rows:
        f_med, _, f_thr, f_f1 = res[False]
        q_med, _, q_thr, q_f1 = res[True]
        mb, ub = res["mb"]
        print(
            f"  {name}: INT8/fp32 latency speed-up {f_med / q_med:.2f}x, throughput "
            f"{q_thr / f_thr:.2f}x, F1 change {100 * (q_f1 - f_f1):+.2f} points; "
            f"micro-batching {mb / ub:.2f}x"
        )
        if name == "fast":
            checks = {
                "median <= 1 ms": f_med <= GOALS["median_ms"],
                "batched >= 2,000 texts/s": f_thr >= GOALS["throughput"],
                "INT8 >= 1.5x fp32": f_thr and q_thr / f_thr >= GOALS["int8_speedup"],
                "INT8 F1 change <= 1 point": abs(q_f1 - f_f1) <= GOALS["int8_f1_drop"],
            }
            for what, ok in checks.items():
                print(f"    goal {what}: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
