"""Private training (``guardrails train classifier|generator --dp``), reports, ``model show``.

The training commands are defined here once, with one set of privacy options shared by the
classifier and the generator; ``guardrails train classifier --dp`` and ``guardrails train
generator --dp`` call them, and ``guardrails privacy train-classifier|train-generator``
stay as aliases. torch and opacus are imported inside the commands. Exit codes follow
`guardrails.cli.app`: 2 for bad input (bad data line, a δ not below 1/n, an unreachable ε,
a fixed seed without ``--insecure-fixed-seed``), 1 for a run that diverged (nothing written).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from guardrails.cli.app import app
from guardrails.cli.common import AuditOption, JsonOption, fail, out

privacy_app = typer.Typer(
    help="Train with differential privacy (Opacus DP-SGD) and read privacy reports.",
    no_args_is_help=True,
)
model_app = typer.Typer(help="Inspect trained models.", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")
app.add_typer(model_app, name="model")

DpOption = Annotated[
    bool, typer.Option("--dp/--no-dp", help="DP-SGD (default) or the same run without privacy.")
]
EpsilonOption = Annotated[
    float, typer.Option("--epsilon", min=0.0, help="Target ε; the run spends at most this.")
]
DeltaOption = Annotated[
    float | None,
    typer.Option("--delta", help="δ; must be below 1/n (default: a power of ten ≤ 1/(10n))."),
]
NormOption = Annotated[
    float, typer.Option("--max-grad-norm", min=0.0, help="Per-sample clipping norm C.")
]
ClippingOption = Annotated[
    str, typer.Option("--clipping", help="ghost (memory-saving) or standard per-sample clipping.")
]
AccountantOption = Annotated[
    str,
    typer.Option(
        "--accountant", help="rdp or prv: calibrates σ (the report gives ε by both; no gdp)."
    ),
]
OptimizerOption = Annotated[
    str | None,
    typer.Option(
        "--optimizer", help="sgd or adam (default: sgd for the classifier, adam for LoRA)."
    ),
]
LrOption = Annotated[
    float | None,
    typer.Option(
        "--lr",
        min=0.0,
        help="Learning rate (default: adam 2e-3; sgd batch/1024, at most 4).",
    ),
]
FixedSeedOption = Annotated[
    int | None,
    typer.Option(
        "--insecure-fixed-seed",
        help="Tests only: replayable batches and noise. The run is then NOT private and its "
        "report says so first.",
    ),
]
RefusedSeedOption = Annotated[
    int | None,
    typer.Option("--seed", hidden=True, help="Refused: see --insecure-fixed-seed."),
]
SecureOption = Annotated[
    bool | None,
    typer.Option(
        "--secure-mode/--no-secure-mode",
        help="Opacus secure mode (torchcsprng); default: used when torchcsprng is installed.",
    ),
]
NoAuditOption = Annotated[
    bool, typer.Option("--no-audit", help="Do not record the report in the audit database.")
]

SEED_REFUSED = (
    "--seed is refused for private training: a known seed replays the batches and the noise, "
    "so the run would not be private. Use --insecure-fixed-seed N (tests only; the report "
    "then says NOT PRIVATE)."
)


def _audit_url(audit: str | None, no_audit: bool) -> str | None:
    if no_audit:
        return None
    from audit import default_audit_url

    return audit or default_audit_url()


def _run_with_bar(run: Any) -> Any:
    """Call ``run(progress)`` under a progress bar showing loss and ε spent so far."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.fields[info]}"),
        TimeElapsedColumn(),
        console=out,
    ) as bar:
        task = bar.add_task("train", total=None, info="")

        def progress(step: int, total: int, loss: float, eps: float | None) -> None:
            info = f"loss {loss:.4f}" + ("" if eps is None else f"  ε {eps:.2f}")
            bar.update(task, completed=step, total=total, info=info)

        return run(progress)


def _settings(**kw: Any) -> Any:
    from guardrails.privacy.engine import DPSettings

    return DPSettings(**kw)


def _train(run: Any) -> Any:
    """Run under the progress bar; bad input exits 2, a diverged run exits 1."""
    from guardrails.privacy.errors import PrivacyError, TrainingDivergedError

    try:
        return _run_with_bar(run)
    except TrainingDivergedError as exc:
        fail(str(exc), code=1)
    except PrivacyError as exc:
        fail(str(exc))


@privacy_app.command("train-classifier")
def train_classifier(
    data: Annotated[Path, typer.Option("--data", help="Private labelled JSONL (text, labels).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Model directory to write.")] = Path(
        "classifier-dp"
    ),
    val: Annotated[
        Path | None,
        typer.Option(
            "--val",
            help="PUBLIC labelled JSONL: thresholds are calibrated and metrics reported on it "
            "(default: thresholds 0.5, no --data row is used for them).",
        ),
    ] = None,
    test: Annotated[
        Path | None, typer.Option("--test", help="PUBLIC held-out JSONL to report.")
    ] = None,
    model: Annotated[
        str, typer.Option("--model", help="minilm (head on the frozen encoder) or fast.")
    ] = "minilm",
    dp: DpOption = True,
    epsilon: EpsilonOption = 8.0,
    delta: DeltaOption = None,
    max_grad_norm: NormOption = 1.0,
    epochs: Annotated[int, typer.Option(min=1)] = 60,
    batch_size: Annotated[int, typer.Option(min=1, help="Expected logical batch size.")] = 1024,
    physical_batch_size: Annotated[
        int, typer.Option(min=1, help="BatchMemoryManager chunk size.")
    ] = 1024,
    optimizer: OptimizerOption = None,
    lr: LrOption = None,
    buckets: Annotated[int, typer.Option(min=16, help="fast: hashed n-gram table rows.")] = 2**12,
    clipping: ClippingOption = "standard",
    accountant: AccountantOption = "rdp",
    insecure_fixed_seed: FixedSeedOption = None,
    secure_mode: SecureOption = None,
    seed: RefusedSeedOption = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 1,
    audit: AuditOption = None,
    no_audit: NoAuditOption = False,
) -> None:
    """Train the safety classifier with DP-SGD; write weights and privacy_report.json."""
    import torch

    from guardrails.privacy.classifier import DPClassifierConfig, DPMiniLMConfig
    from guardrails.privacy.errors import PrivacyError
    from guardrails.privacy.runs import classifier_run

    if seed is not None:
        fail(SEED_REFUSED)
    if model not in ("minilm", "fast"):
        fail(f"--model must be minilm or fast, got {model!r}")
    torch.set_num_threads(threads)
    try:
        settings = _settings(
            dp=dp,
            target_epsilon=epsilon,
            delta=delta,
            max_grad_norm=max_grad_norm,
            epochs=epochs,
            batch_size=batch_size,
            max_physical_batch_size=physical_batch_size,
            optimizer=optimizer or "sgd",
            lr=lr,
            accountant=accountant,
            clipping=clipping,
            fixed_seed=insecure_fixed_seed,
            secure_mode=secure_mode,
        )
        settings.check()
    except PrivacyError as exc:
        fail(str(exc))
    cfg = DPMiniLMConfig() if model == "minilm" else DPClassifierConfig(buckets=buckets)
    report = _train(
        lambda progress: classifier_run(
            data,
            out_dir,
            settings=settings,
            val=val,
            test=test,
            cfg=cfg,
            audit_url=_audit_url(audit, no_audit),
            progress=progress,
        )
    )
    _print_report(report.to_dict(), out_dir)


@privacy_app.command("train-generator")
def train_generator(
    data: Annotated[
        Path,
        typer.Option("--data", help="Private text (one record a line) or JSONL with 'text'."),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Adapter directory to write.")] = Path(
        "generator-lora"
    ),
    heldout: Annotated[
        Path | None,
        typer.Option(
            "--heldout",
            help="PUBLIC text for the held-out perplexity and the divergence check "
            "(default: none is published).",
        ),
    ] = None,
    base: Annotated[
        Path | None, typer.Option("--base", help="Base checkpoint (default: the bundled model).")
    ] = None,
    lora_r: Annotated[int, typer.Option("--lora-r", min=1)] = 16,
    lora_alpha: Annotated[float, typer.Option("--lora-alpha", min=0.0)] = 32.0,
    target: Annotated[
        str, typer.Option("--target", help="Comma-separated linear layers to adapt.")
    ] = "q_proj,v_proj",
    seq_len: Annotated[int, typer.Option(min=4, help="Tokens per record (longer are cut).")] = 64,
    dp: DpOption = True,
    epsilon: EpsilonOption = 8.0,
    delta: DeltaOption = None,
    max_grad_norm: NormOption = 1.0,
    epochs: Annotated[int, typer.Option(min=1)] = 3,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    physical_batch_size: Annotated[int, typer.Option(min=1)] = 32,
    optimizer: OptimizerOption = None,
    lr: LrOption = None,
    clipping: ClippingOption = "standard",
    accountant: AccountantOption = "rdp",
    insecure_fixed_seed: FixedSeedOption = None,
    secure_mode: SecureOption = None,
    seed: RefusedSeedOption = None,
    threads: Annotated[int, typer.Option(min=1)] = 1,
    audit: AuditOption = None,
    no_audit: NoAuditOption = False,
) -> None:
    """Fine-tune LoRA adapters of the MoE generator with DP-SGD; write them and a report."""
    import torch

    from guardrails.privacy.errors import PrivacyError
    from guardrails.privacy.generator import LoRAConfig
    from guardrails.privacy.runs import generator_run

    if seed is not None:
        fail(SEED_REFUSED)
    torch.set_num_threads(threads)
    targets = tuple(t.strip() for t in target.split(",") if t.strip())
    try:
        settings = _settings(
            dp=dp,
            target_epsilon=epsilon,
            delta=delta,
            max_grad_norm=max_grad_norm,
            epochs=epochs,
            batch_size=batch_size,
            max_physical_batch_size=physical_batch_size,
            optimizer=optimizer or "adam",
            lr=lr,
            accountant=accountant,
            clipping=clipping,
            fixed_seed=insecure_fixed_seed,
            secure_mode=secure_mode,
        )
        settings.check()
    except PrivacyError as exc:
        fail(str(exc))
    report = _train(
        lambda progress: generator_run(
            data,
            out_dir,
            settings=settings,
            lora=LoRAConfig(r=lora_r, alpha=lora_alpha, targets=targets, seq_len=seq_len),
            heldout=heldout,
            base=base,
            audit_url=_audit_url(audit, no_audit),
            progress=progress,
        )
    )
    _print_report(report.to_dict(), out_dir)


def _print_report(
    report: dict[str, Any], path: Path, *, checks: dict[str, bool] | None = None
) -> None:
    from rich.table import Table

    table = Table(title=f"privacy report: {path}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key in (
        "claim",
        "model_kind",
        "dp",
        "epsilon",
        "epsilon_accountant",
        "epsilon_rdp",
        "epsilon_prv",
        "target_epsilon",
        "delta",
        "noise_multiplier",
        "sample_rate",
        "steps",
        "epochs",
        "max_grad_norm",
        "accountant",
        "clipping",
        "rng",
        "secure_mode",
        "lr",
        "n_examples",
        "batch_size",
        "data_file",
        "data_sha256",
    ):
        value = report.get(key)
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        table.add_row(key, shown)
    table.add_row("versions", ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items()))
    names = sorted(set(report.get("files", {})) | set(checks or {}))
    for name in names:
        digest = report.get("files", {}).get(name, "(not in the report)")
        ok = "" if checks is None else ("  (matches)" if checks.get(name) else "  (MISMATCH)")
        table.add_row(f"file {name}", f"{digest}{ok}")
    out.print(table)


@privacy_app.command("report")
def show_report(
    path: Annotated[Path, typer.Argument(help="Model directory or report file.")],
    as_json: JsonOption = False,
) -> None:
    """Print the privacy report of a trained model (same as ``guardrails model show``)."""
    model_show(path, as_json)


@model_app.command("show")
def model_show(
    path: Annotated[Path, typer.Argument(help="Model directory or privacy_report.json.")],
    as_json: JsonOption = False,
) -> None:
    """Print a model's privacy report and whether every file beside it still matches (exit 1 if
    one was changed, removed or added)."""
    from guardrails.privacy.errors import PrivacyError
    from guardrails.privacy.report import check_files, read_report

    try:
        report = read_report(path)
    except PrivacyError as exc:
        fail(str(exc))
    directory = path if path.is_dir() else path.parent
    checks = check_files(directory, report)
    if as_json:
        out.print_json(json.dumps({"report": report.to_dict(), "files_match": checks}))
    else:
        _print_report(report.to_dict(), directory, checks=checks)
    if not all(checks.values()):
        raise typer.Exit(1)


__all__ = [
    "SEED_REFUSED",
    "AccountantOption",
    "ClippingOption",
    "DeltaOption",
    "DpOption",
    "EpsilonOption",
    "FixedSeedOption",
    "LrOption",
    "NoAuditOption",
    "NormOption",
    "OptimizerOption",
    "RefusedSeedOption",
    "SecureOption",
    "model_app",
    "model_show",
    "privacy_app",
    "show_report",
    "train_classifier",
    "train_generator",
]
