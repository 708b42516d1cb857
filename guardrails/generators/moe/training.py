"""Training the bundled generator: corpus, tokenizer, model, loop, plots and model card.

The default corpus is the Python documentation text that CPython ships in
``pydoc_data/topics.py`` (PSF licence), so training needs nothing from the network.
"""

from __future__ import annotations

import ast
import json
import math
import sysconfig
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from guardrails.generators.moe.config import MoEConfig
from guardrails.generators.moe.loading import TOKENIZER_FILE, save_checkpoint
from guardrails.generators.moe.model import MoEForCausalLM
from guardrails.generators.moe.routing import MoEBlock
from guardrails.generators.moe.tokenizer import EOS_TOKEN, BPETokenizer, train_bpe

DEFAULT_CORPUS_NAME = (
    "CPython 3.11 standard library text: pydoc_data/topics.py and the docstrings of the "
    "stdlib modules; PSF License Version 2"
)
_SKIP_DIRS = frozenset({"test", "tests", "idlelib", "lib2to3", "site-packages", "turtledemo"})


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """Knobs of one training run (model shape, optimisation, data split)."""

    steps: int = 3000
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.05
    vocab_size: int = 4096
    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 6
    num_kv_heads: int = 2
    num_experts: int = 8
    top_k: int = 2
    moe_intermediate_size: int = 128
    shared_intermediate_size: int = 128
    max_position_embeddings: int = 512
    aux_loss_coef: float = 0.01
    router: Literal["softmax", "sigmoid"] = "softmax"
    balance: Literal["aux_loss", "bias"] = "aux_loss"
    bias_update_rate: float = 1e-3
    holdout_every: int = 20
    eval_every: int = 250
    seed: int = 0
    threads: int = 2
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.router not in ("softmax", "sigmoid"):
            raise ValueError(f"router must be 'softmax' or 'sigmoid', got {self.router!r}")
        if self.balance not in ("aux_loss", "bias"):
            raise ValueError(f"balance must be 'aux_loss' or 'bias', got {self.balance!r}")
        if self.balance == "bias" and self.router != "sigmoid":
            raise ValueError("balance='bias' (DeepSeek-V3's bias update) needs router='sigmoid'")
        if not self.bias_update_rate > 0:
            raise ValueError(f"bias_update_rate must be > 0, got {self.bias_update_rate!r}")

    def model_config(self, vocab_size: int, eos_token_id: int | None) -> MoEConfig:
        """The bundled architecture: GQA attention, top-k fine-grained experts + shared.

        ``router="sigmoid"`` gives DeepSeek-V3's sigmoid gating; with ``balance="bias"`` the
        load is balanced by the per-expert bias update instead of the auxiliary loss (whose
        coefficient is then 0; it is still computed, for the log).
        """
        return MoEConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.hidden_size // self.num_heads,
            intermediate_size=self.moe_intermediate_size * (self.top_k + 1),
            moe_intermediate_size=self.moe_intermediate_size,
            num_experts=self.num_experts,
            num_experts_per_tok=self.top_k,
            shared_intermediate_size=self.shared_intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=True,
            router_score=self.router,
            aux_loss_coef=0.0 if self.balance == "bias" else self.aux_loss_coef,
            eos_token_id=eos_token_id,
        )


@dataclass(slots=True)
class TrainReport:
    """What a run measured; written to ``training_log.json`` beside the checkpoint."""

    corpus: str
    train_tokens: int
    heldout_tokens: int
    parameters: int
    active_parameters: int
    steps: int
    seconds: float
    heldout_loss: float
    heldout_perplexity: float
    losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)
    expert_load: list[list[float]] = field(default_factory=list)
    expert_load_cv: list[float] = field(default_factory=list)


def default_corpus() -> list[str]:
    """Python documentation text that ships with CPython, in a stable order.

    The pydoc topic pages (one document each), then every module, class and function
    docstring of at least 200 characters in the standard library's own sources.
    """
    from pydoc_data.topics import topics  # CPython ships this; PSF licence

    docs = [topics[key].strip() for key in sorted(topics)]
    root = Path(sysconfig.get_paths()["stdlib"])
    for file in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if _SKIP_DIRS.intersection(file.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 200:
                    docs.append(doc)
    return docs


def read_corpus(path: Path) -> list[str]:
    """A text file is one document; a directory contributes each ``*.txt`` file in it."""
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    docs = [f.read_text(encoding="utf-8").strip() for f in files]
    docs = [d for d in docs if d]
    if not docs:
        raise ValueError(f"{path}: no text found")
    return docs


def split_tokens(
    docs: list[str], tok: BPETokenizer, *, block: int, holdout_every: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode all documents into one stream; every ``holdout_every``-th block is held out."""
    eos = tok.eos_token_id
    stream: list[int] = []
    for d in docs:
        stream.extend(tok.encode(d))
        if eos is not None:
            stream.append(eos)
    data = torch.tensor(stream, dtype=torch.long)
    blocks = data[: len(data) // block * block].view(-1, block)
    held = torch.arange(blocks.shape[0]) % holdout_every == holdout_every - 1
    return blocks[~held].reshape(-1), blocks[held].reshape(-1)


def _batches(data: torch.Tensor, settings: TrainSettings, rng: torch.Generator) -> torch.Tensor:
    starts = torch.randint(
        0, len(data) - settings.seq_len - 1, (settings.batch_size,), generator=rng
    )
    return torch.stack([data[s : s + settings.seq_len + 1] for s in starts.tolist()])


def evaluate(model: MoEForCausalLM, data: torch.Tensor, *, seq_len: int) -> float:
    """Mean next-token cross-entropy over ``data`` in non-overlapping windows."""
    model.eval()
    n = (len(data) - 1) // seq_len
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, n, 16):
            rows = [data[j * seq_len : j * seq_len + seq_len + 1] for j in range(i, min(n, i + 16))]
            batch = torch.stack(rows)
            logits = model(batch[:, :-1])
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
            )
            total += float(loss)
            count += batch[:, 1:].numel()
    model.train()
    return total / max(count, 1)


def _lr_at(step: int, settings: TrainSettings, elapsed: float = 0.0) -> float:
    """Linear warmup, then cosine decay to 10% over steps or over the time budget."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    if settings.max_seconds:
        progress = max(progress, elapsed / settings.max_seconds)
    progress = min(progress, 1.0)
    return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    out: Path,
    *,
    settings: TrainSettings,
    corpus: Path | None = None,
    progress: Callable[[int, float, float], None] | None = None,
    plots: bool = True,
) -> TrainReport:
    """Train tokenizer and model, write the checkpoint directory ``out``, return the report.

    ``progress(step, loss, lr)`` is called after every step.
    """
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    docs = default_corpus() if corpus is None else read_corpus(corpus)
    corpus_name = DEFAULT_CORPUS_NAME if corpus is None else str(corpus)
    tok = train_bpe(docs, vocab_size=settings.vocab_size)
    train_data, held_data = split_tokens(
        docs, tok, block=settings.seq_len * 4, holdout_every=settings.holdout_every
    )
    if len(train_data) <= settings.seq_len + 1 or len(held_data) <= settings.seq_len + 1:
        raise ValueError(f"corpus too small for seq_len={settings.seq_len}")
    cfg = settings.model_config(tok.vocab_size, tok.eos_token_id)
    model = MoEForCausalLM(cfg)
    _init_weights(model)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "norm" in n]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": settings.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=settings.lr,
        betas=(0.9, 0.95),
    )
    rng = torch.Generator().manual_seed(settings.seed)
    report = TrainReport(
        corpus=corpus_name,
        train_tokens=len(train_data),
        heldout_tokens=len(held_data),
        parameters=model.num_parameters(),
        active_parameters=model.num_parameters(active=True),
        steps=settings.steps,
        seconds=0.0,
        heldout_loss=float("nan"),
        heldout_perplexity=float("nan"),
    )
    load = [torch.zeros(cfg.num_experts) for _ in model.expert_counts()] or []
    started = time.perf_counter()
    for step in range(settings.steps):
        elapsed = time.perf_counter() - started
        if settings.max_seconds and elapsed >= settings.max_seconds:
            break  # the time budget ran out first; the schedule has already decayed
        lr = _lr_at(step, settings, elapsed)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = _batches(train_data, settings, rng)
        ce, aux = model.loss(batch[:, :-1], batch[:, 1:])
        loss = ce + cfg.aux_loss_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if settings.balance == "bias":
            with torch.no_grad():
                for block in model.modules():
                    if isinstance(block, MoEBlock):
                        block.update_balance_bias(settings.bias_update_rate)
        report.losses.append(float(ce.detach()))
        counts = model.expert_counts()
        if not load:
            load = [torch.zeros(cfg.num_experts) for _ in counts]
        if step >= settings.steps // 2 or (
            settings.max_seconds and elapsed >= settings.max_seconds / 2
        ):
            for acc, c in zip(load, counts, strict=True):
                acc += c.to(torch.float32)
        if settings.eval_every and (step + 1) % settings.eval_every == 0:
            report.evals.append((step + 1, evaluate(model, held_data, seq_len=settings.seq_len)))
        if progress is not None:
            progress(step + 1, report.losses[-1], lr)
    report.seconds = time.perf_counter() - started
    report.steps = len(report.losses)
    report.heldout_loss = evaluate(model, held_data, seq_len=settings.seq_len)
    report.heldout_perplexity = math.exp(report.heldout_loss)
    report.expert_load = [(acc / acc.sum().clamp(min=1)).tolist() for acc in load]
    report.expert_load_cv = [load_cv(acc) for acc in load]
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out)
    tok.tokenizer.save(str(out / TOKENIZER_FILE))
    log = asdict(report) | {"settings": asdict(settings)}
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
    if plots:
        write_plots(report, out)
    return report


def load_cv(counts: torch.Tensor) -> float:
    """Coefficient of variation of per-expert load (0 is perfectly balanced)."""
    c = counts.to(torch.float64)
    mean = c.mean()
    return float(c.std(correction=0) / mean) if mean > 0 else 0.0


def _init_weights(model: MoEForCausalLM) -> None:
    """GPT-2 style init: N(0, 0.02), output projections scaled down by depth."""
    depth_scale = 1 / math.sqrt(2 * model.config.num_layers)
    for name, p in model.named_parameters():
        if p.ndim < 2 or "norm" in name:
            continue
        std = 0.02 * (depth_scale if name.endswith(("o_proj.weight", "down_proj")) else 1.0)
        if name.endswith("down_proj.weight"):
            std = 0.02 * depth_scale
        torch.nn.init.normal_(p, std=std)


def write_plots(report: TrainReport, out: Path) -> list[Path]:
    """``loss_curve.png`` and ``expert_load.png`` (needs matplotlib; skipped without it)."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    window = 25
    smooth = [
        sum(report.losses[max(0, i - window) : i + 1])
        / len(report.losses[max(0, i - window) : i + 1])
        for i in range(len(report.losses))
    ]
    ax.plot(range(1, len(smooth) + 1), smooth, label="train (smoothed)", linewidth=1)
    if report.evals:
        xs, ys = zip(*report.evals, strict=True)
        ax.plot(xs, ys, "o-", label="held-out", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curve.png")
    plt.close(fig)
    written.append(out / "loss_curve.png")
    if report.expert_load:
        fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
        n_layers, n_experts = len(report.expert_load), len(report.expert_load[0])
        width = 0.8 / n_layers
        for li, fracs in enumerate(report.expert_load):
            ax.bar([e + li * width for e in range(n_experts)], fracs, width, label=f"layer {li}")
        ax.axhline(1 / n_experts, color="black", linewidth=0.8, linestyle="--", label="uniform")
        ax.set_xlabel("routed expert")
        ax.set_ylabel("share of assignments")
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "expert_load.png")
        plt.close(fig)
        written.append(out / "expert_load.png")
    return written


def _command_line(settings: TrainSettings) -> str:
    """The ``guardrails train generator`` call that reproduces ``settings``."""
    flags = [
        f"--steps {settings.steps}",
        f"--batch-size {settings.batch_size}",
        f"--seq-len {settings.seq_len}",
        f"--lr {settings.lr:g}",
        f"--vocab-size {settings.vocab_size}",
        f"--hidden-size {settings.hidden_size}",
        f"--layers {settings.num_layers}",
        f"--heads {settings.num_heads}",
        f"--kv-heads {settings.num_kv_heads}",
        f"--experts {settings.num_experts}",
        f"--top-k {settings.top_k}",
        f"--expert-size {settings.moe_intermediate_size}",
        f"--shared-size {settings.shared_intermediate_size}",
        f"--threads {settings.threads}",
        f"--seed {settings.seed}",
    ]
    if settings.max_seconds:
        flags.append(f"--max-minutes {settings.max_seconds / 60:g}")
    return "guardrails train generator --out DIR " + " ".join(flags)


def _licence_lines(corpus: str) -> list[str]:
    if corpus != DEFAULT_CORPUS_NAME:
        return [
            f"Trained on `{corpus}`: the weights carry that text's licence terms; check them",
            "before distributing this checkpoint.",
        ]
    return [
        "The training text is Python documentation from CPython's standard library, under the",
        "PSF License Version 2 (Copyright © 2001 Python Software Foundation). The weights are",
        "distributed with this project under its own licence; keep the PSF notice with them.",
    ]


def write_model_card(
    report: TrainReport, settings: TrainSettings, out: Path, *, sample: str | None = None
) -> Path:
    """Write ``MODEL_CARD.md``: data source and licence, architecture, figures, limits."""
    size_mb = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 1e6
    lines = [
        "# guardrails-moe-pydoc",
        "",
        "A small DeepSeekMoE-style decoder that ships inside `guardrails` so the demo runs with",
        "nothing downloaded. It writes Python-documentation-like English; it knows nothing",
        "else and is not an assistant: use it to exercise the guard, not to answer questions.",
        "",
        "## Data",
        "",
        f"- Source: {report.corpus}.",
        "- Every 20th block of 512 tokens is held out for the perplexity below; the",
        "  tokenizer was trained on the whole text (held-out blocks included).",
        f"- Tokens: {report.train_tokens:,} for training, {report.heldout_tokens:,} held out.",
        "",
        "## Architecture",
        "",
        f"- {settings.num_layers} layers, width {settings.hidden_size}, "
        f"{settings.num_heads} query heads / {settings.num_kv_heads} KV heads (GQA), RoPE, "
        "RMSNorm.",
        f"- Every FFN is a mixture of {settings.num_experts} routed SwiGLU experts (width "
        f"{settings.moe_intermediate_size}), top-{settings.top_k} softmax routing, plus one "
        f"always-on shared expert (width {settings.shared_intermediate_size}); "
        f"load-balancing loss coefficient {settings.aux_loss_coef}.",
        f"- Byte-level BPE tokenizer, {settings.vocab_size} tokens, trained with `tokenizers`.",
        f"- Parameters: {report.parameters:,} total, {report.active_parameters:,} active per "
        "token; tied input/output embeddings; weights stored as float16 "
        f"({size_mb:.1f} MB for this directory).",
        "",
        "## Training",
        "",
        f"- `guardrails train generator`: {report.steps} steps of batch {settings.batch_size} x "
        f"{settings.seq_len} tokens, AdamW (lr {settings.lr}, cosine), seed {settings.seed}, "
        f"{settings.threads} CPU thread(s), {report.seconds / 60:.1f} minutes.",
        "- Command: `" + _command_line(settings) + "`.",
        f"- Held-out cross-entropy {report.heldout_loss:.3f} nats/token, perplexity "
        f"{report.heldout_perplexity:.1f}.",
        "- `loss_curve.png`: training and held-out loss; `expert_load.png`: share of routed",
        "  assignments per expert and layer over the second half of training.",
        "",
        "## Limits",
        "",
        "- Tiny and trained for minutes on one CPU core: fluent-looking but often wrong or",
        "  repetitive text; it may reproduce passages of the Python documentation verbatim.",
        f"- Context window of {settings.max_position_embeddings} tokens; English only.",
        "",
        "## Licence",
        "",
        *_licence_lines(report.corpus),
    ]
    if sample is not None:
        lines += ["", "## Sample", "", "```", sample.strip(), "```"]
    path = out / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


__all__ = [
    "DEFAULT_CORPUS_NAME",
    "EOS_TOKEN",
    "TrainReport",
    "TrainSettings",
    "default_corpus",
    "evaluate",
    "load_cv",
    "read_corpus",
    "split_tokens",
    "train",
    "write_model_card",
    "write_plots",
]
