"""The EmbeddingBag norm sampler registered for ghost clipping, and LoRA adapters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from guardrails.privacy.engine import DPSettings, embedding_bag_norm_sample
from guardrails.privacy.errors import PrivacyError
from guardrails.privacy.lora import LoRALinear, add_lora


@pytest.mark.parametrize("mode", ["mean", "sum"])
def test_embedding_bag_norms_match_explicit_per_sample_gradients(mode: str) -> None:
    """The closed-form norms equal the norms of per-sample gradients computed one by one."""
    torch.manual_seed(0)
    bag = nn.EmbeddingBag(50, 4, mode=mode)
    index = torch.tensor([1, 2, 2, 7, 3, 3, 3, 9, 1, 1])
    offsets = torch.tensor([0, 4, 5])
    backprops = torch.randn(3, 4)
    norms = embedding_bag_norm_sample(bag, [index, offsets], backprops)[bag.weight]
    ends = [4, 5, 10]
    for i in range(3):
        bag.zero_grad()
        out = bag(index[offsets[i] : ends[i]], torch.tensor([0]))
        (out[0] * backprops[i]).sum().backward()
        assert bag.weight.grad is not None
        assert norms[i].item() == pytest.approx(bag.weight.grad.norm().item(), rel=1e-5)


def test_lora_starts_at_base_and_trains_only_adapters() -> None:
    """Wrapped layers give the base output at init and only adapter weights need grad."""
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(3, 8)
    before = model(x)
    wrapped = add_lora(model, targets=["0"], r=2, alpha=4)
    assert wrapped == ["0"]
    assert isinstance(model[0], LoRALinear)
    assert torch.allclose(model(x), before)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"0.lora_a.weight", "0.lora_b.weight"}


def test_lora_without_matching_layer_is_refused() -> None:
    """Targets that match nothing are an error, not a silent no-op."""
    with pytest.raises(PrivacyError, match=r"no nn\.Linear named"):
        add_lora(nn.Sequential(nn.Linear(2, 2)), targets=["q_proj"], r=2, alpha=4)


def test_settings_reject_unknown_clipping() -> None:
    """An unknown clipping mode is refused before Opacus sees it."""
    with pytest.raises(PrivacyError, match="clipping must be one of"):
        DPSettings(clipping="fast").check()
