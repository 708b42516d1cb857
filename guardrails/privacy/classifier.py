"""DP-SGD training of the fast (byte n-gram) safety classifier.

The model is `DPByteNgramNet`: the shipped `ByteNgramNet` ("mean" pooling) with its table in
an ``nn.EmbeddingBag`` (a layer Opacus can clip per sample) instead of the shipped model's
sparse-gradient parameter (which Opacus cannot). Its weights are saved under the shipped
model's names, so `guardrails.classifier.load_classifier` serves the result unchanged.

One record is one training sample: each example contributes only its first window (the
shipped trainer uses up to four), so the accountant's per-sample guarantee is a per-record
one. Thresholds are then calibrated on ``val`` like the shipped trainer does; ``val`` is
treated as public data (it is not covered by the ε of the report). Importing this module
imports torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812  (the conventional torch alias)
from torch import nn
from torch.utils.data import TensorDataset

from guardrails.classifier.categories import CATEGORIES
from guardrails.classifier.dataset import Example, label_matrix
from guardrails.classifier.features import batch_ngram_ids, windows
from guardrails.privacy.engine import DPSettings, FitResult, StepProgress, fit

PAD = -1


@dataclasses.dataclass(frozen=True, slots=True)
class DPClassifierConfig:
    """Model shape for private training; a smaller table than the shipped 2**18 rows, since
    DP noise is added to every row of it at every step."""

    buckets: int = 2**12
    dim: int = 32
    hidden: int = 64
    dropout: float = 0.1
    window_chars: int = 512
    stride_chars: int = 384


class DPByteNgramNet(nn.Module):
    """`ByteNgramNet` (mean pooling) over an ``nn.EmbeddingBag``; input is padded ids [B, L]."""

    def __init__(self, *, buckets: int, dim: int, hidden: int, n_out: int, dropout: float) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(buckets, dim, mode="mean")
        nn.init.normal_(self.bag.weight, 0.0, 0.05)
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_out),
        )

    def forward(self, padded: torch.Tensor) -> torch.Tensor:
        # Flat ids + offsets (not a 2-D input) because Opacus' samplers read bags that way.
        keep = padded >= 0
        lengths = keep.sum(1)
        offsets = torch.zeros_like(lengths)
        if len(lengths) > 1:
            offsets[1:] = torch.cumsum(lengths[:-1], 0)
        pooled = self.bag(padded[keep].long(), offsets)
        out: torch.Tensor = self.mlp(pooled)
        return out

    def shipped_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under `ByteNgramNet`'s names (``embedding`` for the table)."""
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        state["embedding"] = state.pop("bag.weight")
        return state


def encode(
    examples: Sequence[Example], cfg: DPClassifierConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """(padded ids [n, L] int32 with -1 padding, labels [n, C]) from each first window."""
    texts = [windows(ex.text, size=cfg.window_chars, stride=cfg.stride_chars)[0] for ex in examples]
    ids, offsets = batch_ngram_ids(texts, buckets=cfg.buckets)
    ends = np.append(offsets[1:], len(ids))
    lengths = ends - offsets
    padded = np.full((len(texts), int(lengths.max())), PAD, dtype=np.int32)
    for row, (a, b) in enumerate(zip(offsets, ends, strict=True)):
        padded[row, : b - a] = ids[a:b]
    y: npt.NDArray[np.float32] = label_matrix(examples)
    return torch.from_numpy(padded), torch.from_numpy(y)


def _pos_weight(y: torch.Tensor) -> torch.Tensor:
    # public only in spirit: class balance of the training labels. Computing it from the
    # private labels would spend privacy, so a fixed weight is used instead.
    return torch.full((y.shape[1],), 2.0)


def per_example_bce(pos_weight: torch.Tensor) -> Any:
    """[B] losses: BCE with logits, mean over categories."""

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        per = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight, reduction="none")
        return per.mean(1)

    return loss


def train_private_classifier(
    train: Sequence[Example],
    *,
    settings: DPSettings,
    cfg: DPClassifierConfig = DPClassifierConfig(),
    progress: StepProgress | None = None,
) -> tuple[DPByteNgramNet, FitResult]:
    """Train `DPByteNgramNet` on ``train`` with DP-SGD (or without, ``settings.dp=False``)."""
    torch.manual_seed(settings.seed)
    x, y = encode(train, cfg)
    net = DPByteNgramNet(
        buckets=cfg.buckets,
        dim=cfg.dim,
        hidden=cfg.hidden,
        n_out=len(CATEGORIES),
        dropout=cfg.dropout,
    )
    kwargs: dict[str, Any] = {} if progress is None else {"progress": progress}
    trained, result = fit(
        net, TensorDataset(x, y), per_example_bce(_pos_weight(y)), settings, **kwargs
    )
    assert isinstance(trained, DPByteNgramNet)
    return trained, result


def example_losses(
    net: DPByteNgramNet, examples: Sequence[Example], cfg: DPClassifierConfig
) -> npt.NDArray[np.float64]:
    """Per-example training loss (the membership-inference attacker's signal)."""
    x, y = encode(examples, cfg)
    fn = per_example_bce(torch.ones(y.shape[1]))
    net.train(False)
    with torch.inference_mode():
        out = torch.cat([fn(net(x[i : i + 256]), y[i : i + 256]) for i in range(0, len(x), 256)])
    return out.double().numpy()


def save_classifier(
    net: DPByteNgramNet,
    out_dir: Path,
    cfg: DPClassifierConfig,
    *,
    val: Sequence[Example],
    test: Sequence[Example] | None,
    seed: int,
    n_train: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Save as a `load_classifier` directory, calibrate on ``val``; returns config metrics."""
    from guardrails.classifier.runtime import read_config, write_model_dir
    from guardrails.classifier.training import _calibrate_and_evaluate

    config: dict[str, Any] = {
        "format": 1,
        "kind": "byte_ngram",
        "categories": list(CATEGORIES),
        "thresholds": {c: 0.5 for c in CATEGORIES},
        "window_chars": cfg.window_chars,
        "stride_chars": cfg.stride_chars,
        "hparams": {**dataclasses.asdict(cfg), "pool": "mean"},
        "seed": seed,
        "train_examples": n_train,
        "train_windows": n_train,
        **extra,
    }
    write_model_dir(out_dir, net.shipped_state_dict(), config)
    import time

    _calibrate_and_evaluate(out_dir, val, test, time.perf_counter(), 1, lambda *_: None)
    metrics: dict[str, Any] = read_config(out_dir).get("metrics", {})
    return metrics
