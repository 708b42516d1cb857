"""Fixtures for the MoE generator tests: tiny random checkpoints built with `transformers`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch


def _tiny_configs() -> dict[str, tuple[Any, Any]]:
    import transformers

    common = {
        "vocab_size": 101,
        "hidden_size": 32,
        "num_attention_heads": 4,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    }
    return {
        "mixtral": (
            transformers.MixtralForCausalLM,
            transformers.MixtralConfig(
                **common,
                intermediate_size=40,
                num_hidden_layers=2,
                num_key_value_heads=2,
                num_local_experts=4,
                num_experts_per_tok=2,
            ),
        ),
        "qwen2_moe": (
            transformers.Qwen2MoeForCausalLM,
            transformers.Qwen2MoeConfig(
                **common,
                intermediate_size=48,
                moe_intermediate_size=16,
                shared_expert_intermediate_size=24,
                num_hidden_layers=3,
                num_key_value_heads=2,
                num_experts=8,
                num_experts_per_tok=2,
                mlp_only_layers=[1],
            ),
        ),
        "mixtral_swa": (
            transformers.MixtralForCausalLM,
            transformers.MixtralConfig(
                **common,
                intermediate_size=40,
                num_hidden_layers=2,
                num_key_value_heads=2,
                num_local_experts=4,
                num_experts_per_tok=2,
                sliding_window=8,
            ),
        ),
        "qwen2_moe_swa": (
            transformers.Qwen2MoeForCausalLM,
            transformers.Qwen2MoeConfig(
                **common,
                intermediate_size=48,
                moe_intermediate_size=16,
                shared_expert_intermediate_size=24,
                num_hidden_layers=3,
                num_key_value_heads=2,
                num_experts=4,
                num_experts_per_tok=2,
                norm_topk_prob=True,
                use_sliding_window=True,
                sliding_window=8,
                max_window_layers=2,
            ),
        ),
        "deepseek_v3": (
            transformers.DeepseekV3ForCausalLM,
            transformers.DeepseekV3Config(
                **common,
                intermediate_size=48,
                moe_intermediate_size=16,
                num_hidden_layers=3,
                first_k_dense_replace=1,
                num_key_value_heads=4,
                n_routed_experts=8,
                n_shared_experts=1,
                num_experts_per_tok=2,
                n_group=2,
                topk_group=1,
                routed_scaling_factor=2.5,
                q_lora_rank=24,
                kv_lora_rank=16,
                qk_rope_head_dim=8,
                qk_nope_head_dim=8,
                v_head_dim=8,
            ),
        ),
        "deepseek_v3_yarn": (
            transformers.DeepseekV3ForCausalLM,
            transformers.DeepseekV3Config(
                **common,
                intermediate_size=48,
                moe_intermediate_size=16,
                num_hidden_layers=3,
                first_k_dense_replace=1,
                num_key_value_heads=4,
                n_routed_experts=8,
                n_shared_experts=1,
                num_experts_per_tok=2,
                n_group=2,
                topk_group=1,
                routed_scaling_factor=2.5,
                q_lora_rank=24,
                kv_lora_rank=16,
                qk_rope_head_dim=8,
                qk_nope_head_dim=8,
                v_head_dim=8,
                rope_parameters={
                    "rope_type": "yarn",
                    "rope_theta": 10000.0,
                    "factor": 4.0,
                    "original_max_position_embeddings": 64,
                    "beta_fast": 32,
                    "beta_slow": 1,
                    "mscale": 0.9,
                    "mscale_all_dim": 1.0,
                },
            ),
        ),
    }


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, Path]]:
    """Build (once per family) a random tiny `transformers` model saved to a tmp dir."""
    cache: dict[str, tuple[Any, Path]] = {}

    def build(family: str) -> tuple[Any, Path]:
        if family not in cache:
            cls, cfg = _tiny_configs()[family]
            torch.manual_seed(1234)
            ref = cls(cfg).eval()
            # random routers/biases so routing is not degenerate (HF inits them near zero)
            with torch.no_grad():
                for name, p in ref.named_parameters():
                    if "gate" in name and p.ndim == 2 and "proj" not in name:
                        p.normal_(0, 0.5)
                for name, b in ref.named_buffers():
                    if name.endswith("e_score_correction_bias"):
                        b.uniform_(-0.1, 0.1)
            path = tmp_path_factory.mktemp(family)
            ref.save_pretrained(path)
            cache[family] = (ref, path)
        return cache[family]

    return build


TINY_TEXT = (
    "The guard checks every prompt and every output against the policy. "
    "A rule may block, redact or flag the text; the audit log records the decision. "
    "Streaming output is checked chunk by chunk, and a stop sequence ends the stream. "
) * 4


@pytest.fixture(scope="session")
def tiny_text() -> str:
    """A few repeated sentences about the guard: enough to train a tiny BPE."""
    return TINY_TEXT


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random native checkpoint (sigmoid routing, 1 dense layer) with a trained tiny BPE."""
    from guardrails.generators.moe.config import MoEConfig
    from guardrails.generators.moe.loading import TOKENIZER_FILE, save_checkpoint
    from guardrails.generators.moe.model import MoEForCausalLM
    from guardrails.generators.moe.tokenizer import train_bpe

    tok = train_bpe([TINY_TEXT], vocab_size=320)
    cfg = MoEConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_experts=8,
        num_experts_per_tok=2,
        shared_intermediate_size=16,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(7)
    model = MoEForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("tiny")
    save_checkpoint(model, path, dtype=torch.float32)
    tok.tokenizer.save(str(path / TOKENIZER_FILE))
    return path


@pytest.fixture
def tiny_generator(tiny_checkpoint: Path) -> Any:
    """A fresh `MoEGenerator` over the tiny checkpoint."""
    from guardrails.generators.moe import load_pretrained

    gen = load_pretrained(tiny_checkpoint)
    yield gen
    gen.close()
