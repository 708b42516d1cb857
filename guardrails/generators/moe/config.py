"""The one configuration that describes every supported MoE decoder.

Mixtral, Qwen2-MoE, DeepSeek-V3 and the bundled model are all the same module tree with
different switches; `MoEConfig` holds those switches and the `from_hf_*` readers translate a
Hugging Face ``config.json`` into them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from guardrails.generators.moe.errors import CheckpointError

NATIVE_MODEL_TYPE = "guardrails_moe"


@dataclass(frozen=True, slots=True)
class YarnRope:
    """YaRN context extension of RoPE (DeepSeek-V3 ships with it); fields as in HF configs."""

    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float = 0.0
    mscale_all_dim: float = 0.0
    attention_factor: float | None = None
    truncate: bool = True


@dataclass(frozen=True, slots=True)
class MoEConfig:
    """Shape and routing switches of a decoder-only MoE transformer.

    Widths: ``intermediate_size`` is the FFN width of dense layers (those in
    ``dense_layers``), ``moe_intermediate_size`` the width of one routed expert and
    ``shared_intermediate_size`` the total width of the always-on shared expert(s), 0 for none.
    Attention is grouped-query (``"gqa"``) or DeepSeek's multi-head latent attention
    (``"mla"``, which uses the ``*_lora_rank`` and ``qk_*``/``v_head_dim`` fields).
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    moe_intermediate_size: int
    num_experts: int
    num_experts_per_tok: int
    shared_intermediate_size: int = 0
    shared_expert_gate: bool = False
    router_score: Literal["softmax", "sigmoid"] = "softmax"
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 1.0
    n_group: int = 1
    topk_group: int = 1
    dense_layers: tuple[int, ...] = ()
    attention: Literal["gqa", "mla"] = "gqa"
    qkv_bias: bool = False
    q_lora_rank: int | None = None
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    rope_interleave: bool = False
    sliding_window: int | None = None
    sliding_layers: tuple[int, ...] | None = None
    rope_theta: float = 10000.0
    rope_yarn: YarnRope | None = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    aux_loss_coef: float = 0.01
    eos_token_id: int | None = None
    family: str = NATIVE_MODEL_TYPE

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.num_experts_per_tok > self.num_experts:
            problems.append(
                f"num_experts_per_tok={self.num_experts_per_tok} > num_experts={self.num_experts}"
            )
        if self.attention == "gqa" and self.num_heads % self.num_kv_heads:
            problems.append(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.num_experts and self.num_experts % self.n_group:
            problems.append(
                f"num_experts={self.num_experts} not divisible by n_group={self.n_group}"
            )
        if self.topk_group > self.n_group:
            problems.append(f"topk_group={self.topk_group} > n_group={self.n_group}")
        if problems:
            raise CheckpointError("invalid MoE config: " + "; ".join(problems))

    def window_of(self, layer_idx: int) -> int | None:
        """Sliding-window size of layer ``layer_idx`` (None: full causal attention).

        ``sliding_layers=None`` applies the window to every layer (Mixtral).
        """
        if self.sliding_window is None:
            return None
        if self.sliding_layers is None or layer_idx in self.sliding_layers:
            return self.sliding_window
        return None

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Whether layer ``layer_idx`` has a routed-expert FFN (else a dense one)."""
        return self.num_experts > 0 and layer_idx not in self.dense_layers

    @property
    def rope_dim(self) -> int:
        """Number of channels per head that rotary embeddings rotate."""
        return self.qk_rope_head_dim if self.attention == "mla" else self.head_dim

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``model_type`` marks the native checkpoint format."""
        data = dataclasses.asdict(self)
        data["dense_layers"] = list(self.dense_layers)
        if self.sliding_layers is not None:
            data["sliding_layers"] = list(self.sliding_layers)
        if self.rope_yarn is not None:
            data["rope_yarn"] = dataclasses.asdict(self.rope_yarn)
        data["model_type"] = NATIVE_MODEL_TYPE
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config.json") -> MoEConfig:
        """Build from `to_dict` output; unknown or missing keys raise `CheckpointError`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        payload = {k: v for k, v in data.items() if k != "model_type"}
        unknown = sorted(set(payload) - fields)
        if unknown:
            raise CheckpointError(f"{source}: unknown keys {unknown}")
        if isinstance(payload.get("rope_yarn"), dict):
            try:
                payload["rope_yarn"] = YarnRope(**payload["rope_yarn"])
            except TypeError as exc:
                raise CheckpointError(f"{source}: rope_yarn: {exc}") from exc
        for key in ("dense_layers", "sliding_layers"):
            if payload.get(key) is not None:
                payload[key] = tuple(payload[key])
        try:
            return cls(**payload)
        except TypeError as exc:
            raise CheckpointError(f"{source}: {exc}") from exc


def _get(data: dict[str, Any], key: str, source: str) -> Any:
    if key not in data:
        raise CheckpointError(f"{source}: missing required key {key!r}")
    return data[key]


def _rope_params(data: dict[str, Any]) -> dict[str, Any]:
    params = data.get("rope_parameters") or data.get("rope_scaling") or {}
    return dict(params) if isinstance(params, dict) else {}


def _rope_theta(data: dict[str, Any], source: str) -> float:
    params = _rope_params(data)
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ("default", "yarn", None):
        raise CheckpointError(
            f"{source}: rope_type {rope_type!r} is not supported (only default RoPE and yarn)"
        )
    theta = params.get("rope_theta", data.get("rope_theta", 10000.0))
    return float(theta)


def _rope_yarn(data: dict[str, Any], source: str) -> YarnRope | None:
    params = _rope_params(data)
    if params.get("rope_type", params.get("type")) != "yarn":
        return None
    original = params.get("original_max_position_embeddings")
    if not original:
        raise CheckpointError(f"{source}: yarn RoPE needs original_max_position_embeddings")
    factor = params.get("factor") or int(data["max_position_embeddings"]) / int(original)
    return YarnRope(
        factor=float(factor),
        original_max_position_embeddings=int(original),
        beta_fast=float(params.get("beta_fast") or 32),
        beta_slow=float(params.get("beta_slow") or 1),
        mscale=float(params.get("mscale") or 0),
        mscale_all_dim=float(params.get("mscale_all_dim") or 0),
        attention_factor=(
            float(params["attention_factor"]) if params.get("attention_factor") else None
        ),
        truncate=bool(params.get("truncate", True)),
    )


def _eos(data: dict[str, Any]) -> int | None:
    eos = data.get("eos_token_id")
    if isinstance(eos, list):
        return int(eos[0]) if eos else None
    return int(eos) if eos is not None else None


def _check_act(data: dict[str, Any], source: str) -> None:
    act = data.get("hidden_act", "silu")
    if act != "silu":
        raise CheckpointError(f"{source}: hidden_act {act!r} is not supported (only 'silu')")


def from_mixtral(data: dict[str, Any], source: str) -> MoEConfig:
    """Read a Mixtral ``config.json`` (softmax top-k, renormalized, no shared expert)."""
    _check_act(data, source)
    hidden = int(_get(data, "hidden_size", source))
    heads = int(_get(data, "num_attention_heads", source))
    return MoEConfig(
        vocab_size=int(_get(data, "vocab_size", source)),
        hidden_size=hidden,
        num_layers=int(_get(data, "num_hidden_layers", source)),
        num_heads=heads,
        num_kv_heads=int(data.get("num_key_value_heads") or heads),
        head_dim=int(data.get("head_dim") or hidden // heads),
        intermediate_size=int(_get(data, "intermediate_size", source)),
        moe_intermediate_size=int(_get(data, "intermediate_size", source)),
        num_experts=int(_get(data, "num_local_experts", source)),
        num_experts_per_tok=int(_get(data, "num_experts_per_tok", source)),
        norm_topk_prob=True,
        sliding_window=int(data["sliding_window"]) if data.get("sliding_window") else None,
        rope_theta=_rope_theta(data, source),
        rope_yarn=_rope_yarn(data, source),
        max_position_embeddings=int(data.get("max_position_embeddings", 4096)),
        rms_norm_eps=float(data.get("rms_norm_eps", 1e-5)),
        tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
        eos_token_id=_eos(data),
        family="mixtral",
    )


def from_qwen2_moe(data: dict[str, Any], source: str) -> MoEConfig:
    """Read a Qwen2-MoE ``config.json`` (softmax top-k, gated shared expert, qkv bias)."""
    _check_act(data, source)
    hidden = int(_get(data, "hidden_size", source))
    heads = int(_get(data, "num_attention_heads", source))
    layers = int(_get(data, "num_hidden_layers", source))
    experts = int(_get(data, "num_experts", source))
    step = int(data.get("decoder_sparse_step", 1))
    mlp_only = set(data.get("mlp_only_layers") or [])
    dense = tuple(i for i in range(layers) if i in mlp_only or experts == 0 or (i + 1) % step)
    window: int | None = None
    sliding: tuple[int, ...] | None = None
    if data.get("use_sliding_window") and data.get("sliding_window"):
        window = int(data["sliding_window"])
        types = data.get("layer_types")
        if types:
            sliding = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
        else:
            top = int(data.get("max_window_layers", layers))
            sliding = tuple(i for i in range(layers) if (i + 1) % 2 and i < top)
    return MoEConfig(
        vocab_size=int(_get(data, "vocab_size", source)),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=int(data.get("num_key_value_heads") or heads),
        head_dim=int(data.get("head_dim") or hidden // heads),
        intermediate_size=int(_get(data, "intermediate_size", source)),
        moe_intermediate_size=int(_get(data, "moe_intermediate_size", source)),
        num_experts=experts,
        num_experts_per_tok=int(_get(data, "num_experts_per_tok", source)),
        shared_intermediate_size=int(data.get("shared_expert_intermediate_size", 0)),
        shared_expert_gate=True,
        norm_topk_prob=bool(data.get("norm_topk_prob", False)),
        dense_layers=dense,
        sliding_window=window,
        sliding_layers=sliding,
        qkv_bias=bool(data.get("qkv_bias", True)),
        rope_theta=_rope_theta(data, source),
        rope_yarn=_rope_yarn(data, source),
        max_position_embeddings=int(data.get("max_position_embeddings", 4096)),
        rms_norm_eps=float(data.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
        eos_token_id=_eos(data),
        family="qwen2_moe",
    )


def from_deepseek_v3(data: dict[str, Any], source: str) -> MoEConfig:
    """Read a DeepSeek-V3 ``config.json`` (MLA, sigmoid group-limited routing, shared experts)."""
    _check_act(data, source)
    heads = int(_get(data, "num_attention_heads", source))
    moe_width = int(_get(data, "moe_intermediate_size", source))
    q_lora = data.get("q_lora_rank")
    return MoEConfig(
        vocab_size=int(_get(data, "vocab_size", source)),
        hidden_size=int(_get(data, "hidden_size", source)),
        num_layers=int(_get(data, "num_hidden_layers", source)),
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=int(_get(data, "qk_nope_head_dim", source))
        + int(_get(data, "qk_rope_head_dim", source)),
        intermediate_size=int(_get(data, "intermediate_size", source)),
        moe_intermediate_size=moe_width,
        num_experts=int(_get(data, "n_routed_experts", source)),
        num_experts_per_tok=int(_get(data, "num_experts_per_tok", source)),
        shared_intermediate_size=moe_width * int(data.get("n_shared_experts") or 0),
        router_score="sigmoid",
        norm_topk_prob=bool(data.get("norm_topk_prob", True)),
        routed_scaling_factor=float(data.get("routed_scaling_factor", 1.0)),
        n_group=int(data.get("n_group") or 1),
        topk_group=int(data.get("topk_group") or 1),
        dense_layers=tuple(range(int(data.get("first_k_dense_replace", 0)))),
        attention="mla",
        q_lora_rank=int(q_lora) if q_lora is not None else None,
        kv_lora_rank=int(_get(data, "kv_lora_rank", source)),
        qk_nope_head_dim=int(_get(data, "qk_nope_head_dim", source)),
        qk_rope_head_dim=int(_get(data, "qk_rope_head_dim", source)),
        v_head_dim=int(_get(data, "v_head_dim", source)),
        rope_interleave=bool(data.get("rope_interleave", True)),
        qkv_bias=bool(data.get("attention_bias", False)),
        rope_theta=_rope_theta(data, source),
        rope_yarn=_rope_yarn(data, source),
        max_position_embeddings=int(data.get("max_position_embeddings", 4096)),
        rms_norm_eps=float(data.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
        eos_token_id=_eos(data),
        family="deepseek_v3",
    )


def config_from_json(data: dict[str, Any], *, source: str = "config.json") -> MoEConfig:
    """Translate any supported ``config.json`` into a `MoEConfig`.

    Raises:
        CheckpointError: the ``model_type`` is not one of the supported families.
    """
    model_type = data.get("model_type")
    readers = {
        "mixtral": from_mixtral,
        "qwen2_moe": from_qwen2_moe,
        "deepseek_v3": from_deepseek_v3,
    }
    if model_type == NATIVE_MODEL_TYPE:
        return MoEConfig.from_dict(data, source=source)
    reader = readers.get(str(model_type))
    if reader is None:
        known = sorted([*readers, NATIVE_MODEL_TYPE])
        raise CheckpointError(
            f"{source}: unknown architecture model_type={model_type!r}; supported: {known}"
        )
    return reader(data, source)


__all__ = [
    "NATIVE_MODEL_TYPE",
    "MoEConfig",
    "YarnRope",
    "config_from_json",
    "from_deepseek_v3",
    "from_mixtral",
    "from_qwen2_moe",
]
