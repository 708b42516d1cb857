"""The decoder's building blocks: RMSNorm, RoPE, attention (GQA and MLA), the KV cache.

The mixture-of-experts feed-forward lives in `guardrails.generators.moe.routing`; the whole
model is assembled in `guardrails.generators.moe.model`. Numerics follow the `transformers`
reference implementations (float32 RMSNorm statistics, float32 softmax) so that logits agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional torch alias)
from torch import Tensor, nn

from guardrails.generators.moe.config import MoEConfig, YarnRope


def _linear(layer: nn.Module, x: Tensor) -> Tensor:
    """Call a projection (float or INT8) with a typed result."""
    out: Tensor = layer(x)
    return out


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with the statistic computed in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature correction for a context extended ``scale`` times."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_frequencies(dim: int, theta: float, yarn: YarnRope | None) -> tuple[Tensor, float]:
    """(inverse frequencies [dim/2], cos/sin scaling) for plain RoPE or YaRN."""
    pos = theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    if yarn is None:
        return 1.0 / pos, 1.0
    factor = yarn.factor
    attention = yarn.attention_factor
    if attention is None:
        if yarn.mscale and yarn.mscale_all_dim:
            attention = yarn_mscale(factor, yarn.mscale) / yarn_mscale(factor, yarn.mscale_all_dim)
        else:
            attention = yarn_mscale(factor)

    def correction_dim(rotations: float) -> float:
        span = yarn.original_max_position_embeddings / (rotations * 2 * math.pi)
        return dim * math.log(span) / (2 * math.log(theta))

    low, high = correction_dim(yarn.beta_fast), correction_dim(yarn.beta_slow)
    if yarn.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolate = 1 - ramp
    inv = (1.0 / (factor * pos)) * (1 - extrapolate) + (1.0 / pos) * extrapolate
    return inv, float(attention)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding; positions are per row so left-padded batches stay exact."""

    inv_freq: Tensor

    def __init__(
        self, dim: int, theta: float, *, interleave: bool, yarn: YarnRope | None = None
    ) -> None:
        super().__init__()
        inv, self.scaling = rope_frequencies(dim, theta, yarn)
        self.register_buffer("inv_freq", inv, persistent=False)
        self.interleave = interleave

    def cos_sin(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """``positions`` [B, T] → cos, sin of shape [B, 1, T, dim]."""
        freqs = positions[..., None].to(torch.float32) * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.scaling)[:, None], (emb.sin() * self.scaling)[:, None]

    def rotate(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotate ``x`` [B, H, T, dim] (half-split layout, or DeepSeek's interleaved pairs)."""
        if self.interleave:
            half = cos.shape[-1] // 2
            c, s = cos[..., :half], sin[..., :half]
            x1, x2 = x[..., 0::2], x[..., 1::2]
            return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class KVCache:
    """Per-layer cached attention state plus a [B, S] mask of which cached keys are real.

    Rows may have different true lengths (left padding, or requests that joined a running batch
    later): the key mask hides the padding. What a layer caches is its own business (keys and
    values for GQA, the compressed latent and the rotary key for MLA).
    """

    def __init__(self, num_layers: int) -> None:
        self.layers: list[tuple[Tensor, Tensor] | None] = [None] * num_layers
        self.key_mask: Tensor | None = None

    @property
    def length(self) -> int:
        """Number of cached positions (including padding)."""
        return 0 if self.key_mask is None else int(self.key_mask.shape[1])

    def update(self, layer_idx: int, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """Append this step's tensors (sequence on dim 2) and return the full history."""
        old = self.layers[layer_idx]
        if old is not None:
            a = torch.cat((old[0], a), dim=2)
            b = torch.cat((old[1], b), dim=2)
        self.layers[layer_idx] = (a, b)
        return a, b

    def select(self, rows: Tensor) -> None:
        """Keep only the batch rows in ``rows`` (finished requests leave the batch)."""
        self.layers = [
            None if t is None else (t[0].index_select(0, rows), t[1].index_select(0, rows))
            for t in self.layers
        ]
        if self.key_mask is not None:
            self.key_mask = self.key_mask.index_select(0, rows)
        self.trim()

    def trim(self) -> None:
        """Drop leading positions that are padding in every row."""
        if self.key_mask is None or self.key_mask.shape[0] == 0:
            return
        any_real = self.key_mask.any(dim=0)
        if bool(any_real.all()):
            return
        first = int(torch.nonzero(any_real)[0, 0]) if bool(any_real.any()) else self.length
        self.key_mask = self.key_mask[:, first:]
        self.layers = [
            None if t is None else (t[0][:, :, first:], t[1][:, :, first:]) for t in self.layers
        ]

    @staticmethod
    def merge(caches: list[KVCache]) -> KVCache:
        """Stack caches of different lengths into one batch, left-padding the shorter ones."""
        longest = max(c.length for c in caches)
        out = KVCache(len(caches[0].layers))
        masks = []
        for c in caches:
            assert c.key_mask is not None
            masks.append(F.pad(c.key_mask, (longest - c.length, 0), value=False))
        out.key_mask = torch.cat(masks, dim=0)
        for i in range(len(out.layers)):
            parts_a, parts_b = [], []
            for c in caches:
                entry = c.layers[i]
                assert entry is not None
                pad = longest - c.length
                parts_a.append(F.pad(entry[0], (0, 0, pad, 0)))
                parts_b.append(F.pad(entry[1], (0, 0, pad, 0)))
            out.layers[i] = (torch.cat(parts_a, dim=0), torch.cat(parts_b, dim=0))
        return out


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    """Scaled dot-product attention; ``mask`` [B, 1, T, S] is True where a key may be seen."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


class GQAttention(nn.Module):
    """Grouped-query attention (Mixtral, Qwen2-MoE and the bundled model)."""

    def __init__(self, cfg: MoEConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = cfg.num_heads
        self.num_kv_heads = cfg.num_kv_heads
        self.head_dim = cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=False)

    def forward(
        self,
        x: Tensor,
        rope: RotaryEmbedding,
        cos_sin: tuple[Tensor, Tensor],
        mask: Tensor | None,
        cache: KVCache | None,
    ) -> Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = rope.rotate(q, *cos_sin)
        k = rope.rotate(k, *cos_sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        out = _attend(q, k, v, mask, 1.0 / math.sqrt(self.head_dim))
        return _linear(self.o_proj, out.transpose(1, 2).reshape(b, t, -1))


class MLAttention(nn.Module):
    """DeepSeek multi-head latent attention; the cache holds the compressed latent only."""

    def __init__(self, cfg: MoEConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = cfg.num_heads
        self.nope = cfg.qk_nope_head_dim
        self.rope_dim = cfg.qk_rope_head_dim
        self.v_dim = cfg.v_head_dim
        self.kv_rank = cfg.kv_lora_rank
        qk_dim = self.nope + self.rope_dim
        self.q_proj: nn.Linear | None = None
        self.q_a_proj: nn.Linear | None = None
        self.q_a_layernorm: RMSNorm | None = None
        self.q_b_proj: nn.Linear | None = None
        if cfg.q_lora_rank is None:
            self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * qk_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(cfg.hidden_size, cfg.q_lora_rank, bias=cfg.qkv_bias)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, 1e-6)
            self.q_b_proj = nn.Linear(cfg.q_lora_rank, cfg.num_heads * qk_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(
            cfg.hidden_size, cfg.kv_lora_rank + cfg.qk_rope_head_dim, bias=cfg.qkv_bias
        )
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, 1e-6)
        self.kv_b_proj = nn.Linear(
            cfg.kv_lora_rank, cfg.num_heads * (self.nope + self.v_dim), bias=False
        )
        self.o_proj = nn.Linear(cfg.num_heads * self.v_dim, cfg.hidden_size, bias=cfg.qkv_bias)
        self.scale = qk_dim**-0.5
        if cfg.rope_yarn is not None and cfg.rope_yarn.mscale_all_dim:
            self.scale *= yarn_mscale(cfg.rope_yarn.factor, cfg.rope_yarn.mscale_all_dim) ** 2

    def forward(
        self,
        x: Tensor,
        rope: RotaryEmbedding,
        cos_sin: tuple[Tensor, Tensor],
        mask: Tensor | None,
        cache: KVCache | None,
    ) -> Tensor:
        b, t, _ = x.shape
        if self.q_proj is not None:
            q = self.q_proj(x)
        else:
            assert self.q_a_proj is not None
            assert self.q_a_layernorm is not None
            assert self.q_b_proj is not None
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(b, t, self.num_heads, -1).transpose(1, 2)
        q_pass, q_rot = q.split([self.nope, self.rope_dim], dim=-1)
        latent, k_rot = self.kv_a_proj_with_mqa(x).split([self.kv_rank, self.rope_dim], dim=-1)
        latent = self.kv_a_layernorm(latent).view(b, 1, t, self.kv_rank)
        k_rot = k_rot.view(b, 1, t, self.rope_dim)
        q_rot = rope.rotate(q_rot, *cos_sin)
        k_rot = rope.rotate(k_rot, *cos_sin)
        if cache is not None:
            latent, k_rot = cache.update(self.layer_idx, latent, k_rot)
        s = latent.shape[2]
        if cache is not None and t == 1 and isinstance(self.kv_b_proj, nn.Linear):
            return self._absorbed(q_pass, q_rot, latent, k_rot, mask)
        kv = self.kv_b_proj(latent).view(b, s, self.num_heads, -1).transpose(1, 2)
        k_nope, v = kv.split([self.nope, self.v_dim], dim=-1)
        k = torch.cat((k_nope, k_rot.expand(-1, self.num_heads, -1, -1)), dim=-1)
        q = torch.cat((q_pass, q_rot), dim=-1)
        out = _attend(q, k, v, mask, self.scale)
        return _linear(self.o_proj, out.transpose(1, 2).reshape(b, t, -1))

    def _absorbed(
        self, q_pass: Tensor, q_rot: Tensor, latent: Tensor, k_rot: Tensor, mask: Tensor | None
    ) -> Tensor:
        """Attention over the cached latent itself, ``kv_b_proj`` folded into query and output.

        ``q·(W_k c) = (W_kᵀ q)·c`` and ``Σ p·(W_v c) = W_v (Σ p·c)``: a decode step costs
        O(cached length × latent rank) per head instead of re-expanding every cached latent
        through ``kv_b_proj`` (DeepSeek-V2's weight absorption).
        """
        b, h, t, _ = q_pass.shape
        w = self.kv_b_proj.weight.view(h, self.nope + self.v_dim, self.kv_rank)
        w_k, w_v = w[:, : self.nope], w[:, self.nope :]
        q_latent = torch.einsum("bhtn,hnr->bhtr", q_pass, w_k)
        query = torch.cat((q_latent, q_rot), dim=-1)
        key = torch.cat((latent, k_rot), dim=-1).expand(-1, h, -1, -1)
        value = latent.expand(-1, h, -1, -1)
        scores = torch.matmul(query, key.transpose(-1, -2)).to(torch.float32) * self.scale
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = scores.softmax(dim=-1).to(value.dtype)
        out_latent = torch.matmul(probs, value)  # [B, H, T, rank]
        out = torch.einsum("bhtr,hvr->bhtv", out_latent, w_v)
        return _linear(self.o_proj, out.transpose(1, 2).reshape(b, t, -1))


class DenseMLP(nn.Module):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return _linear(self.down_proj, F.silu(self.gate_proj(x)) * self.up_proj(x))


__all__ = [
    "DenseMLP",
    "GQAttention",
    "KVCache",
    "MLAttention",
    "RMSNorm",
    "RotaryEmbedding",
    "rope_frequencies",
    "yarn_mscale",
]
