"""INT8 dynamic quantization of the linear layers and expert weights.

Dense linears become `Int8Linear`: per-output-channel int8 weights packed for the x86
``fbgemm`` kernel, activations quantized per call (``quantized::linear_dynamic``, the kernel
behind ``torch.ao.quantization.quantize_dynamic``, which is deprecated and warns in this torch).
Stacked experts become `Int8Experts`: int8 weights with per-row scales, dequantized for the
experts a batch actually uses. Embeddings, norms and the router stay float32 (the router's
top-k choice is sensitive to rounding). The tied LM head is quantized separately from the
embedding it shares weights with.
"""

from __future__ import annotations

import warnings
from typing import cast

import torch
from torch import Tensor, nn

from guardrails.generators.moe.model import MoEForCausalLM
from guardrails.generators.moe.routing import Experts


def _int8_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-row int8: (q int8, scale float32) with ``weight ≈ q * scale``."""
    scale = weight.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / 127.0
    q = torch.clamp(torch.round(weight / scale), -127, 127).to(torch.int8)
    return q, scale.to(torch.float32)


class Int8Linear(nn.Module):
    """A frozen linear layer running the fbgemm dynamic-int8 kernel."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        w = linear.weight.detach().to(torch.float32)
        scale = (w.abs().amax(dim=1).clamp(min=1e-8) / 127.0).to(torch.float64)
        zero = torch.zeros(w.shape[0], dtype=torch.long)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.float32)
        with warnings.catch_warnings():
            # quantized tensor creation warns that it is deprecated; the packed kernel is
            # still the only int8 GEMM path on CPU in this torch release
            warnings.simplefilter("ignore", UserWarning)
            qw = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(qw, bias)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        y = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]), self._packed, True)
        return cast(Tensor, y).view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int8Experts(Experts):
    """Stacked experts with int8 weights and per-row float scales."""

    def __init__(self, experts: Experts) -> None:
        nn.Module.__init__(self)
        self.num_experts = experts.num_experts
        gu_q, gu_s = _int8_rows(experts.gate_up_proj.detach().to(torch.float32))
        dn_q, dn_s = _int8_rows(experts.down_proj.detach().to(torch.float32))
        self.register_buffer("gate_up_q", gu_q)
        self.register_buffer("gate_up_scale", gu_s)
        self.register_buffer("down_q", dn_q)
        self.register_buffer("down_scale", dn_s)

    def select_weights(self, experts: Tensor | None) -> tuple[Tensor, Tensor]:
        """Dequantize only the experts asked for (the int8 rows are gathered first)."""
        gu_q, gu_s = cast(Tensor, self.gate_up_q), cast(Tensor, self.gate_up_scale)
        dn_q, dn_s = cast(Tensor, self.down_q), cast(Tensor, self.down_scale)
        if experts is not None:
            gu_q, gu_s = gu_q.index_select(0, experts), gu_s.index_select(0, experts)
            dn_q, dn_s = dn_q.index_select(0, experts), dn_s.index_select(0, experts)
        return gu_q.to(torch.float32) * gu_s, dn_q.to(torch.float32) * dn_s


def quantize_model(model: MoEForCausalLM) -> MoEForCausalLM:
    """Replace linears and experts in place with INT8 versions; returns the model (eval)."""
    model.eval()
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and not child_name.startswith("shared_expert_gate"):
                setattr(parent, child_name, Int8Linear(child))
            elif isinstance(child, Experts) and not isinstance(child, Int8Experts):
                setattr(parent, child_name, Int8Experts(child))
    return model


def is_quantized(model: nn.Module) -> bool:
    """Whether `quantize_model` has been applied."""
    return any(isinstance(m, Int8Linear | Int8Experts) for m in model.modules())
