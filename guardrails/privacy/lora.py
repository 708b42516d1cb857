"""Low-rank adapters (LoRA, Hu et al. 2021) for named linear projections of any module.

`add_lora` wraps each target ``nn.Linear`` in `LoRALinear` and freezes everything else, so
only the adapters train. The adapters are two plain ``nn.Linear`` layers, which Opacus clips
per sample with either clipping mode. Importing this module imports torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from guardrails.privacy.errors import PrivacyError

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) · B(A(x))``; ``B`` starts at zero, so training starts at base."""

    def __init__(self, base: nn.Linear, *, r: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.lora_a = nn.Linear(base.in_features, r, bias=False)
        self.lora_b = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)
        self.scale = alpha / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x) + self.lora_b(self.lora_a(x)) * self.scale
        return out


def add_lora(model: nn.Module, *, targets: Sequence[str], r: int, alpha: float) -> list[str]:
    """Wrap every ``nn.Linear`` whose attribute name is in ``targets``; returns their paths.

    Raises:
        PrivacyError: ``r`` < 1, or no module matched ``targets``.
    """
    if r < 1:
        raise PrivacyError(f"LoRA rank must be at least 1, got {r}")
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped: list[str] = []
    for path, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, r=r, alpha=alpha))
                wrapped.append(f"{path}.{name}" if path else name)
    if not wrapped:
        raise PrivacyError(f"no nn.Linear named {list(targets)} in the model")
    return wrapped


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapters' weights."""
    return {
        k: v.detach().clone().contiguous()
        for k, v in model.state_dict().items()
        if ".lora_a." in k or ".lora_b." in k
    }


def save_adapter(model: nn.Module, out_dir: Path, config: dict[str, Any]) -> Path:
    """Write ``adapter.safetensors`` and ``adapter_config.json`` (``config`` + base info)."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ADAPTER_FILE
    save_file(adapter_state(model), str(path))
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def load_adapter(model: nn.Module, adapter_dir: Path) -> nn.Module:
    """Add the adapters described in ``adapter_dir`` to ``model`` and load their weights."""
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    add_lora(model, targets=config["targets"], r=int(config["r"]), alpha=float(config["alpha"]))
    missing, unexpected = model.load_state_dict(
        load_file(str(adapter_dir / ADAPTER_FILE)), strict=False
    )
    if unexpected or any(".lora_" in k for k in missing):
        raise PrivacyError(
            f"{adapter_dir}: adapter does not fit the model ({unexpected or missing})"
        )
    return model


__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_FILE",
    "LoRALinear",
    "adapter_state",
    "add_lora",
    "load_adapter",
    "save_adapter",
]
