"""Privacy against utility and cost: DP-SGD through Opacus for the classifier and the generator.

Prints, side by side in one run, on the same data and split for every ε:
* classifier (MiniLM head on the frozen public encoder; every record of the private train
  slice embedded once) test macro F1 at ε ∈ {1, 3, 8, ∞}, thresholds calibrated on the
  public val split; ε = ∞ is the same loop without clipping or noise (the floor);
* generator LoRA held-out perplexity at ε ∈ {1, 3, 8, ∞}; private = a train slice, held-out
  = the public val split (never trained on);
* cost per epoch (training loop only): DP over non-private, for both;
* canary exposure of DP and non-private LoRA fine-tunes against the un-fine-tuned base.

    .venv/bin/python bench/bench_privacy.py [--train N] [--val N] [--test N] [--records N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe

DATA = Path(__file__).resolve().parent.parent / "guardrails" / "classifier" / "data"
EPSILONS = (1.0, 3.0, 8.0, math.inf)
CACHE = Path(tempfile.gettempdir()) / "guardrails-bench-privacy-cache"


def _slice(src: str, dst: Path, start: int, count: int) -> Path:
    lines = (DATA / src).read_text(encoding="utf-8").splitlines()[start : start + count]
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


def cached_encode(examples: Sequence[Any], cfg: Any) -> Any:
    """`guardrails.privacy.classifier.encode`, kept on disk by a hash of texts and config."""
    import torch

    from guardrails.privacy.classifier import encode

    shape = (type(cfg).__name__, cfg.window_chars, cfg.stride_chars, getattr(cfg, "max_tokens", 0))
    key = hashlib.sha256(
        json.dumps([shape, [(e.text, sorted(e.labels)) for e in examples]]).encode()
    ).hexdigest()[:24]
    path = CACHE / f"{key}.pt"
    if path.exists():
        x, y = torch.load(path)
        return x, y
    started = time.perf_counter()
    x, y = encode(examples, cfg)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save((x, y), path)
    print(f"  (encoded {len(examples)} records in {time.perf_counter() - started:.0f} s)")
    return x, y


def clf_settings(eps: float, epochs: int, batch: int) -> Any:
    from guardrails.privacy.engine import DPSettings

    dp = math.isfinite(eps)
    return DPSettings(
        dp=dp,
        target_epsilon=eps if dp else 8.0,
        epochs=epochs,
        batch_size=batch,
        max_physical_batch_size=batch,
        optimizer="sgd",  # lr: the default rule, batch/1024
        clipping="standard",
    )


def bench_classifier(tmp: Path, args: argparse.Namespace) -> dict[float, dict[str, float]]:
    from guardrails.privacy.classifier import DPMiniLMConfig
    from guardrails.privacy.runs import classifier_run

    train = _slice("train.jsonl", tmp / "train.jsonl", 0, args.train)
    val = _slice("val.jsonl", tmp / "val.jsonl", 0, args.val)
    test = _slice("test.jsonl", tmp / "test.jsonl", 0, args.test)
    cfg = DPMiniLMConfig()
    out: dict[float, dict[str, float]] = {}
    for eps in EPSILONS:
        report = classifier_run(
            train,
            tmp / f"clf-{eps}",
            settings=clf_settings(eps, args.clf_epochs, args.clf_batch),
            val=val,
            test=test,
            cfg=cfg,
            encoder=cached_encode,
        )
        macro = report.extra["test_macro"]
        out[eps] = {
            "f1": macro["f1"],
            "auprc": macro["auprc"],
            "epsilon": report.epsilon if report.epsilon is not None else math.inf,
            "epsilon_other": (
                report.epsilon_prv if report.epsilon_accountant == "rdp" else report.epsilon_rdp
            )
            or math.nan,
            "sigma": report.noise_multiplier or 0.0,
            "epoch_s": report.extra["loop_seconds"] / report.epochs,
        }
        print(
            f"  classifier ε={eps:<4} spent ε={out[eps]['epsilon']:.3f} "
            f"({report.epsilon_accountant}; other {out[eps]['epsilon_other']:.3f}) "
            f"σ={out[eps]['sigma']:.3f} macro F1={macro['f1']:.3f} AUPRC={macro['auprc']:.3f}"
            f" epoch {out[eps]['epoch_s']:.3f} s"
        )
    # a tuned non-private model as well (Adam, a wider head): the same loop without noise is
    # the like-for-like floor, this one shows what privacy costs against the best we have
    from guardrails.privacy.engine import DPSettings

    tuned = classifier_run(
        train,
        tmp / "clf-tuned",
        settings=DPSettings(dp=False, epochs=30, batch_size=256, max_physical_batch_size=256),
        val=val,
        test=test,
        cfg=DPMiniLMConfig(hidden=128),
        encoder=cached_encode,
    )
    out[-1.0] = {"f1": tuned.extra["test_macro"]["f1"], "epoch_s": 0.0}
    print(f"  classifier non-private tuned (Adam, 128 units) macro F1={out[-1.0]['f1']:.3f}")
    return out


def _texts(src: str, start: int, count: int, dst: Path) -> Path:
    lines = (DATA / src).read_text(encoding="utf-8").splitlines()[start : start + count]
    dst.write_text(
        "\n".join(json.dumps({"text": json.loads(x)["text"][:300]}) for x in lines) + "\n"
    )
    return dst


def bench_generator(tmp: Path, args: argparse.Namespace) -> dict[float, dict[str, float]]:
    from guardrails.privacy.engine import DPSettings
    from guardrails.privacy.generator import LoRAConfig
    from guardrails.privacy.runs import generator_run

    data = _texts("train.jsonl", 0, args.records, tmp / "private.jsonl")
    heldout = _texts("val.jsonl", 0, args.heldout, tmp / "public-heldout.jsonl")
    out: dict[float, dict[str, float]] = {}
    for eps in EPSILONS:
        dp = math.isfinite(eps)
        settings = DPSettings(
            dp=dp,
            target_epsilon=eps if dp else 8.0,
            epochs=args.gen_epochs,
            batch_size=32,
            max_physical_batch_size=32,
            lr=1e-2,
            clipping="standard",
        )
        report = generator_run(
            data,
            tmp / f"gen-{eps}",
            settings=settings,
            lora=LoRAConfig(r=16, alpha=32, seq_len=48),
            heldout=heldout,
        )
        out[eps] = {
            "ppl_before": report.extra["heldout_perplexity_before"],
            "ppl": report.extra["heldout_perplexity_after"],
            "epsilon": report.epsilon if report.epsilon is not None else math.inf,
            "epoch_s": report.extra["loop_seconds"] / report.epochs,
        }
        print(
            f"  generator  ε={eps:<4} spent ε={out[eps]['epsilon']:.3f} public held-out "
            f"perplexity {out[eps]['ppl_before']:.2f} -> {out[eps]['ppl']:.2f}"
            f"  epoch {out[eps]['epoch_s']:.2f} s"
        )
    return out


def bench_exposure(candidates: int) -> None:
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
    secrets = make_secrets(8, digits=6, rng=rng)
    records = insert_canaries(base, secrets, repeats=20, rng=rng)
    for eps in (0.0, 1.0, 8.0, math.inf):
        model = load_model(BUNDLED_DIR)
        if eps > 0:
            dp = math.isfinite(eps)
            settings = DPSettings(
                dp=dp,
                target_epsilon=eps if dp else 8.0,
                delta=1e-3,
                epochs=12,
                batch_size=20,
                max_physical_batch_size=20,
                lr=2e-2,
                clipping="standard",
            )
            model, _ = train_lora(
                model, records, tok, settings=settings, lora=LoRAConfig(r=8, alpha=16, seq_len=24)
            )
        found = [
            exposure(model, tok, s, candidates=candidates, digits=6, rng=random.Random(11))
            for s in secrets
        ]
        mean = sum(e.exposure for e in found) / len(found)
        name = "base (no fine-tune)" if eps == 0 else f"ε={eps}"
        print(
            f"  exposure   {name:<20} mean {mean:.2f} bits of max {math.log2(candidates):.2f} "
            f"({len(secrets)} canaries x 20 copies in {len(records)} records)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=1500, help="classifier private records")
    parser.add_argument("--val", type=int, default=500, help="public val records (thresholds)")
    parser.add_argument("--test", type=int, default=500, help="public test records")
    parser.add_argument("--clf-epochs", type=int, default=60)
    parser.add_argument("--clf-batch", type=int, default=1024)
    parser.add_argument("--records", type=int, default=400, help="generator private records")
    parser.add_argument("--heldout", type=int, default=200, help="generator public held-out")
    parser.add_argument("--gen-epochs", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--skip", default="", help="comma list of clf,gen,exposure to skip")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
    warnings.filterwarnings("ignore", message="Secure RNG turned off")
    print(describe("torch", "opacus", "numpy", "transformers"))
    print("torch threads: 1")
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print("utility and cost against privacy (same data, same split, every ε):")
        if "clf" not in skip:
            clf = bench_classifier(tmp, args)
            floor = clf[math.inf]
            for eps in (3.0, 8.0):
                goal = 5.0 if eps == 8.0 else 10.0
                for name, ref in (("same loop", floor), ("tuned", clf[-1.0])):
                    gap = 100 * (ref["f1"] - clf[eps]["f1"])
                    print(
                        f"  classifier ε={eps}: {gap:+.1f} F1 points below non-private {name} "
                        f"(goal ≤ {goal:.0f}: {'met' if gap <= goal else 'MISSED'})"
                    )
            ratio = clf[8.0]["epoch_s"] / floor["epoch_s"]
            print(
                f"  classifier cost per epoch DP/non-private x{ratio:.2f} "
                f"(goal ≤ 2.5: {'met' if ratio <= 2.5 else 'MISSED'})"
            )
        if "gen" not in skip:
            gen = bench_generator(tmp, args)
            rel = gen[8.0]["ppl"] / gen[math.inf]["ppl"] - 1
            print(
                f"  generator ε=8 perplexity {100 * rel:+.1f}% vs non-private "
                f"(goal ≤ +15%: {'met' if rel <= 0.15 else 'MISSED'})"
            )
            ratio = gen[8.0]["epoch_s"] / gen[math.inf]["epoch_s"]
            print(
                f"  generator cost per epoch DP/non-private x{ratio:.2f} "
                f"(goal ≤ 1.3: {'met' if ratio <= 1.3 else 'MISSED'})"
            )
        if "exposure" not in skip:
            print("memorisation (canary exposure against the un-fine-tuned base):")
            bench_exposure(args.candidates)


if __name__ == "__main__":
    main()
