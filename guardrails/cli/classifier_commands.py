"""``guardrails train classifier`` and ``guardrails eval``: retrain and measure the classifier.

torch and the classifier's training code are imported inside the commands, so registering
them costs nothing at ``guardrails --help`` time. Exit codes follow `guardrails.cli.app`:
2 for bad input (missing or malformed data, unknown model).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from guardrails.cli.app import app, train_app

_console = Console()

_MODELS = ("fast", "minilm")


def _fail(message: str) -> typer.Exit:
    _console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code=2)


def _hash_split(examples: list[Any], *, seed: int, fraction: float) -> tuple[list[Any], list[Any]]:
    """Deterministic train/val split by a hash of each text (so reruns agree)."""
    train: list[Any] = []
    val: list[Any] = []
    for ex in examples:
        u = int.from_bytes(hashlib.sha256(f"{seed}:{ex.text}".encode()).digest()[:8], "big")
        (val if u / 2**64 < fraction else train).append(ex)
    return train, val


@train_app.command("classifier")
def train_classifier(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Training JSONL. Default: build the data set from the data card's sources.",
        ),
    ] = None,
    val: Annotated[
        Path | None,
        typer.Option(
            "--val",
            help="Validation JSONL for thresholds. Default: a fixed 15% hash split of --data.",
        ),
    ] = None,
    test: Annotated[Path | None, typer.Option("--test", help="Held-out JSONL to report.")] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Directory for weights and model card.")
    ] = Path("classifier-out"),
    model: Annotated[str, typer.Option("--model", help="fast or minilm.")] = "fast",
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default per model).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds data building, splits and training.")] = 13,
    threads: Annotated[int, typer.Option(help="torch threads for training.")] = 1,
    buckets: Annotated[int | None, typer.Option(help="Fast model hash buckets.")] = None,
    data_out: Annotated[
        Path | None,
        typer.Option(
            "--data-out",
            help="When building from sources, also write the splits and DATA_CARD.md here.",
        ),
    ] = None,
    dp: Annotated[
        bool, typer.Option("--dp", help="Train with DP-SGD (see `guardrails privacy`).")
    ] = False,
    epsilon: Annotated[float, typer.Option(help="With --dp: target ε.")] = 8.0,
    delta: Annotated[float | None, typer.Option(help="With --dp: δ (default below 1/n).")] = None,
    max_grad_norm: Annotated[float, typer.Option(help="With --dp: clipping norm.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="With --dp: expected logical batch.")] = 512,
) -> None:
    """Train a classifier, calibrate thresholds on validation data, write a model card.

    With ``--dp`` this is `guardrails privacy train-classifier` (fast model only): Opacus
    DP-SGD to a target ε, with a privacy report written and recorded as provenance.
    """
    if dp:
        if data is None or model != "fast":
            raise _fail("--dp needs --data FILE.jsonl and the fast model")
        from guardrails.cli.privacy_commands import train_classifier as train_private

        train_private(
            data=data,
            out_dir=out,
            val=val,
            test=test,
            epsilon=epsilon,
            delta=delta,
            max_grad_norm=max_grad_norm,
            epochs=epochs or 20,
            batch_size=batch_size,
            seed=seed,
            threads=threads,
        )
        return
    import dataclasses
    import json

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from guardrails.classifier import ClassifierError
    from guardrails.classifier.cards import render_data_card, render_model_card
    from guardrails.classifier.dataset import read_jsonl, write_jsonl
    from guardrails.classifier.training import FastConfig, MiniLMConfig, train_fast, train_minilm

    if model not in _MODELS:
        raise _fail(f"--model must be one of {list(_MODELS)}, got {model!r}")
    try:
        test_set = read_jsonl(test) if test else None
        if data is None:
            from guardrails.classifier.sources import build_dataset

            _console.print("building the data set from package-shipped sources ...")
            params = {"seed": seed}
            splits = build_dataset(seed=seed, progress=lambda m: _console.print(f"  reading {m}"))
            train_set, val_set = splits["train"], splits["val"]
            test_set = test_set if test_set is not None else splits["test"]
            if data_out is not None:
                for name, exs in splits.items():
                    write_jsonl(data_out / f"{name}.jsonl", exs)
                (data_out / "DATA_CARD.md").write_text(render_data_card(splits, params), "utf-8")
        else:
            examples = read_jsonl(data)
            if val is not None:
                train_set, val_set = examples, read_jsonl(val)
            else:
                train_set, val_set = _hash_split(examples, seed=seed, fraction=0.15)
        extra = {"trained_from": str(data) if data else f"build_dataset(seed={seed})"}
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=_console,
            transient=False,
        ) as bar:
            tasks: dict[str, Any] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=total)
                bar.update(tasks[phase], completed=done, total=total)

            if model == "fast":
                fcfg = FastConfig()
                changes: dict[str, Any] = {}
                if epochs is not None:
                    changes["epochs"] = epochs
                if buckets is not None:
                    changes["buckets"] = buckets
                result = train_fast(
                    train_set,
                    val_set,
                    out,
                    test=test_set,
                    cfg=dataclasses.replace(fcfg, **changes),
                    seed=seed,
                    num_threads=threads,
                    progress=progress,
                    extra_config=extra,
                )
            else:
                mcfg = MiniLMConfig()
                if epochs is not None:
                    mcfg = dataclasses.replace(mcfg, epochs=epochs)
                result = train_minilm(
                    train_set,
                    val_set,
                    out,
                    test=test_set,
                    cfg=mcfg,
                    seed=seed,
                    num_threads=threads,
                    progress=progress,
                    extra_config=extra,
                )
    except ClassifierError as exc:
        raise _fail(str(exc)) from exc
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    (out / "MODEL_CARD.md").write_text(
        render_model_card(config, title=f"{model} safety classifier"), encoding="utf-8"
    )
    _print_metrics(result.test or result.val, title="test" if result.test else "validation")
    _console.print(f"wrote {out} in {result.seconds:.0f} s")


def _print_metrics(metrics: Any, *, title: str) -> None:
    from guardrails.classifier.calibration import macro

    table = Table(title=f"per-category metrics ({title})")
    table.add_column("category", no_wrap=True, min_width=16)
    for col in ("threshold", "precision", "recall", "F1", "AUPRC", "positives"):
        table.add_column(col, justify="right")
    for m in metrics:
        table.add_row(
            m.category,
            f"{m.threshold:.3f}",
            f"{m.precision:.3f}",
            f"{m.recall:.3f}",
            f"{m.f1:.3f}",
            "n/a" if m.auprc != m.auprc else f"{m.auprc:.3f}",
            str(m.support),
        )
    mm = macro(metrics)
    table.add_row(
        "macro",
        "",
        f"{mm['precision']:.3f}",
        f"{mm['recall']:.3f}",
        f"{mm['f1']:.3f}",
        f"{mm['auprc']:.3f}",
        "",
    )
    _console.print(table)


@app.command("eval")
def eval_classifier(
    data: Annotated[Path, typer.Option("--data", help="Labelled JSONL to score.")],
    model: Annotated[
        str, typer.Option("--model", help="fast, minilm, or a weights directory.")
    ] = "fast",
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", help="Write precision-recall curves (.svg, or .png with matplotlib)."
        ),
    ] = None,
    int8: Annotated[bool, typer.Option(help="Use INT8 dynamic quantization.")] = False,
    threads: Annotated[int | None, typer.Option(help="torch threads.")] = None,
) -> None:
    """Print per-category precision, recall, F1 and AUPRC of a classifier on labelled data."""
    from guardrails.classifier import ClassifierError, load_classifier
    from guardrails.classifier.calibration import pr_curve
    from guardrails.classifier.dataset import read_jsonl
    from guardrails.classifier.pr_plot import write_plot
    from guardrails.classifier.training import evaluate

    try:
        examples = read_jsonl(data)
        clf = load_classifier(model, int8=int8, num_threads=threads)
        metrics, scores, y = evaluate(clf, examples)
        _print_metrics(
            metrics,
            title=f"{clf.name}{' int8' if int8 else ''} on {data.name}, {len(examples)} examples",
        )
        if plot is not None:
            curves = {}
            for i, c in enumerate(clf.categories):
                precision, recall, _ = pr_curve(y[:, i], scores[:, i])
                curves[c] = (precision, recall)
            write_plot(plot, curves, title=f"PR curves: {clf.name} on {data.name}")
            _console.print(f"wrote {plot}")
    except ClassifierError as exc:
        raise _fail(str(exc)) from exc
