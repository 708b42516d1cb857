"""``guardrails train generator``: train the bundled MoE generator (tokenizer + model).

With ``--dp`` it fine-tunes LoRA adapters of a trained generator on private ``--data`` with
DP-SGD instead (`guardrails.cli.privacy_commands.train_generator`, same privacy options as
``guardrails train classifier --dp``). torch is imported inside the command so
``guardrails --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from guardrails.cli import privacy_commands as DP  # noqa: N812  (the shared --dp options)
from guardrails.cli.app import train_app
from guardrails.cli.common import AuditOption, fail, out


@train_app.command("generator")
def train_generator(
    corpus: Annotated[
        Path | None,
        typer.Option(
            "--corpus",
            help="A .txt file or a directory of .txt files (default: the Python documentation "
            "shipped with CPython: pydoc topics and stdlib docstrings, PSF licence).",
        ),
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Checkpoint directory to write.")] = Path(
        "moe-checkpoint"
    ),
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 1600,
    max_minutes: Annotated[
        float | None,
        typer.Option(min=0.1, help="Stop after this long (the LR schedule follows the budget)."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Default 8 (64 with --dp).")] = None,
    seq_len: Annotated[int | None, typer.Option(min=8, help="Default 128 (64 with --dp).")] = None,
    lr: DP.LrOption = None,
    vocab_size: Annotated[int, typer.Option(min=260, help="BPE vocabulary size.")] = 4096,
    hidden_size: Annotated[int, typer.Option(min=8)] = 192,
    layers: Annotated[int, typer.Option(min=1)] = 4,
    heads: Annotated[int, typer.Option(min=1)] = 6,
    kv_heads: Annotated[int, typer.Option(min=1)] = 2,
    experts: Annotated[int, typer.Option(min=1, help="Routed experts per layer.")] = 8,
    top_k: Annotated[int, typer.Option(min=1, help="Experts chosen per token.")] = 2,
    expert_size: Annotated[int, typer.Option(min=1, help="Width of one routed expert.")] = 128,
    shared_size: Annotated[int, typer.Option(min=0, help="Shared-expert width (0: none).")] = 128,
    eval_every: Annotated[int, typer.Option(min=0)] = 400,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    plots: Annotated[bool, typer.Option(help="Write loss_curve.png and expert_load.png.")] = True,
    dp: Annotated[
        bool,
        typer.Option(
            "--dp", help="DP-SGD LoRA fine-tune of --base on private --data (not pretraining)."
        ),
    ] = False,
    data: Annotated[
        Path | None, typer.Option("--data", help="With --dp: private text or JSONL records.")
    ] = None,
    heldout: Annotated[
        Path | None, typer.Option("--heldout", help="With --dp: PUBLIC text for perplexity.")
    ] = None,
    base: Annotated[
        Path | None, typer.Option("--base", help="With --dp: base checkpoint (default bundled).")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="With --dp: epochs.")] = 3,
    epsilon: DP.EpsilonOption = 8.0,
    delta: DP.DeltaOption = None,
    max_grad_norm: DP.NormOption = 1.0,
    accountant: DP.AccountantOption = "rdp",
    clipping: DP.ClippingOption = "standard",
    insecure_fixed_seed: DP.FixedSeedOption = None,
    audit: AuditOption = None,
    no_audit: DP.NoAuditOption = False,
) -> None:
    """Train a byte-level BPE tokenizer and a small MoE decoder; write checkpoint, plots, card.

    With ``--dp``: `guardrails privacy train-generator` (``--seed`` does not apply).
    """
    if dp:
        if data is None:
            fail("--dp needs --data FILE (the private training records)")
        DP.train_generator(
            data=data,
            out_dir=out_dir if out_dir != Path("moe-checkpoint") else Path("generator-lora"),
            heldout=heldout,
            base=base,
            lora_r=16,
            lora_alpha=32.0,
            target="q_proj,v_proj",
            seq_len=seq_len or 64,
            epsilon=epsilon,
            delta=delta,
            max_grad_norm=max_grad_norm,
            epochs=epochs,
            batch_size=batch_size or 64,
            physical_batch_size=32,
            optimizer=None,
            lr=lr,
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
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from guardrails.generators.moe import load_pretrained
    from guardrails.generators.moe.errors import MoEError
    from guardrails.generators.moe.training import TrainSettings, train, write_model_card

    batch_size = batch_size or 8
    seq_len = seq_len or 128
    if hidden_size % heads or heads % kv_heads:
        fail(f"--hidden-size {hidden_size} must divide by --heads {heads}, and heads by kv-heads")
    if top_k > experts:
        fail(f"--top-k {top_k} exceeds --experts {experts}")
    if corpus is not None and not corpus.exists():
        fail(f"--corpus {corpus}: no such file or directory")
    settings = TrainSettings(
        steps=steps,
        batch_size=batch_size,
        seq_len=seq_len,
        lr=lr if lr is not None else 2e-3,
        warmup=min(100, max(1, steps // 10)),
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        num_experts=experts,
        top_k=top_k,
        moe_intermediate_size=expert_size,
        shared_intermediate_size=shared_size,
        max_position_embeddings=max(512, seq_len),
        eval_every=eval_every,
        seed=seed,
        threads=threads,
        max_seconds=None if max_minutes is None else max_minutes * 60,
    )
    with Progress(
        TextColumn("[bold]training[/]"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total}  loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        console=out,
        transient=False,
    ) as bar:
        task = bar.add_task("train", total=steps, loss=float("nan"))

        def progress(step: int, loss: float, _lr: float) -> None:
            bar.update(task, completed=step, loss=loss)

        try:
            report = train(
                out_dir, settings=settings, corpus=corpus, progress=progress, plots=plots
            )
        except (ValueError, MoEError) as exc:
            fail(str(exc))
    gen = load_pretrained(out_dir)
    sample = gen.generate("The ", temperature=0.7, top_p=0.95, max_tokens=60, seed=0)
    write_model_card(report, settings, out_dir, sample="The " + sample)
    out.print(
        f"wrote {out_dir}: {report.parameters:,} parameters ({report.active_parameters:,} "
        f"active), {report.steps} steps in {report.seconds / 60:.1f} min, held-out perplexity "
        f"{report.heldout_perplexity:.2f}"
    )


__all__ = [
    "train_generator",
]
