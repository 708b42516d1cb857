"""Mixture-of-experts feed-forward: the top-k router, the grouped expert dispatch, the block.

Dispatch sorts the (token, expert) assignments by expert and runs each used expert once on
its contiguous slice of tokens, on views of the stacked weights: no weight copies and no
padding. The Python loop is over used experts (at most ``num_experts`` per layer), never
over tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional torch alias)
from torch import Tensor, nn

from guardrails.generators.moe.config import MoEConfig
from guardrails.generators.moe.modules import DenseMLP

# torch's grouped matmul (one kernel for all experts), where this torch has it
_GROUPED_MM = getattr(F, "grouped_mm", None)


class TopKRouter(nn.Module):
    """Scores experts per token and keeps the top k.

    ``softmax``: softmax over all experts, top-k, optionally renormalized (Mixtral, Qwen2-MoE).
    ``sigmoid``: DeepSeek-V3's sigmoid scores; a per-expert bias steers the choice (not the
    weights), experts are first narrowed to the best ``topk_group`` of ``n_group`` groups.
    """

    e_score_correction_bias: Tensor

    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        self.top_k = cfg.num_experts_per_tok
        self.num_experts = cfg.num_experts
        self.score = cfg.router_score
        self.norm_topk_prob = cfg.norm_topk_prob
        self.scaling = cfg.routed_scaling_factor
        self.n_group = cfg.n_group
        self.topk_group = cfg.topk_group
        self.weight = nn.Parameter(torch.zeros(cfg.num_experts, cfg.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(cfg.num_experts))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` [N, H] → (probabilities [N, E], weights [N, k], expert indices [N, k])."""
        logits = F.linear(x.to(torch.float32), self.weight.to(torch.float32))
        if self.score == "softmax":
            probs = logits.softmax(dim=-1)
            weights, idx = probs.topk(self.top_k, dim=-1)
            if self.norm_topk_prob:
                weights = weights / weights.sum(dim=-1, keepdim=True)
        else:
            probs = logits.sigmoid()
            choice = probs + self.e_score_correction_bias
            if self.n_group > 1:
                grouped = choice.view(-1, self.n_group, self.num_experts // self.n_group)
                group_scores = grouped.topk(2, dim=-1)[0].sum(dim=-1)
                group_idx = group_scores.topk(self.topk_group, dim=-1, sorted=False)[1]
                group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1.0)
                keep = group_mask.unsqueeze(-1).expand_as(grouped).reshape(-1, self.num_experts)
                choice = choice.masked_fill(keep == 0, float("-inf"))
            idx = choice.topk(self.top_k, dim=-1, sorted=False)[1]
            weights = probs.gather(1, idx)
            if self.norm_topk_prob:
                weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
            probs = probs / probs.sum(dim=-1, keepdim=True)
        return probs, (weights * self.scaling).to(x.dtype), idx


class Experts(nn.Module):
    """``num_experts`` SwiGLU experts stored as stacked 3-D weights.

    ``gate_up_proj`` is [E, 2·I, H] (gate rows first, then up rows), ``down_proj`` [E, H, I],
    the layout `transformers` uses in memory, so per-expert checkpoint tensors stack into it.
    """

    def __init__(self, num_experts: int, hidden: int, inner: int) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * inner, hidden))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, inner))
        nn.init.normal_(self.gate_up_proj, std=0.02)
        nn.init.normal_(self.down_proj, std=0.02)

    def expert_forward(self, expert: int, x: Tensor) -> Tensor:
        """SwiGLU of one expert on rows ``x`` [M, H] (weights are views, never copied)."""
        gate, up = F.linear(x, self.gate_up_proj[expert]).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.down_proj[expert])

    def forward(self, x: Tensor, idx: Tensor, weights: Tensor) -> Tensor:
        """``x`` [N, H], ``idx``/``weights`` [N, k] → weighted sum of chosen experts [N, H].

        The (token, expert) assignments are sorted by expert so each expert's tokens form
        one contiguous slice; each used expert runs one matmul pair on its slice (no copy of
        its weights, no padding to the busiest expert) and the weighted results are added
        back per token with ``index_add_``.
        """
        n, k = idx.shape
        flat = idx.reshape(-1)
        if n == 1:  # one token (batch-1 decoding): no sort, no gather
            out = x.new_zeros(x.shape)
            for j, e in enumerate(flat.tolist()):
                out += self.expert_forward(e, x) * weights[:, j : j + 1]
            return out
        order = torch.argsort(flat, stable=True)
        token = order // k
        counts = torch.bincount(flat, minlength=self.num_experts)
        ys = self.grouped_forward(x.index_select(0, token), counts)
        ys *= weights.reshape(-1)[order].unsqueeze(-1)
        return torch.zeros_like(x).index_add_(0, token, ys)

    def grouped_forward(self, xs: Tensor, counts: Tensor) -> Tensor:
        """SwiGLU of rows ``xs`` sorted by expert, ``counts[e]`` rows for expert ``e``.

        One grouped matmul per projection where torch has it (``F.grouped_mm``), else one
        matmul pair per used expert on its contiguous slice.
        """
        if _GROUPED_MM is not None and self._can_group(xs):
            offs = torch.cumsum(counts, 0).to(torch.int32)
            gate, up = _GROUPED_MM(xs, self.gate_up_proj.transpose(1, 2), offs=offs).chunk(2, -1)
            out: Tensor = _GROUPED_MM(F.silu(gate) * up, self.down_proj.transpose(1, 2), offs=offs)
            return out
        return self.per_expert_forward(xs, counts)

    def _can_group(self, xs: Tensor) -> bool:
        """Whether torch's grouped matmul takes these operands (16-byte aligned rows)."""
        if _GROUPED_MM is None or xs.dtype != self.gate_up_proj.dtype:
            return False
        size = xs.element_size()
        tensors = (xs, self.gate_up_proj, self.down_proj)
        return all(d * size % 16 == 0 for d in (xs.shape[-1], self.down_proj.shape[-1])) and all(
            t.data_ptr() % 16 == 0 for t in tensors
        )

    def per_expert_forward(self, xs: Tensor, counts: Tensor) -> Tensor:
        """`grouped_forward` as one `expert_forward` call per used expert."""
        ys = torch.empty_like(xs)
        start = 0
        for e, count in enumerate(counts.tolist()):
            if count:
                ys[start : start + count] = self.expert_forward(e, xs[start : start + count])
                start += count
        return ys


class MoEBlock(nn.Module):
    """Routed experts plus optional always-on shared expert (optionally sigmoid-gated).

    After each forward, ``aux_loss`` holds the Switch-style load-balancing loss
    ``E · Σ_i f_i · P_i`` (f: fraction of assignments, P: mean router probability) and
    ``expert_counts`` the assignments per expert (in training, or in eval when
    ``record_load`` is set), for the load plots.
    """

    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        self.gate = TopKRouter(cfg)
        self.experts = Experts(cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size)
        self.shared_experts: DenseMLP | None = None
        self.shared_expert_gate: nn.Linear | None = None
        if cfg.shared_intermediate_size:
            self.shared_experts = DenseMLP(cfg.hidden_size, cfg.shared_intermediate_size)
            if cfg.shared_expert_gate:
                self.shared_expert_gate = nn.Linear(cfg.hidden_size, 1, bias=False)
        self.aux_loss: Tensor | None = None
        self.expert_counts: Tensor | None = None
        self.record_load = False

    def update_balance_bias(self, rate: float) -> None:
        """DeepSeek-V3's auxiliary-loss-free balancing, after a training step.

        Each expert's routing bias moves by ``rate`` towards balance: up when it got fewer
        assignments than the mean in the last forward, down when it got more. The bias only
        steers which experts are chosen (sigmoid routing), never their weights.
        """
        if self.expert_counts is None:
            return
        counts = self.expert_counts.to(torch.float32)
        bias = self.gate.e_score_correction_bias
        bias += rate * torch.sign(counts.mean() - counts)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs, weights, idx = self.gate(flat)
        out: Tensor = self.experts(flat, idx, weights)
        if self.training or self.record_load:
            counts = torch.bincount(idx.reshape(-1), minlength=probs.shape[-1])
            self.expert_counts = counts.detach()
        if self.training:
            frac = counts.to(probs.dtype) / idx.numel()
            self.aux_loss = probs.shape[-1] * (frac * probs.mean(dim=0)).sum()
        if self.shared_experts is not None:
            shared = self.shared_experts(flat)
            if self.shared_expert_gate is not None:
                shared = torch.sigmoid(self.shared_expert_gate(flat)) * shared
            out = out + shared
        return out.view(shape)


__all__ = [
    "Experts",
    "MoEBlock",
    "TopKRouter",
]
