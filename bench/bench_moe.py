"""Benchmarks of the MoE generator; prints machine, versions and side-by-side ratios.

    .venv/bin/python bench/bench_moe.py [--threads 1] [--tokens 64] [--quick]

Sections: decode tokens/s at batch 1 and 8 (bundled model); MoE against dense models with
the same active and the same total parameters (same width/depth, random weights: speed and
memory do not depend on training); INT8 against fp32 (speed, held-out perplexity); 8
concurrent streams with dynamic batching against the same 8 served one at a time.
Memory is measured in a fresh subprocess per model: peak RSS growth over the baseline after
importing torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model

from guardrails.generators.moe import (
    BUNDLED_DIR,
    load_pretrained,
)
from guardrails.generators.moe.config import MoEConfig
from guardrails.generators.moe.generation import SamplingParams, generate_ids
from guardrails.generators.moe.loading import read_config
from guardrails.generators.moe.model import MoEForCausalLM


def _clock() -> float:
    """CPU seconds of this process: on a shared machine, waiting for a core is not counted."""
    return time.process_time()


def machine() -> str:
    cpu = cpu_model()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}; {os.cpu_count()} logical cores; torch {torch.__version__}; "
        f"threads {torch.get_num_threads()}; load avg {load:.1f}; "
        f"Python {platform.python_version()}"
    )


def decode_rate(model: MoEForCausalLM, batch: int, tokens: int, repeats: int = 2) -> float:
    """Generated tokens per CPU second (all rows), greedy, after one warm-up."""
    prompts = [[(7 * i + j) % 200 + 10 for j in range(16)] for i in range(batch)]
    params = SamplingParams(max_new_tokens=tokens, temperature=0.0, ignore_eos=True)
    generate_ids(model, prompts, replace(params, max_new_tokens=4))
    best = math.inf
    for _ in range(repeats):
        start = _clock()
        generate_ids(model, prompts, params)
        best = min(best, _clock() - start)
    return batch * tokens / best


def variants(base: MoEConfig) -> dict[str, MoEConfig]:
    """MoE, dense with the same active FFN width, dense with the same total FFN width."""
    active = base.moe_intermediate_size * base.num_experts_per_tok + base.shared_intermediate_size
    total = base.moe_intermediate_size * base.num_experts + base.shared_intermediate_size
    dense = {"num_experts": 0, "num_experts_per_tok": 0, "shared_intermediate_size": 0}
    return {
        "moe": base,
        "dense_same_active": replace(base, intermediate_size=active, **dense),
        "dense_same_total": replace(base, intermediate_size=total, **dense),
    }


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


class PeakRSS:
    """Samples resident memory every millisecond in a thread; ``peak`` is the maximum seen."""

    def __init__(self) -> None:
        self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(0.001)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _rss_mb())


def _child(cfg_json: str, tokens: int, threads: int) -> None:
    torch.set_num_threads(threads)
    cfg = MoEConfig.from_dict(json.loads(cfg_json))
    torch.zeros(1) @ torch.zeros(1)  # load the BLAS kernels before the baseline
    base = _rss_mb()
    sampler = PeakRSS()
    model = MoEForCausalLM(cfg).eval()
    rates = {b: decode_rate(model, b, tokens) for b in (1, 8)}
    peak = sampler.stop()
    print(
        json.dumps(
            {
                "params": model.num_parameters(),
                "active": model.num_parameters(active=True),
                "tok_s_b1": rates[1],
                "tok_s_b8": rates[8],
                "peak_mb": peak - base,
            }
        )
    )


def compare_moe_dense(tokens: int, threads: int, rounds: int, *, scale: int = 1) -> None:
    cfg = read_config(CHECKPOINT)
    if scale > 1:
        cfg = replace(
            cfg,
            hidden_size=cfg.hidden_size * scale,
            head_dim=cfg.head_dim * scale,
            moe_intermediate_size=cfg.moe_intermediate_size * scale,
            shared_intermediate_size=cfg.shared_intermediate_size * scale,
        )
    rows: dict[str, dict[str, float]] = {}
    for _ in range(rounds):  # interleaved rounds, best of each: the machine is shared
        for name, c in variants(cfg).items():
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    *("--child", json.dumps(c.to_dict())),
                    *("--tokens", str(tokens), "--threads", str(threads)),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            old = rows.setdefault(name, r)
            for key in ("tok_s_b1", "tok_s_b8"):
                old[key] = max(old[key], r[key])
            old["peak_mb"] = min(old["peak_mb"], r["peak_mb"])
    moe = rows["moe"]
    print(
        f"\n## MoE vs dense (width {cfg.hidden_size}, expert width {cfg.moe_intermediate_size}, "
        f"{cfg.num_layers} layers; random weights)"
    )
    print(
        f"{'model':<20}{'params':>12}{'active':>12}{'tok/s b1':>10}{'tok/s b8':>10}{'peak MB':>9}"
    )
    for name, r in rows.items():
        print(
            f"{name:<20}{r['params']:>12,}{r['active']:>12,}{r['tok_s_b1']:>10.1f}"
            f"{r['tok_s_b8']:>10.1f}{r['peak_mb']:>9.1f}"
        )
    for name in ("dense_same_active", "dense_same_total"):
        r = rows[name]
        print(
            f"MoE / {name}: speed b1 x{moe['tok_s_b1'] / r['tok_s_b1']:.2f}, "
            f"b8 x{moe['tok_s_b8'] / r['tok_s_b8']:.2f}, "
            f"peak memory x{moe['peak_mb'] / r['peak_mb']:.2f}"
        )


def heldout_perplexity(model: MoEForCausalLM, data: torch.Tensor, seq_len: int = 128) -> float:
    from guardrails.generators.moe.training import evaluate

    return math.exp(evaluate(model, data, seq_len=seq_len))


def compare_int8(tokens: int, heldout_tokens: int) -> None:
    from guardrails.generators.moe.training import default_corpus, split_tokens

    fp32, int8 = load_pretrained(CHECKPOINT), load_pretrained(CHECKPOINT, quantize=True)
    _, held = split_tokens(default_corpus(), fp32.tokenizer, block=512, holdout_every=20)
    held = held[:heldout_tokens]
    print(f"\n## INT8 vs fp32 (bundled model; perplexity on {len(held):,} held-out tokens)")
    rows = {}
    for name, gen in (("fp32", fp32), ("int8", int8)):
        rows[name] = (
            decode_rate(gen.model, 1, tokens),
            decode_rate(gen.model, 8, tokens),
            heldout_perplexity(gen.model, held),
        )
        b1, b8, ppl = rows[name]
        print(f"{name:<6} tok/s b1 {b1:8.1f}   tok/s b8 {b8:8.1f}   perplexity {ppl:8.3f}")
    (a1, a8, ap), (q1, q8, qp) = rows["fp32"], rows["int8"]
    print(
        f"INT8 / fp32: speed b1 x{q1 / a1:.2f}, b8 x{q8 / a8:.2f}; "
        f"perplexity change {100 * (qp - ap) / ap:+.2f}%"
    )


def make_checkpoint(out: Path, family: str) -> None:
    """A random-init checkpoint written by `transformers` (bf16 on disk, ~200M parameters)."""
    import transformers

    torch.manual_seed(0)
    common = {"vocab_size": 32000, "max_position_embeddings": 4096, "tie_word_embeddings": False}
    if family == "mixtral":
        cfg = transformers.MixtralConfig(
            **common,
            hidden_size=512,
            intermediate_size=1536,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=2,
            num_local_experts=8,
            num_experts_per_tok=2,
        )
        model = transformers.MixtralForCausalLM(cfg)
    else:
        cfg = transformers.DeepseekV3Config(
            **common,
            hidden_size=512,
            intermediate_size=1536,
            moe_intermediate_size=384,
            num_hidden_layers=8,
            first_k_dense_replace=1,
            num_attention_heads=8,
            num_key_value_heads=8,
            n_routed_experts=16,
            n_shared_experts=1,
            num_experts_per_tok=4,
            n_group=4,
            topk_group=2,
            q_lora_rank=256,
            kv_lora_rank=128,
            qk_rope_head_dim=32,
            qk_nope_head_dim=64,
            v_head_dim=64,
        )
        model = transformers.DeepseekV3ForCausalLM(cfg)
    model.to(torch.bfloat16).save_pretrained(out)
    print(f"wrote {out} ({sum(p.numel() for p in model.parameters()):,} parameters)")


class _Runner:
    """Prefill and greedy decode through one model's own KV cache (ours or transformers')."""

    def __init__(self, model: torch.nn.Module, *, ours: bool) -> None:
        self.model, self.ours = model, ours

    def prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, object]:
        if self.ours:
            assert isinstance(self.model, MoEForCausalLM)
            cache = self.model.new_cache()
            return self.model(ids, cache=cache, last_only=True)[:, -1], cache
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1], out.past_key_values

    def step(self, ids: torch.Tensor, cache: object) -> tuple[torch.Tensor, object]:
        if self.ours:
            return self.model(ids, cache=cache, last_only=True)[:, -1], cache
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1], out.past_key_values

    def time_prefill(self, ids: torch.Tensor) -> float:
        with torch.inference_mode():
            start = _clock()
            self.prefill(ids)
            return _clock() - start

    def time_decode(self, ids: torch.Tensor, tokens: int) -> float:
        """Seconds for ``tokens`` decode steps after the prompt (prefill not counted)."""
        with torch.inference_mode():
            logits, cache = self.prefill(ids)
            start = _clock()
            for _ in range(tokens):
                logits, cache = self.step(logits.argmax(-1, keepdim=True), cache)
            return _clock() - start


def compare_transformers(path: Path, tokens: int, prompt_len: int, rounds: int) -> None:
    """Ours (fp32 and INT8) against transformers (fp32) on the same checkpoint, interleaved."""
    import transformers

    from guardrails.generators.moe.loading import load_model
    from guardrails.generators.moe.quantization import quantize_model

    theirs = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    runners = {
        "transformers": _Runner(theirs, ours=False),
        "ours fp32": _Runner(load_model(path), ours=True),
        "ours int8": _Runner(quantize_model(load_model(path)), ours=True),
    }
    g = torch.Generator().manual_seed(0)
    vocab = theirs.config.vocab_size
    prompts = {b: torch.randint(0, vocab, (b, prompt_len), generator=g) for b in (1, 8)}
    cases = [("prefill", 1), ("prefill", 8), ("decode", 1), ("decode", 8)]
    best: dict[tuple[str, str, int], float] = {}
    for r in runners.values():  # warm-up
        r.time_decode(prompts[1][:, :8], 2)
    for _ in range(rounds):  # interleaved, best of rounds: the machine is shared
        for kind, b in cases:
            for name, r in runners.items():
                t = (
                    r.time_prefill(prompts[b])
                    if kind == "prefill"
                    else r.time_decode(prompts[b], tokens)
                )
                key = (name, kind, b)
                best[key] = min(best.get(key, math.inf), t)
    with torch.inference_mode():
        ids = prompts[8]
        ref = runners["ours fp32"].model(ids)
        q = runners["ours int8"].model(ids)
        hf = theirs(input_ids=ids).logits
    disagree = float((ref.argmax(-1) != q.argmax(-1)).float().mean())
    print(
        f"\n## Against transformers {transformers.__version__} on {path.name} "
        f"({theirs.config.model_type}, {sum(p.numel() for p in theirs.parameters()):,} params), "
        f"prompt {prompt_len} tokens, {tokens} decode steps, best of {rounds}; "
        f"tokens per CPU second ({torch.get_num_threads()} threads)"
    )
    print(
        f"{'case':<14}" + "".join(f"{n:>16}" for n in runners) + f"{'ours/tf':>9}{'int8/fp32':>10}"
    )
    for kind, b in cases:
        n_tok = b * (prompt_len if kind == "prefill" else tokens)
        rate = {name: n_tok / best[(name, kind, b)] for name in runners}
        print(
            f"{kind + ' b' + str(b):<14}"
            + "".join(f"{rate[n]:>12.1f} t/s" for n in runners)
            + f"{rate['ours fp32'] / rate['transformers']:>9.2f}"
            + f"{rate['ours int8'] / rate['ours fp32']:>10.2f}"
        )
    print(
        f"logits max |ours fp32 - transformers| {float((ref - hf).abs().max()):.2e}; "
        f"INT8 top-1 disagreement with fp32 {100 * disagree:.2f}% of {ref.shape[0] * ref.shape[1]}"
        " positions (random prompts)"
    )


def _load_child(spec: str) -> None:
    """Load one checkpoint in this fresh process; print peak RSS growth against the weights."""
    who, dtype_name, path = spec.split(",", 2)
    dtype = getattr(torch, dtype_name)
    torch.zeros(1) @ torch.zeros(1)
    base = _rss_mb()
    sampler = PeakRSS()
    start = time.perf_counter()
    if who == "ours":
        from guardrails.generators.moe.loading import load_model

        model: torch.nn.Module = load_model(Path(path), dtype=dtype)
    else:
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    seconds = time.perf_counter() - start
    peak = sampler.stop()
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    print(json.dumps({"weights_mb": weights, "peak_mb": peak - base, "seconds": seconds}))


def compare_loading(path: Path) -> None:
    """Peak RSS while loading, ours against transformers, fp32 and bf16 (fresh processes)."""
    print(f"\n## Loading {path.name}: peak RSS growth while loading / the weights' size")
    for dtype in ("float32", "bfloat16"):
        for who in ("transformers", "ours"):
            out = subprocess.run(
                [sys.executable, __file__, "--load-child", f"{who},{dtype},{path}"],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{who:<13}{dtype:<9} weights {r['weights_mb']:7.0f} MB  peak {r['peak_mb']:7.0f} "
                f"MB  x{r['peak_mb'] / r['weights_mb']:.2f}  ({r['seconds']:.1f} s wall)"
            )


def compare_batching(tokens: int) -> None:
    prompts = [
        "The with statement",
        "A class definition",
        "The import system",
        "Exceptions are raised",
        "The for statement",
        "Comparisons can be chained",
        "A function definition",
        "The return statement",
    ]
    opts = {"temperature": 0.0, "max_tokens": tokens}
    gen = load_pretrained(CHECKPOINT)
    gen.defaults = replace(gen.defaults, ignore_eos=True)
    gen.generate(prompts[0], max_tokens=4, temperature=0.0)
    start = time.perf_counter()
    sequential = [gen.generate(p, **opts) for p in prompts]
    seq_time = time.perf_counter() - start
    gen.enable_batching(max_batch=8)
    lone = math.inf  # wall time to the first chunk of a request served alone
    for _ in range(3):
        t0 = time.perf_counter()
        chunks = gen.stream(prompts[0], **opts)
        next(chunks)
        lone = min(lone, time.perf_counter() - t0)
        chunks.close()
    results: dict[int, str] = {}
    first_chunk: dict[int, float] = {}
    barrier = threading.Barrier(len(prompts) + 1)

    def worker(i: int) -> None:
        barrier.wait()
        t0 = time.perf_counter()
        parts = []
        for chunk in gen.stream(prompts[i], **opts):
            first_chunk.setdefault(i, time.perf_counter() - t0)
            parts.append(chunk)
        results[i] = "".join(parts)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    conc_time = time.perf_counter() - start
    engine = gen._engine
    gen.close()
    same = sum(results[i] == sequential[i] for i in range(len(prompts)))
    n = len(prompts) * tokens
    print(f"\n## 8 concurrent streams x {tokens} tokens: dynamic batching vs one at a time")
    print(f"one at a time     {seq_time:7.2f} s  {n / seq_time:8.1f} tok/s")
    print(
        f"dynamic batching  {conc_time:7.2f} s  {n / conc_time:8.1f} tok/s  "
        f"(max rows together {engine.max_rows_seen}, mean first chunk "
        f"{1000 * sum(first_chunk.values()) / len(first_chunk):.0f} ms)"
    )
    print(f"speed-up x{seq_time / conc_time:.2f}; identical greedy outputs {same}/{len(prompts)}")
    worst = max(first_chunk.values())
    print(
        f"time to first chunk: alone {1000 * lone:.0f} ms, under 8 concurrent worst "
        f"{1000 * worst:.0f} ms (x{worst / lone:.2f}; wall clock)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--heldout-tokens", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checkpoint", type=Path, default=BUNDLED_DIR)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--load-child", help=argparse.SUPPRESS)
    parser.add_argument(
        "--only", choices=["decode", "dense", "int8", "batching", "transformers", "load"]
    )
    parser.add_argument(
        "--against",
        type=Path,
        help="a Hugging Face checkpoint to compare with transformers on (--only transformers)",
    )
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument(
        "--make-checkpoint",
        type=Path,
        help="write a random-init checkpoint here (with --family) and exit",
    )
    parser.add_argument("--family", choices=["mixtral", "deepseek"], default="mixtral")
    args = parser.parse_args()
    if args.make_checkpoint:
        make_checkpoint(args.make_checkpoint, args.family)
        return
    if args.child:
        _child(args.child, args.tokens, args.threads)
        return
    if args.load_child:
        _load_child(args.load_child)
        return
    torch.set_num_threads(args.threads)
    global CHECKPOINT
    CHECKPOINT = args.checkpoint
    print("# MoE generator benchmarks")
    print(machine())
    if args.only in (None, "decode"):
        gen = load_pretrained(CHECKPOINT)
        print(f"\n## Decode (bundled model, {gen.model.num_parameters():,} params, greedy)")
        b1, b8 = decode_rate(gen.model, 1, args.tokens), decode_rate(gen.model, 8, args.tokens)
        print(f"batch 1: {b1:8.1f} tok/s   batch 8: {b8:8.1f} tok/s   (x{b8 / b1:.2f} throughput)")
    if args.only in (None, "dense"):
        compare_moe_dense(args.tokens, args.threads, args.rounds)
        compare_moe_dense(args.tokens, args.threads, args.rounds, scale=4)
    if args.only in (None, "int8"):
        compare_int8(args.tokens, args.heldout_tokens)
    if args.only in (None, "batching"):
        compare_batching(args.tokens)
    if args.against is not None and args.only in (None, "transformers"):
        compare_transformers(args.against, args.tokens, args.prompt_len, args.rounds)
    if args.against is not None and args.only in (None, "load"):
        compare_loading(args.against)


if __name__ == "__main__":
    main()
