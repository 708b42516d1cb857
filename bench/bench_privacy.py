"""Privacy against utility and cost: DP-SGD through Opacus for the classifier and the generator.

Prints, side by side in one run:
* classifier macro F1 (test split, thresholds calibrated on val) at ε ∈ {1, 3, 8, ∞};
* generator held-out perplexity after a LoRA fine-tune at ε ∈ {1, 3, 8, ∞};
* canary exposure (Secret Sharer) with and without DP;
* time per epoch (training loop only; setup - imports, noise calibration - shown apart) and
  peak memory: non-private vs DP ghost clipping vs DP standard clipping, each in a fresh process.
ε = ∞ is the same loop without clipping or noise. Writes bench_privacy.png with --plot.

    .venv/bin/python bench/bench_privacy.py [--plot PATH] [--cost-only] [--train N] [--records N]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe

DATA = Path(__file__).resolve().parent.parent / "guardrails" / "classifier" / "data"
EPSILONS = (1.0, 3.0, 8.0, math.inf)


def _slice(src: str, dst: Path, start: int, count: int) -> Path:
    lines = (DATA / src).read_text(encoding="utf-8").splitlines()[start : start + count]
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


def bench_classifier(tmp: Path, n_train: int, epochs: int) -> dict[float, dict[str, float]]:
    from guardrails.privacy.classifier import DPClassifierConfig
    from guardrails.privacy.engine import DPSettings
    from guardrails.privacy.runs import classifier_run

    train = _slice("train.jsonl", tmp / "train.jsonl", 0, n_train)
    val = _slice("val.jsonl", tmp / "val.jsonl", 0, 10_000)
    test = _slice("test.jsonl", tmp / "test.jsonl", 0, 10_000)
    cfg = DPClassifierConfig()
    out: dict[float, dict[str, float]] = {}
    for eps in EPSILONS:
        dp = math.isfinite(eps)
        # the CLI defaults: DP runs use SGD (lr 8, batch 512); the non-private baseline Adam
        settings = DPSettings(
            dp=dp,
            target_epsilon=eps if dp else 8.0,
            epochs=epochs if dp else 10,
            batch_size=512 if dp else 128,
            max_physical_batch_size=256,
            optimizer="sgd" if dp else "adam",
            lr=8.0 if dp else 1e-2,
        )
        report = classifier_run(
            train, tmp / f"clf-{eps}", settings=settings, val=val, test=test, cfg=cfg
        )
        macro = report.extra["test_macro"]
        out[eps] = {
            "f1": macro["f1"],
            "auprc": macro["auprc"],
            "epsilon": report.epsilon or math.inf,
            "sigma": report.noise_multiplier or 0.0,
            "seconds": report.extra["train_seconds"],
        }
        print(
            f"  classifier ε={eps:<4} spent ε={out[eps]['epsilon']:.3f} σ={out[eps]['sigma']:.3f} "
            f"macro F1={macro['f1']:.3f} AUPRC={macro['auprc']:.3f}"
            f" train {out[eps]['seconds']:.1f} s"
        )
    return out


def bench_generator(tmp: Path, n_records: int, epochs: int) -> dict[float, dict[str, float]]:
    from guardrails.privacy.engine import DPSettings
    from guardrails.privacy.generator import LoRAConfig
    from guardrails.privacy.runs import generator_run

    lines = (DATA / "train.jsonl").read_text(encoding="utf-8").splitlines()[:n_records]
    data = tmp / "private.jsonl"
    data.write_text(
        "\n".join(json.dumps({"text": json.loads(x)["text"][:300]}) for x in lines) + "\n"
    )
    out: dict[float, dict[str, float]] = {}
    for eps in EPSILONS:
        dp = math.isfinite(eps)
        settings = DPSettings(
            dp=dp,
            target_epsilon=eps if dp else 8.0,
            epochs=epochs,
            batch_size=32,
            max_physical_batch_size=32,
            lr=1e-2,
        )
        report = generator_run(
            data, tmp / f"gen-{eps}", settings=settings, lora=LoRAConfig(r=16, alpha=32, seq_len=48)
        )
        out[eps] = {
            "ppl_before": report.extra["heldout_perplexity_before"],
            "ppl": report.extra["heldout_perplexity_after"],
            "epsilon": report.epsilon or math.inf,
            "seconds": report.extra["train_seconds"],
        }
        print(
            f"  generator  ε={eps:<4} spent ε={out[eps]['epsilon']:.3f} held-out perplexity "
            f"{out[eps]['ppl_before']:.1f} -> {out[eps]['ppl']:.1f}"
            f"  train {out[eps]['seconds']:.1f} s"
        )
    return out


def bench_exposure(candidates: int) -> dict[float, float]:
    from guardrails.generators.moe import BUNDLED_DIR
    from guardrails.generators.moe.loading import TOKENIZER_FILE, load_model
    from guardrails.generators.moe.tokenizer import BPETokenizer
    from guardrails.privacy.canary import exposure, insert_canaries, make_secrets
    from guardrails.privacy.engine import DPSettings
    from guardrails.privacy.generator import LoRAConfig, train_lora

    eos = json.loads((BUNDLED_DIR / "config.json").read_text())["eos_token_id"]
    tok = BPETokenizer.from_file(BUNDLED_DIR / TOKENIZER_FILE, eos_token_id=eos)
    lines = (DATA / "train.jsonl").read_text(encoding="utf-8").splitlines()[:60]
    base = [json.loads(x)["text"][:80] for x in lines]
    rng = random.Random(7)
    secrets = make_secrets(4, digits=6, rng=rng)
    records = insert_canaries(base, secrets, repeats=20, rng=rng)
    out: dict[float, float] = {}
    for eps in (1.0, 8.0, math.inf):
        dp = math.isfinite(eps)
        settings = DPSettings(
            dp=dp,
            target_epsilon=eps if dp else 8.0,
            delta=1e-3,
            epochs=12,
            batch_size=20,
            max_physical_batch_size=20,
            lr=2e-2,
            seed=3,
        )
        model, _ = train_lora(
            load_model(BUNDLED_DIR),
            records,
            tok,
            settings=settings,
            lora=LoRAConfig(r=8, alpha=16, seq_len=24),
        )
        found = [
            exposure(model, tok, s, candidates=candidates, digits=6, rng=random.Random(11))
            for s in secrets
        ]
        out[eps] = sum(e.exposure for e in found) / len(found)
        ranks = ", ".join(str(e.rank) for e in found)
        print(
            f"  exposure   ε={eps:<4} mean {out[eps]:.2f} bits of max {math.log2(candidates):.2f} "
            f"(ranks {ranks} of {candidates}; 4 canaries x 20 copies in 140 records)"
        )
    return out


COST_VARIANTS = {
    "non-private": {"dp": False},
    "DP ghost": {"clipping": "ghost"},
    "DP standard": {"clipping": "standard"},
}


def cost_variant(name: str, rows: int, n_train: int) -> None:
    """One timed epoch in this (fresh) process; prints JSON with seconds and peak RSS."""
    import resource

    from guardrails.privacy.classifier import DPClassifierConfig, train_private_classifier
    from guardrails.privacy.data import read_labelled
    from guardrails.privacy.engine import DPSettings

    with tempfile.TemporaryDirectory() as d:
        examples = read_labelled(_slice("train.jsonl", Path(d) / "c.jsonl", 0, n_train))
    cfg = DPClassifierConfig(buckets=rows)
    settings = DPSettings(
        epochs=1, batch_size=128, max_physical_batch_size=64, **COST_VARIANTS[name]
    )  # type: ignore[arg-type]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _, result = train_private_classifier(examples, settings=settings, cfg=cfg)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": result.loop_seconds,
                "setup": result.seconds - result.loop_seconds,
                "peak_mb": peak / 1024,
                "growth_mb": (peak - before) / 1024,
            }
        )
    )


def bench_cost(n_train: int) -> None:
    """Each variant in its own process, so peak RSS is that variant's own."""
    import subprocess

    for rows in (2**12, 2**15):
        base = None
        for name in COST_VARIANTS:
            cmd = [sys.executable, __file__, "--cost-variant", name, "--rows", str(rows)]
            cmd += ["--cost-train", str(n_train)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(
                    f"  {name:<12} rows 2^{rows.bit_length() - 1}: failed ({done.stderr[-200:]!r})"
                )
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            base = base or r["seconds"]
            print(
                f"  classifier epoch ({n_train} records, batch 128, 2^{rows.bit_length() - 1} rows)"
                f" {name:<12} {r['seconds']:6.2f} s  x{r['seconds'] / base:.2f}"
                f" (+{r['setup']:.1f} s setup)"
                f"  peak RSS {r['peak_mb']:.0f} MB (+{r['growth_mb']:.0f} MB in training)"
            )


def plot(
    path: Path, clf: dict[float, dict[str, float]], gen: dict[float, dict[str, float]]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["1", "3", "8", "∞"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(labels, [clf[e]["f1"] for e in EPSILONS], marker="o")
    a.set(title="classifier", xlabel="ε", ylabel="test macro F1")
    b.plot(labels, [gen[e]["ppl"] for e in EPSILONS], marker="o", color="tab:red")
    b.axhline(gen[math.inf]["ppl_before"], ls="--", color="grey", label="before fine-tune")
    b.set(title="generator (LoRA)", xlabel="ε", ylabel="held-out perplexity")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=5952, help="classifier training records")
    parser.add_argument("--clf-epochs", type=int, default=20)
    parser.add_argument("--records", type=int, default=400, help="generator training records")
    parser.add_argument("--gen-epochs", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--cost-only", action="store_true", help="only the cost section")
    parser.add_argument("--cost-variant", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=2**12, help=argparse.SUPPRESS)
    parser.add_argument("--cost-train", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.cost_variant:
        cost_variant(args.cost_variant, args.rows, args.cost_train)
        return
    warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
    print(describe("torch", "opacus", "numpy"))
    print("torch threads: 1")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print("cost:")
        bench_cost(1000)
        if args.cost_only:
            return
        print("utility against privacy:")
        clf = bench_classifier(tmp, args.train, args.clf_epochs)
        gen = bench_generator(tmp, args.records, args.gen_epochs)
        print("memorisation:")
        bench_exposure(args.candidates)
        if args.plot:
            plot(args.plot, clf, gen)


if __name__ == "__main__":
    main()
