"""``guardrails privacy ...`` (DP-SGD training, reports) and ``guardrails model show``.

torch and opacus are imported inside the commands. Exit codes follow `guardrails.cli.app`:
2 for bad input (bad data line, a δ not below 1/n, an unreachable ε).
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
AccountantOption = Annotated[str, typer.Option("--accountant", help="rdp, prv or gdp.")]
OptimizerOption = Annotated[
    str | None,
    typer.Option(
        "--optimizer", help="sgd or adam (default: sgd for the classifier with --dp, else adam)."
    ),
]
LrOption = Annotated[
    float | None,
    typer.Option("--lr", min=0.0, help="Learning rate (default: 8.0 for sgd, 0.01 for adam)."),
]
DEFAULT_LR = {"sgd": 8.0, "adam": 1e-2}
NoAuditOption = Annotated[
    bool, typer.Option("--no-audit", help="Do not record the report in the audit database.")
]


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


@privacy_app.command("train-classifier")
def train_classifier(
    data: Annotated[Path, typer.Option("--data", help="Labelled JSONL (text, labels).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Model directory to write.")] = Path(
        "classifier-dp"
    ),
    val: Annotated[
        Path | None,
        typer.Option("--val", help="Public JSONL for thresholds (default: 15% of --data)."),
    ] = None,
    test: Annotated[Path | None, typer.Option("--test", help="Held-out JSONL to report.")] = None,
    dp: DpOption = True,
    epsilon: EpsilonOption = 8.0,
    delta: DeltaOption = None,
    max_grad_norm: NormOption = 1.0,
    epochs: Annotated[int, typer.Option(min=1)] = 20,
    batch_size: Annotated[int, typer.Option(min=1, help="Expected logical batch size.")] = 512,
    physical_batch_size: Annotated[
        int, typer.Option(min=1, help="BatchMemoryManager chunk size.")
    ] = 256,
    optimizer: OptimizerOption = None,
    lr: LrOption = None,
    buckets: Annotated[int, typer.Option(min=16, help="Hashed n-gram table rows.")] = 2**12,
    clipping: ClippingOption = "ghost",
    accountant: AccountantOption = "rdp",
    seed: Annotated[int, typer.Option()] = 13,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 1,
    audit: AuditOption = None,
    no_audit: NoAuditOption = False,
) -> None:
    """Train the fast safety classifier with DP-SGD; write weights and privacy_report.json."""
    import torch

    from guardrails.privacy.classifier import DPClassifierConfig
    from guardrails.privacy.errors import PrivacyError
    from guardrails.privacy.runs import classifier_run

    torch.set_num_threads(threads)
    # DP noise on a hashed table favours SGD (see guardrails.privacy.engine.OPTIMIZERS)
    opt = optimizer or ("sgd" if dp else "adam")
    try:
        settings = _settings(
            dp=dp,
            target_epsilon=epsilon,
            max_grad_norm=max_grad_norm,
            epochs=epochs,
            batch_size=batch_size,
            max_physical_batch_size=physical_batch_size,
            optimizer=opt,
            lr=lr if lr is not None else DEFAULT_LR.get(opt, 1e-2),
            accountant=accountant,
            clipping=clipping,
            seed=seed,
        )
        settings.check()
        report = _run_with_bar(
            lambda progress: classifier_run(
                data,
                out_dir,
                settings=settings,
                delta=delta,
                val=val,
                test=test,
                cfg=DPClassifierConfig(buckets=buckets),
                audit_url=_audit_url(audit, no_audit),
                progress=progress,
            )
        )
    except PrivacyError as exc:
        fail(str(exc))
    _print_report(report.to_dict(), out_dir)


@privacy_app.command("train-generator")
def train_generator(
    data: Annotated[
        Path, typer.Option("--data", help="Plain text (one record a line) or JSONL with 'text'.")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Adapter directory to write.")] = Path(
        "generator-lora"
    ),
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
    clipping: ClippingOption = "ghost",
    accountant: AccountantOption = "rdp",
    seed: Annotated[int, typer.Option()] = 13,
    threads: Annotated[int, typer.Option(min=1)] = 1,
    audit: AuditOption = None,
    no_audit: NoAuditOption = False,
) -> None:
    """Fine-tune LoRA adapters of the MoE generator with DP-SGD; write them and a report."""
    import torch

    from guardrails.privacy.errors import PrivacyError
    from guardrails.privacy.generator import LoRAConfig
    from guardrails.privacy.runs import generator_run

    torch.set_num_threads(threads)
    targets = tuple(t.strip() for t in target.split(",") if t.strip())
    opt = optimizer or "adam"
    try:
        settings = _settings(
            dp=dp,
            target_epsilon=epsilon,
            max_grad_norm=max_grad_norm,
            epochs=epochs,
            batch_size=batch_size,
            max_physical_batch_size=physical_batch_size,
            optimizer=opt,
            lr=lr if lr is not None else DEFAULT_LR.get(opt, 1e-2),
            accountant=accountant,
            clipping=clipping,
            seed=seed,
        )
        settings.check()
        report = _run_with_bar(
            lambda progress: generator_run(
                data,
                out_dir,
                settings=settings,
                lora=LoRAConfig(r=lora_r, alpha=lora_alpha, targets=targets, seq_len=seq_len),
                delta=delta,
                base=base,
                audit_url=_audit_url(audit, no_audit),
                progress=progress,
            )
        )
    except PrivacyError as exc:
        fail(str(exc))
    _print_report(report.to_dict(), out_dir)


def _print_report(
    report: dict[str, Any], path: Path, *, checks: dict[str, bool] | None = None
) -> None:
    from rich.table import Table

    table = Table(title=f"privacy report: {path}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key in (
        "model_kind",
        "dp",
        "epsilon",
        "target_epsilon",
        "delta",
        "noise_multiplier",
        "sample_rate",
        "steps",
        "epochs",
        "max_grad_norm",
        "accountant",
        "clipping",
        "n_examples",
        "batch_size",
        "data_file",
        "data_sha256",
    ):
        value = report.get(key)
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        table.add_row(key, shown)
    table.add_row("versions", ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items()))
    for name, digest in report.get("weights", {}).items():
        ok = "" if checks is None else ("  (matches)" if checks.get(name) else "  (MISMATCH)")
        table.add_row(f"weights {name}", f"{digest}{ok}")
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
    """Print a model's privacy report and whether its weights still match it (exit 1 if not)."""
    from guardrails.privacy.errors import PrivacyError
    from guardrails.privacy.report import check_weights, read_report

    try:
        report = read_report(path)
    except PrivacyError as exc:
        fail(str(exc))
    directory = path if path.is_dir() else path.parent
    checks = check_weights(directory, report)
    if as_json:
        out.print_json(json.dumps({"report": report.to_dict(), "weights_match": checks}))
    else:
        _print_report(report.to_dict(), directory, checks=checks)
    if not all(checks.values()):
        raise typer.Exit(1)
