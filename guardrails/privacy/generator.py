"""DP-SGD fine-tuning of the MoE generator through LoRA adapters on attention projections.

Each record (see `guardrails.privacy.data.read_texts`) becomes one sample: its tokens,
cut to ``seq_len + 1`` and right-padded; padded targets are ignored, so one sample's loss is
the mean next-token loss over its own tokens. Only the adapters train. The MoE router's
load-balancing loss is left out: it mixes the records of a batch, which per-sample clipping
cannot bound (routing itself is dropless, so records do not interact). Importing this
module imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812  (the conventional torch alias)
from torch import nn
from torch.utils.data import TensorDataset

from guardrails.privacy.engine import DPSettings, FitResult, StepProgress, fit, random_source
from guardrails.privacy.lora import add_lora

IGNORE = -100


@dataclass(frozen=True, slots=True)
class LoRAConfig:
    """Adapter shape."""

    r: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    seq_len: int = 64


def encode_records(
    records: Sequence[str], tokenizer: Any, *, seq_len: int, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs [n, seq_len], targets [n, seq_len] with ``IGNORE`` past each record's end)."""
    eos = tokenizer.eos_token_id
    inputs = torch.full((len(records), seq_len), pad_id, dtype=torch.long)
    targets = torch.full((len(records), seq_len), IGNORE, dtype=torch.long)
    for i, text in enumerate(records):
        ids = ([eos] if eos is not None else []) + list(tokenizer.encode(text))
        if eos is not None:
            ids.append(eos)
        ids = ids[: seq_len + 1]
        t = torch.tensor(ids, dtype=torch.long)
        inputs[i, : len(ids) - 1] = t[:-1]
        targets[i, : len(ids) - 1] = t[1:]
    return inputs, targets


def per_example_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B] mean next-token loss of each sequence over its non-ignored targets."""
    per = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(targets.shape)
    counts = (targets != IGNORE).sum(1).clamp(min=1)
    return per.sum(1) / counts


class _LogitsOnly(nn.Module):
    """``model(input_ids)`` with no keyword arguments, as the Opacus wrapper calls it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(input_ids)
        return out


def train_lora(
    model: nn.Module,
    records: Sequence[str],
    tokenizer: Any,
    *,
    settings: DPSettings,
    lora: LoRAConfig = LoRAConfig(),
    progress: StepProgress | None = None,
) -> tuple[nn.Module, FitResult]:
    """Add adapters to ``model`` (in place) and train them on ``records``."""
    source = random_source(settings)  # seeds the adapters' initialisation too
    add_lora(model, targets=lora.targets, r=lora.r, alpha=lora.alpha)
    x, y = encode_records(records, tokenizer, seq_len=lora.seq_len)
    kwargs: dict[str, Any] = {} if progress is None else {"progress": progress}
    trained, result = fit(
        _LogitsOnly(model), TensorDataset(x, y), per_example_nll, settings, rng=source, **kwargs
    )
    # ModuleValidator.fix may return a copy; the trained weights live in what fit returns
    out: nn.Module = trained.model if isinstance(trained, _LogitsOnly) else trained
    out.train(False)
    return out, result


def perplexity(model: nn.Module, records: Sequence[str], tokenizer: Any, *, seq_len: int) -> float:
    """exp(mean next-token loss) over ``records``, token-weighted."""
    x, y = encode_records(records, tokenizer, seq_len=seq_len)
    model.train(False)
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(x), 64):
            logits = model(x[i : i + 64])
            t = y[i : i + 64]
            total += float(
                F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    t.reshape(-1),
                    ignore_index=IGNORE,
                    reduction="sum",
                )
            )
            count += int((t != IGNORE).sum())
    return math.exp(total / max(count, 1))


__all__ = [
    "IGNORE",
    "LoRAConfig",
    "encode_records",
    "per_example_nll",
    "perplexity",
    "train_lora",
]
