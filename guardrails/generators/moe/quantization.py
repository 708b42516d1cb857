"""INT8 dynamic quantization of the linear layers and expert weights.

Dense linears become `Int8Linear`: per-output-channel int8 weights packed for the x86
``fbgemm`` kernel, activations quantized per call (``quantized::linear_dynamic``, the kernel
behind ``torch.ao.quantization.quantize_dynamic``, which is deprecated and warns in this torch).
Stacked experts become `Int8Experts`: the same kernel with one packed weight per expert, so
no forward ever materialises float weights. Embeddings, norms and the router stay float32
(the router's top-k choice is sensitive to rounding). The tied LM head is quantized
separately from the embedding it shares weights with.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional torch alias)
from torch import Tensor, nn

from guardrails.generators.moe.model import MoEForCausalLM
from guardrails.generators.moe.routing import Experts


def _prepack(weight: Tensor, bias: Tensor | None = None) -> Any:
    """Per-output-channel symmetric int8 weights packed for ``quantized::linear_dynamic``."""
    w = weight.detach().to(torch.float32).contiguous()
    scale = (w.abs().amax(dim=1).clamp(min=1e-8) / 127.0).to(torch.float64)
    zero = torch.zeros(w.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        # quantized tensor creation warns that it is deprecated; the packed kernel is
        # still the only int8 GEMM path on CPU in this torch release
        warnings.simplefilter("ignore", UserWarning)
        qw = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(qw, bias)


def _has_vnni() -> bool:
    """Whether the CPU has VNNI (int8 dot products accumulated in int32), read on Linux."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return " avx512_vnni" in flags or " avx_vnni" in flags


# Without VNNI, fbgemm's AVX2 kernel sums pairs of u8·s8 products in int16, which can
# saturate: activations then keep 7 bits (``reduce_range``). With VNNI all 8 bits are kept,
# which measurably lowers the error (see bench/results/moe.md).
_REDUCE_RANGE = not _has_vnni()


def _int8_linear(x: Tensor, packed: Any) -> Tensor:
    """``x`` [M, K] through a packed int8 weight (activations quantized per call)."""
    return cast(Tensor, torch.ops.quantized.linear_dynamic(x, packed, _REDUCE_RANGE))


class Int8Linear(nn.Module):
    """A frozen linear layer running the fbgemm dynamic-int8 kernel."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        bias = None if linear.bias is None else linear.bias.detach().to(torch.float32)
        self._packed = _prepack(linear.weight, bias)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        y = _int8_linear(x.reshape(-1, shape[-1]), self._packed)
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int8Experts(Experts):
    """Stacked experts as packed int8 weights, one pair per expert (never dequantized)."""

    def __init__(self, experts: Experts) -> None:
        nn.Module.__init__(self)
        self.num_experts = experts.num_experts
        self._gate_up = [_prepack(w) for w in experts.gate_up_proj.detach()]
        self._down = [_prepack(w) for w in experts.down_proj.detach()]

    def expert_forward(self, expert: int, x: Tensor) -> Tensor:
        """SwiGLU of one expert on rows ``x`` [M, H] with the int8 kernels."""
        gate, up = _int8_linear(x, self._gate_up[expert]).chunk(2, dim=-1)
        return _int8_linear(F.silu(gate) * up, self._down[expert])

    def grouped_forward(self, xs: Tensor, counts: Tensor) -> Tensor:
        """One int8 matmul pair per used expert on its contiguous slice of ``xs``."""
        return self.per_expert_forward(xs, counts)

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, int8"


def quantize_model(model: MoEForCausalLM) -> MoEForCausalLM:
    """Replace linears and experts in place with INT8 versions; returns the model (eval)."""
    model.eval()
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and not child_name.startswith("shared_expert_gate"):
                setattr(parent, child_name, Int8Linear(child))
            elif isinstance(child, Experts) and not isinstance(child, Int8Experts):
                setattr(parent, child_name, Int8Experts(child))
    # what stays float (embeddings, norms, router) runs in float32, as the int8 kernels do
    return model.to(torch.float32)


def is_quantized(model: nn.Module) -> bool:
    """Whether `quantize_model` has been applied."""
    return any(isinstance(m, Int8Linear | Int8Experts) for m in model.modules())


__all__ = [
    "Int8Experts",
    "Int8Linear",
    "is_quantized",
    "quantize_model",
]
