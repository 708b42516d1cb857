"""The full decoder: embeddings, layers of attention + (dense or MoE) FFN, norm, LM head."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional torch alias)
from torch import Tensor, nn

from guardrails.generators.moe.config import MoEConfig
from guardrails.generators.moe.modules import (
    DenseMLP,
    GQAttention,
    KVCache,
    MLAttention,
    RMSNorm,
    RotaryEmbedding,
)
from guardrails.generators.moe.routing import MoEBlock


class DecoderLayer(nn.Module):
    """Pre-norm residual layer: ``x + attn(norm(x))`` then ``x + ffn(norm(x))``."""

    def __init__(self, cfg: MoEConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn: GQAttention | MLAttention = (
            MLAttention(cfg, layer_idx) if cfg.attention == "mla" else GQAttention(cfg, layer_idx)
        )
        self.mlp: MoEBlock | DenseMLP = (
            MoEBlock(cfg)
            if cfg.is_moe_layer(layer_idx)
            else DenseMLP(cfg.hidden_size, cfg.intermediate_size)
        )
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(
        self,
        x: Tensor,
        rope: RotaryEmbedding,
        cos_sin: tuple[Tensor, Tensor],
        mask: Tensor | None,
        cache: KVCache | None,
    ) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, cos_sin, mask, cache)
        ffn: Tensor = self.mlp(self.post_attention_layernorm(x))
        return x + ffn


class MoEForCausalLM(nn.Module):
    """Decoder-only MoE language model; `forward` returns next-token logits [B, T, V]."""

    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rope = RotaryEmbedding(
            cfg.rope_dim, cfg.rope_theta, interleave=cfg.rope_interleave, yarn=cfg.rope_yarn
        )

    def new_cache(self) -> KVCache:
        """An empty KV cache sized for this model's layers."""
        return KVCache(self.config.num_layers)

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        positions: Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> Tensor:
        """Logits for ``input_ids`` [B, T].

        Args:
            attention_mask: [B, T] bool, False for padding among the new tokens.
            positions: [B, T] rotary positions; by default each row counts its real tokens
                (cached and new), so left padding does not shift positions.
            cache: appended to in place; carries the key mask of earlier steps.
            last_only: compute logits for the last position only (decoding).
        """
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones(b, t, dtype=torch.bool, device=input_ids.device)
        past_mask = cache.key_mask if cache is not None else None
        if past_mask is not None and past_mask.shape[0] != b:
            raise ValueError(f"cache holds {past_mask.shape[0]} rows, input has {b}")
        full_mask = (
            attention_mask if past_mask is None else torch.cat((past_mask, attention_mask), 1)
        )
        if positions is None:
            positions = (full_mask.to(torch.long).cumsum(1) - 1).clamp(min=0)[:, -t:]
        mask: Tensor | None = None
        windowed: dict[int, Tensor | None] = {}
        s = full_mask.shape[1]
        q_abs = torch.arange(s - t, s, device=input_ids.device)
        k_abs = torch.arange(s, device=input_ids.device)
        if cache is not None or not bool(attention_mask.all()):
            causal = k_abs[None, :] <= q_abs[:, None]
            is_self = k_abs[None, :] == q_abs[:, None]
            mask = ((causal[None] & full_mask[:, None, :]) | is_self[None])[:, None]
        for window in {self.config.window_of(i) for i in range(self.config.num_layers)}:
            if window is None or s <= window:
                windowed[window or 0] = mask
                continue
            # cache positions are contiguous per row (padding only leads), so index distance
            # is token distance
            inside = k_abs[None, :] > q_abs[:, None] - window
            base = mask if mask is not None else (k_abs[None, :] <= q_abs[:, None])[None, None]
            windowed[window] = base & inside[None, None]
        if cache is not None:
            cache.key_mask = full_mask
        x = self.embed_tokens(input_ids)
        cos, sin = self.rope.cos_sin(positions)  # float32 frequencies, then the model's dtype
        cos_sin = (cos.to(x.dtype), sin.to(x.dtype))
        for i, layer in enumerate(self.layers):
            x = layer(x, self.rope, cos_sin, windowed[self.config.window_of(i) or 0], cache)
        if last_only:
            x = x[:, -1:]
        logits: Tensor = self.lm_head(self.norm(x))
        return logits

    def aux_loss(self) -> Tensor:
        """Sum of the MoE layers' load-balancing losses from the last training forward."""
        losses = [
            m.aux_loss for m in self.modules() if isinstance(m, MoEBlock) and m.aux_loss is not None
        ]
        if not losses:
            return torch.zeros(())
        return torch.stack(losses).sum()

    def expert_counts(self) -> list[Tensor]:
        """Per MoE layer, how many assignments each expert got in the last forward."""
        return [
            m.expert_counts
            for m in self.modules()
            if isinstance(m, MoEBlock) and m.expert_counts is not None
        ]

    def loss(self, input_ids: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """(cross-entropy, load-balancing loss) for teacher-forced training."""
        logits = self(input_ids)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return ce, self.aux_loss()

    def num_parameters(self, *, active: bool = False) -> int:
        """Parameter count; ``active`` counts only top-k routed experts (per token)."""
        total = sum(p.numel() for p in self.parameters())  # a tied tensor is yielded once
        if not active:
            return total
        inactive = 0
        cfg = self.config
        for m in self.modules():
            if isinstance(m, MoEBlock):
                per_expert = m.experts.gate_up_proj[0].numel() + m.experts.down_proj[0].numel()
                inactive += per_expert * (cfg.num_experts - cfg.num_experts_per_tok)
        return total - inactive


__all__ = [
    "DecoderLayer",
    "MoEForCausalLM",
]
