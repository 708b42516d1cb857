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
