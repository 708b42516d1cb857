"""Router and vectorized expert dispatch."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails.generators.moe.config import MoEConfig
from guardrails.generators.moe.routing import Experts, MoEBlock, TopKRouter


def _naive(experts: Experts, x, idx, weights):
    out = torch.zeros_like(x)
    inner = experts.down_proj.shape[-1]
    for t in range(x.shape[0]):
        for j in range(idx.shape[1]):
            e = int(idx[t, j])
            gu = experts.gate_up_proj[e] @ x[t]
            h = torch.nn.functional.silu(gu[:inner]) * gu[inner:]
            out[t] += weights[t, j] * (experts.down_proj[e] @ h)
    return out


@settings(max_examples=25, deadline=None)
@given(
    tokens=st.integers(1, 12),
    num_experts=st.integers(2, 8),
    k=st.integers(1, 2),
    inner=st.sampled_from([6, 8]),
    seed=st.integers(0, 10_000),
)
def test_grouped_dispatch_matches_per_token_loop(tokens, num_experts, k, inner, seed):
    """Sorted per-expert dispatch equals a naive per-token loop, used experts or not.

    Width 8 takes torch's grouped matmul, width 6 (rows not 16-byte aligned) the per-expert loop.
    """
    g = torch.Generator().manual_seed(seed)
    experts = Experts(num_experts, 8, inner)
    with torch.no_grad():
        experts.gate_up_proj.copy_(torch.randn(experts.gate_up_proj.shape, generator=g))
        experts.down_proj.copy_(torch.randn(experts.down_proj.shape, generator=g))
    x = torch.randn(tokens, 8, generator=g)
    idx = torch.stack([torch.randperm(num_experts, generator=g)[:k] for _ in range(tokens)])
    w = torch.rand(tokens, k, generator=g)
    with torch.no_grad():
        got = experts(x, idx, w)
        want = _naive(experts, x, idx, w)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _cfg(**kw):
    base = {
        "vocab_size": 16,
        "hidden_size": 8,
        "num_layers": 1,
        "num_heads": 2,
        "num_kv_heads": 1,
        "head_dim": 4,
        "intermediate_size": 8,
        "moe_intermediate_size": 4,
        "num_experts": 8,
        "num_experts_per_tok": 2,
    }
    return MoEConfig(**(base | kw))


def test_sigmoid_router_picks_only_from_best_groups():
    """Group-limited routing never selects an expert outside the top `topk_group` groups."""
    router = TopKRouter(_cfg(router_score="sigmoid", n_group=4, topk_group=1))
    with torch.no_grad():
        router.weight.normal_(0, 1)
    x = torch.randn(64, 8)
    _, _, idx = router(x)
    groups = idx // 2
    assert bool((groups == groups[:, :1]).all())


def test_softmax_router_weights_are_normalized():
    """With norm_topk_prob the top-k weights of each token sum to one."""
    router = TopKRouter(_cfg(norm_topk_prob=True))
    with torch.no_grad():
        router.weight.normal_(0, 1)
    _, w, _ = router(torch.randn(10, 8))
    torch.testing.assert_close(w.sum(-1), torch.ones(10))


def test_aux_loss_is_one_when_balanced_and_near_e_when_collapsed():
    """The load-balancing loss is 1 at perfect balance and ~E when one expert takes all."""
    block = MoEBlock(_cfg(num_experts_per_tok=1, num_experts=4)).train()
    with torch.no_grad():
        block.gate.weight.copy_(torch.eye(4, 8) * 50)
    x = torch.zeros(1, 4, 8)
    x[0, torch.arange(4), torch.arange(4)] = 1.0
    block(x)
    assert block.aux_loss is not None
    assert float(block.aux_loss.detach()) == pytest.approx(1.0, abs=1e-3)
    block(torch.ones(1, 16, 8) * torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0]))
    assert float(block.aux_loss.detach()) == pytest.approx(4.0, abs=1e-3)
