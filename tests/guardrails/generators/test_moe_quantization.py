"""INT8 dynamic quantization."""

from __future__ import annotations

import torch

from guardrails.generators.moe import load_pretrained
from guardrails.generators.moe.loading import load_model
from guardrails.generators.moe.quantization import (
    Int8Experts,
    Int8Linear,
    is_quantized,
    quantize_model,
)


def test_quantized_logits_stay_close_to_fp32(hf_checkpoint):
    """INT8 logits differ from fp32 by a small fraction of their spread."""
    _, path = hf_checkpoint("deepseek_v3")
    fp32 = load_model(path)
    int8 = quantize_model(load_model(path))
    ids = torch.randint(0, 101, (2, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a, b = fp32(ids), int8(ids)
    assert is_quantized(int8)
    assert not is_quantized(fp32)
    assert (a - b).abs().max() < 0.05 * (a.max() - a.min())


def test_every_linear_and_expert_is_converted(tiny_checkpoint):
    """After quantize=True no float nn.Linear or float expert stack is left in the model."""
    gen = load_pretrained(tiny_checkpoint, quantize=True)
    kinds = {type(m) for m in gen.model.modules()}
    assert Int8Linear in kinds
    assert Int8Experts in kinds
    assert torch.nn.Linear not in kinds
    assert gen.generate("The guard", temperature=0.0, max_tokens=5) is not None


def test_int8_experts_hold_no_float_weights(tiny_checkpoint):
    """Quantized experts keep only packed int8 weights: nothing float to copy per forward."""
    gen = load_pretrained(tiny_checkpoint, quantize=True)
    experts = [m for m in gen.model.modules() if isinstance(m, Int8Experts)]
    assert experts
    for m in experts:
        assert list(m.parameters()) == []
        assert list(m.buffers()) == []


def test_int8_grouped_dispatch_stays_close_to_float_experts(tiny_checkpoint):
    """Sorted per-expert INT8 dispatch stays within a few % of the float experts' output."""
    from guardrails.generators.moe.routing import Experts

    fp = next(m for m in load_model(tiny_checkpoint).modules() if isinstance(m, Experts))
    q = Int8Experts(fp)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(9, fp.gate_up_proj.shape[-1], generator=g)
    idx = torch.stack([torch.randperm(fp.num_experts, generator=g)[:2] for _ in range(9)])
    w = torch.rand(9, 2, generator=g)
    with torch.no_grad():
        want, got = fp(x, idx, w), q(x, idx, w)
    assert (got - want).abs().max() < 0.05 * (want.max() - want.min())
