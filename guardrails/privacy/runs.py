"""One private (or baseline) training run end to end: read, check δ, train, save, report.

These are what the ``guardrails privacy`` commands and the benchmark call. Each writes the
weights and ``privacy_report.json`` into ``out_dir`` and, given an audit URL, records the
report as a provenance event. Importing this module imports torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from guardrails.privacy.classifier import (
    DPClassifierConfig,
    save_classifier,
    train_private_classifier,
)
from guardrails.privacy.data import check_delta, file_sha256, read_labelled, read_texts
from guardrails.privacy.engine import DPSettings, FitResult, StepProgress
from guardrails.privacy.generator import LoRAConfig, perplexity, train_lora
from guardrails.privacy.lora import save_adapter
from guardrails.privacy.report import PrivacyReport, record_provenance, write_report

DEFAULT_CLASSIFIER = DPClassifierConfig()
DEFAULT_LORA = LoRAConfig()


def _hash_split(
    items: list[Any], key: Any, *, every: float, seed: int
) -> tuple[list[Any], list[Any]]:
    """Deterministic split by a hash of each record, so reruns hold out the same records."""
    kept: list[Any] = []
    held: list[Any] = []
    for item in items:
        u = int.from_bytes(hashlib.sha256(f"{seed}:{key(item)}".encode()).digest()[:8], "big")
        (held if u / 2**64 < every else kept).append(item)
    return kept, held


def _report(
    kind: str,
    settings: DPSettings,
    result: FitResult,
    *,
    data: Path,
    n: int,
    extra: dict[str, Any],
) -> PrivacyReport:
    return PrivacyReport(
        model_kind=kind,
        dp=settings.dp,
        epsilon=result.epsilon,
        target_epsilon=settings.target_epsilon if settings.dp else None,
        delta=settings.delta if settings.dp else None,
        noise_multiplier=result.noise_multiplier,
        sample_rate=result.sample_rate,
        steps=result.steps,
        epochs=settings.epochs,
        max_grad_norm=settings.max_grad_norm if settings.dp else None,
        accountant=settings.accountant if settings.dp else None,
        clipping=settings.clipping if settings.dp else None,
        n_examples=n,
        data_file=str(data),
        data_sha256=file_sha256(data),
        batch_size=settings.batch_size,
        seed=settings.seed,
        extra={
            "poisson_sampling": settings.dp,
            "secure_rng": False,
            "module_fixes": list(result.fixes),
            "train_seconds": round(result.seconds, 2),
            "final_loss": result.losses[-1] if result.losses else None,
            **extra,
        },
    )


def classifier_run(
    data: Path,
    out_dir: Path,
    *,
    settings: DPSettings,
    delta: float | None = None,
    val: Path | None = None,
    test: Path | None = None,
    cfg: DPClassifierConfig = DEFAULT_CLASSIFIER,
    audit_url: str | None = None,
    progress: StepProgress | None = None,
) -> PrivacyReport:
    """Train the classifier on ``data`` (minus a 15% hash split for ``val`` if none given).

    Raises:
        PrivacyError: bad data (file:line), a δ not below 1/n, an unreachable ε.
    """
    examples = read_labelled(data)
    if val is None:
        train, val_set = _hash_split(examples, lambda e: e.text, every=0.15, seed=settings.seed)
    else:
        train, val_set = examples, read_labelled(val)
    test_set = read_labelled(test) if test is not None else None
    d = check_delta(delta, len(train))
    settings = dataclasses.replace(settings, delta=d)
    net, result = train_private_classifier(train, settings=settings, cfg=cfg, progress=progress)
    metrics = save_classifier(
        net,
        out_dir,
        cfg,
        val=val_set,
        test=test_set,
        seed=settings.seed,
        n_train=len(train),
        extra={"trained_from": str(data), "private": settings.dp},
    )
    macro = metrics.get("test_macro")
    report = _report(
        "classifier:byte_ngram",
        settings,
        result,
        data=data,
        n=len(train),
        extra={"val_examples": len(val_set), "test_macro": macro},
    )
    report = write_report(out_dir, report)
    if audit_url is not None:
        record_provenance(audit_url, report, model=str(out_dir))
    return report


def generator_run(
    data: Path,
    out_dir: Path,
    *,
    settings: DPSettings,
    lora: LoRAConfig = DEFAULT_LORA,
    delta: float | None = None,
    base: Path | None = None,
    audit_url: str | None = None,
    progress: StepProgress | None = None,
) -> PrivacyReport:
    """Fine-tune LoRA adapters of the generator at ``base`` (default: bundled) on ``data``.

    Every tenth record (by hash) is held out, not trained on, for the perplexity figure.

    Raises:
        PrivacyError: bad data (file:line), a δ not below 1/n, an unreachable ε.
    """
    from guardrails.generators.moe import BUNDLED_DIR
    from guardrails.generators.moe.loading import TOKENIZER_FILE, load_model, read_config
    from guardrails.generators.moe.tokenizer import BPETokenizer

    base_dir = base or BUNDLED_DIR
    records = read_texts(data)
    train, held = _hash_split(records, lambda r: r, every=0.1, seed=settings.seed)
    d = check_delta(delta, len(train))
    settings = dataclasses.replace(settings, delta=d)
    mcfg = read_config(base_dir)
    tok = BPETokenizer.from_file(base_dir / TOKENIZER_FILE, eos_token_id=mcfg.eos_token_id)
    model: Any = load_model(base_dir)
    ppl_before = perplexity(model, held, tok, seq_len=lora.seq_len) if held else None
    model, result = train_lora(model, train, tok, settings=settings, lora=lora, progress=progress)
    ppl_after = perplexity(model, held, tok, seq_len=lora.seq_len) if held else None
    save_adapter(
        model,
        out_dir,
        {
            "base": str(base_dir),
            "base_weights_sha256": {
                p.name: file_sha256(p) for p in sorted(Path(base_dir).glob("*.safetensors"))
            },
            "r": lora.r,
            "alpha": lora.alpha,
            "targets": list(lora.targets),
            "seq_len": lora.seq_len,
        },
    )
    report = _report(
        "generator:moe-lora",
        settings,
        result,
        data=data,
        n=len(train),
        extra={
            "lora": json.loads(json.dumps(dataclasses.asdict(lora))),
            "heldout_records": len(held),
            "heldout_perplexity_before": ppl_before,
            "heldout_perplexity_after": ppl_after,
        },
    )
    report = write_report(out_dir, report)
    if audit_url is not None:
        record_provenance(audit_url, report, model=str(out_dir))
    return report
