"""One private (or baseline) training run end to end: read, check δ, train, check, save, report.

These are what the ``guardrails train ... --dp`` commands and the benchmark call. Each writes
the model and ``privacy_report.json`` into ``out_dir`` and, given an audit URL, records the
report as a provenance event.

Private data is used only inside the accounting: every record of ``data`` is a training
record (none is held out or used for thresholds), and what is published besides the
weights (thresholds, metrics, perplexity, the divergence check) is computed on files the
caller declares public (``val``, ``test``, ``heldout``). A run that diverges raises
`TrainingDivergedError` and writes nothing. Importing this module imports torch.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from guardrails.classifier.dataset import Example
from guardrails.privacy.classifier import (
    ClassifierConfig,
    DPMiniLMConfig,
    Encoded,
    build_net,
    check_not_diverged,
    encode,
    evaluate_public,
    public_loss,
    save_classifier,
    train_private_classifier,
)
from guardrails.privacy.data import check_delta, file_sha256, read_labelled, read_texts
from guardrails.privacy.engine import DPSettings, FitResult, StepProgress
from guardrails.privacy.generator import LoRAConfig, perplexity, train_lora
from guardrails.privacy.lora import save_adapter
from guardrails.privacy.report import (
    PrivacyReport,
    claim_text,
    model_files,
    record_provenance,
    write_report,
)

DEFAULT_CLASSIFIER = DPMiniLMConfig()
DEFAULT_LORA = LoRAConfig()

Encoder = Callable[[Sequence[Example], ClassifierConfig], Encoded]


def _public(path: Path | None) -> dict[str, Any]:
    return {} if path is None else {"path": str(path.resolve()), "sha256": file_sha256(path)}


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
        claim=claim_text(
            dp=settings.dp, private=result.private, epsilon=result.epsilon, delta=result.delta
        ),
        model_kind=kind,
        dp=settings.dp,
        epsilon=result.epsilon,
        epsilon_accountant=result.epsilon_accountant,
        epsilon_rdp=result.epsilons.get("rdp"),
        epsilon_prv=result.epsilons.get("prv"),
        target_epsilon=settings.target_epsilon if settings.dp else None,
        delta=result.delta,
        noise_multiplier=result.noise_multiplier,
        sample_rate=result.sample_rate,
        steps=result.steps,
        epochs=settings.epochs,
        max_grad_norm=settings.max_grad_norm if settings.dp else None,
        accountant=settings.accountant if settings.dp else None,
        clipping=settings.clipping if settings.dp else None,
        rng=result.rng,
        secure_mode=result.secure_mode,
        n_examples=n,
        data_file=str(data.resolve()),
        data_sha256=file_sha256(data),
        batch_size=settings.batch_size,
        lr=result.lr,
        extra={
            "poisson_sampling": settings.dp,
            "optimizer": settings.optimizer,
            "module_fixes": list(result.fixes),
            "train_seconds": round(result.seconds, 2),
            "loop_seconds": round(result.loop_seconds, 3),
            **extra,
        },
    )


def classifier_run(
    data: Path,
    out_dir: Path,
    *,
    settings: DPSettings,
    val: Path | None = None,
    test: Path | None = None,
    cfg: ClassifierConfig = DEFAULT_CLASSIFIER,
    audit_url: str | None = None,
    progress: StepProgress | None = None,
    encoder: Encoder = encode,
) -> PrivacyReport:
    """Train the classifier on every record of ``data``.

    Thresholds are calibrated on ``val`` (public) or left at the documented default 0.5;
    metrics are reported on ``val`` and ``test`` (public) only. ``encoder`` is `encode`
    (a benchmark may pass a cache of it).

    Raises:
        PrivacyError: bad data (file:line), a δ not below 1/n, an unreachable ε.
        TrainingDivergedError: non-finite weights, or a public val loss far above the untrained one.
    """
    train = read_labelled(data)
    if settings.dp:
        check_delta(settings.delta, len(train))  # before the (slow) encoding; fit checks again
    val_set = read_labelled(val) if val is not None else None
    test_set = read_labelled(test) if test is not None else None
    val_in = encoder(val_set, cfg) if val_set else None
    test_in = encoder(test_set, cfg) if test_set else None
    net, result = train_private_classifier(
        train, settings=settings, cfg=cfg, progress=progress, inputs=encoder(train, cfg)
    )
    if val_in is not None:
        check_not_diverged(
            public_loss(build_net(cfg), *val_in), public_loss(net, *val_in), what="public val loss"
        )
    evaluation = evaluate_public(net, val=val_in, test=test_in)
    save_classifier(
        net,
        out_dir,
        cfg,
        evaluation=evaluation,
        n_train=len(train),
        extra={"trained_from": str(data.resolve()), "private": result.private},
    )
    report = _report(
        f"classifier:{'minilm_head' if isinstance(cfg, DPMiniLMConfig) else 'byte_ngram'}",
        settings,
        result,
        data=data,
        n=len(train),
        extra={
            "thresholds_from": "val (public)" if val_in is not None else "default 0.5",
            "val": _public(val),
            "test": _public(test),
            "val_macro": evaluation.metrics.get("val_macro"),
            "test_macro": evaluation.metrics.get("test_macro"),
        },
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
    heldout: Path | None = None,
    base: Path | None = None,
    audit_url: str | None = None,
    progress: StepProgress | None = None,
) -> PrivacyReport:
    """Fine-tune LoRA adapters of the generator at ``base`` (default: bundled) on ``data``.

    Every record of ``data`` is trained on. The perplexity figures are computed on
    ``heldout``, a file the caller declares public; without it none is published.

    Raises:
        PrivacyError: bad data (file:line), a δ not below 1/n, an unreachable ε.
        TrainingDivergedError: non-finite adapters, or public perplexity over 1.5 × the base's.
    """
    from guardrails.generators.moe import BUNDLED_DIR
    from guardrails.generators.moe.loading import TOKENIZER_FILE, load_model, read_config
    from guardrails.generators.moe.tokenizer import BPETokenizer
    from guardrails.privacy.classifier import check_not_diverged as check

    base_dir = base or BUNDLED_DIR
    train = read_texts(data)
    if settings.dp:
        check_delta(settings.delta, len(train))
    held = read_texts(heldout) if heldout is not None else []
    mcfg = read_config(base_dir)
    tok = BPETokenizer.from_file(base_dir / TOKENIZER_FILE, eos_token_id=mcfg.eos_token_id)
    model: Any = load_model(base_dir)
    ppl_before = perplexity(model, held, tok, seq_len=lora.seq_len) if held else None
    model, result = train_lora(model, train, tok, settings=settings, lora=lora, progress=progress)
    ppl_after = perplexity(model, held, tok, seq_len=lora.seq_len) if held else None
    if ppl_before is not None and ppl_after is not None:
        check(ppl_before, ppl_after, what="public held-out perplexity")
    save_adapter(
        model,
        out_dir,
        {
            "base": str(Path(base_dir).resolve()),
            "base_files_sha256": model_files(base_dir),
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
            "heldout": _public(heldout),
            "heldout_records": len(held),
            "heldout_perplexity_before": ppl_before,
            "heldout_perplexity_after": ppl_after,
        },
    )
    report = write_report(out_dir, report)
    if audit_url is not None:
        record_provenance(audit_url, report, model=str(out_dir))
    return report


__all__ = [
    "DEFAULT_CLASSIFIER",
    "DEFAULT_LORA",
    "Encoder",
    "classifier_run",
    "generator_run",
]
