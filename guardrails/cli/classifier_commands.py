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

from guardrails.cli import privacy_commands as DP  # noqa: N812  (the shared --dp options)
from guardrails.cli.app import app, train_app
from guardrails.cli.common import AuditOption, JsonOption, progress_bar

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
        bool,
        typer.Option(
            "--dp", help="Train with DP-SGD on private --data (--val/--test must be public)."
        ),
    ] = False,
    epsilon: DP.EpsilonOption = 8.0,
    delta: DP.DeltaOption = None,
    max_grad_norm: DP.NormOption = 1.0,
    batch_size: Annotated[int, typer.Option(help="With --dp: expected logical batch.")] = 1024,
    accountant: DP.AccountantOption = "rdp",
    clipping: DP.ClippingOption = "standard",
    lr: DP.LrOption = None,
    insecure_fixed_seed: DP.FixedSeedOption = None,
    audit: AuditOption = None,
    no_audit: DP.NoAuditOption = False,
) -> None:
    """Train a classifier, calibrate thresholds on validation data, write a model card.

    With ``--dp`` this is `guardrails privacy train-classifier`: Opacus DP-SGD to a target ε
    (the MiniLM head on the frozen encoder by default), with a privacy report written and
    recorded as provenance. ``--seed`` does not apply to it (see ``--insecure-fixed-seed``).
    """
    if dp:
        if data is None:
            raise _fail("--dp needs --data FILE.jsonl (the private training records)")
        # --seed is not passed on: a fixed seed makes a DP run replayable (not private)
        DP.train_classifier(
            data=data,
            out_dir=out,
            val=val,
            test=test,
            model=model,
            epsilon=epsilon,
            delta=delta,
            max_grad_norm=max_grad_norm,
            epochs=epochs or 60,
            batch_size=batch_size,
            physical_batch_size=1024,
            optimizer=None,
            lr=lr,
            buckets=buckets or 2**12,
            clipping=clipping,
            accountant=accountant,
            insecure_fixed_seed=insecure_fixed_seed,
            secure_mode=None,
            seed=None,
            threads=threads,
            audit=audit,
            no_audit=no_audit,
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
    as_json: JsonOption = False,
) -> None:
    """Per-category precision, recall, F1 and AUPRC (flag and block thresholds), per-language
    attack recall and benign block rate, and the detection issue's goals, on labelled data.

    Scoring shows a progress bar on a terminal; ``--json`` prints every figure as one JSON
    document instead of tables."""
    from guardrails.classifier import ClassifierError, load_classifier
    from guardrails.classifier.calibration import category_metrics, pr_curve
    from guardrails.classifier.dataset import read_jsonl
    from guardrails.classifier.pr_plot import write_plot
    from guardrails.classifier.report import attack_pr_curves, goal_figures, language_figures
    from guardrails.classifier.training import evaluate

    try:
        examples = read_jsonl(data)
        clf = load_classifier(model, int8=int8, num_threads=threads)
        with progress_bar("scoring", len(examples)) as advance:
            done = [0]

            def progress(phase: str, scored: int, total: int) -> None:
                advance(scored - done[0])
                done[0] = scored

            metrics, scores, y = evaluate(clf, examples, progress=progress)
        label = f"{clf.name}{' int8' if int8 else ''} on {data.name}, {len(examples)} examples"
        block = [clf.block_thresholds[c] for c in clf.categories]
        block_metrics = [
            category_metrics(c, y[:, i], scores[:, i], block[i])
            for i, c in enumerate(clf.categories)
        ]
        languages = language_figures(
            examples,
            scores,
            flag_thresholds=[clf.thresholds[c] for c in clf.categories],
            block_thresholds=block,
            min_signal=clf.min_signal_chars,
        )
        goals = goal_figures(
            examples,
            scores,
            list(clf.categories),
            block_thresholds=block,
            min_signal=clf.min_signal_chars,
        )
        if as_json:
            import dataclasses
            import json

            document = {
                "model": clf.name,
                "int8": int8,
                "data": str(data),
                "examples": len(examples),
                "flag": [dataclasses.asdict(m) for m in metrics],
                "block": [dataclasses.asdict(m) for m in block_metrics],
                "languages": [dataclasses.asdict(r) for r in languages],
                "goals": dataclasses.asdict(goals),
            }
            typer.echo(json.dumps(_finite(document), default=float, allow_nan=False))
        else:
            _print_metrics(metrics, title=f"flag thresholds; {label}")
            _print_metrics(block_metrics, title=f"block thresholds; {label}")
            _print_languages(languages)
            _print_goals(goals)
        if plot is not None:
            curves = {}
            for i, c in enumerate(clf.categories):
                precision, recall, _ = pr_curve(y[:, i], scores[:, i])
                curves[c] = (precision, recall)
            write_plot(plot, curves, title=f"PR curves: {clf.name} on {data.name}")
            lang_plot = plot.with_name(f"{plot.stem}-languages{plot.suffix}")
            write_plot(
                lang_plot,
                attack_pr_curves(examples, scores),
                title=f"PR per language (any category): {clf.name} on {data.name}",
            )
            if not as_json:
                _console.print(f"wrote {plot} and {lang_plot}")
    except ClassifierError as exc:
        raise _fail(str(exc)) from exc


def _finite(value: Any) -> Any:
    """``value`` with NaN (an undefined ratio: no examples) as ``null``, for strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}%"


def _print_languages(rows: Any) -> None:
    table = Table(title="per language (block = what default refuses; short texts never block)")
    for col in ("lang", "attacks", "benign", "caught (block)", "caught (flag)", "benign blocked"):
        table.add_column(col, justify="right" if col != "lang" else "left")
    table.add_column("benign flagged", justify="right")
    for r in rows:
        table.add_row(
            r.lang,
            str(r.attacks),
            str(r.benign),
            _pct(r.attack_recall_block),
            _pct(r.attack_recall_flag),
            _pct(r.benign_block_rate),
            _pct(r.benign_flag_rate),
        )
    _console.print(table)


def _print_goals(g: Any) -> None:
    table = Table(title="the detection issue's goals, at the block thresholds")
    table.add_column("measure")
    table.add_column("goal", justify="right")
    table.add_column("measured", justify="right")
    table.add_row("injection recall", ">= 90%", _pct(g.injection_recall))
    table.add_row("injection FPR (benign)", "<= 2%", _pct(g.injection_fpr))
    table.add_row("harmful requests recall", ">= 85%", _pct(g.harmful_request_recall))
    table.add_row("harmful requests FPR", "<= 3%", _pct(g.harmful_request_fpr))
    table.add_row(
        "harmful outputs F1",
        ">= 0.80",
        "n/a" if g.harmful_output_f1 != g.harmful_output_f1 else f"{g.harmful_output_f1:.3f}",
    )
    table.add_row("non-English attacks recall", ">= 80%", _pct(g.non_english_attack_recall))
    table.add_row("non-English benign blocked", "<= 3%", _pct(g.non_english_benign_block_rate))
    table.add_row(f"ordinary chat blocked ({g.chat_examples})", "<= 0.5%", _pct(g.chat_block_rate))
    _console.print(table)


__all__ = [
    "eval_classifier",
    "train_classifier",
]
