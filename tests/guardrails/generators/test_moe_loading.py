"""Checkpoint loading: sharded files, native round trip, and errors that name file and tensor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from guardrails.generators.moe import (
    CheckpointError,
    GenerationError,
    load_pretrained,
)
from guardrails.generators.moe.loading import load_model, save_checkpoint


@pytest.fixture
def mixtral_copy(hf_checkpoint, tmp_path):
    """A writable copy of the tiny Mixtral checkpoint."""
    _, path = hf_checkpoint("mixtral")
    dst = tmp_path / "mixtral"
    shutil.copytree(path, dst)
    return dst


def test_sharded_checkpoint_loads_like_single_file(hf_checkpoint, tmp_path):
    """A checkpoint saved in several shards gives the same logits as the single file."""
    ref, path = hf_checkpoint("qwen2_moe")
    sharded = tmp_path / "sharded"
    ref.save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(load_model(sharded)(ids), load_model(path)(ids))


def test_native_checkpoint_round_trips(tiny_checkpoint, tmp_path):
    """save_checkpoint then load_model reproduces the logits exactly (fp32)."""
    model = load_model(tiny_checkpoint)
    save_checkpoint(model, tmp_path / "copy", dtype=torch.float32)
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "copy")(ids), model(ids))


def test_missing_directory_and_config(tmp_path):
    """A missing directory or config.json is named in the error."""
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(CheckpointError, match=r"config\.json: missing config file"):
        load_model(tmp_path)


def test_unknown_architecture_is_named(mixtral_copy):
    """An unsupported model_type is reported with the supported list."""
    cfg = json.loads((mixtral_copy / "config.json").read_text())
    cfg["model_type"] = "llama"
    (mixtral_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"model_type='llama'.*mixtral"):
        load_model(mixtral_copy)


def test_missing_weights_file(mixtral_copy):
    """A checkpoint without safetensors says which files it looked for."""
    (mixtral_copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no model\.safetensors"):
        load_model(mixtral_copy)


def test_missing_tensor_is_named(mixtral_copy):
    """Dropping one tensor yields an error naming that tensor."""
    file = mixtral_copy / "model.safetensors"
    state = load_file(file)
    del state["model.layers.1.self_attn.k_proj.weight"]
    save_file(state, file)
    with pytest.raises(CheckpointError, match=r"layers\.1\.self_attn\.k_proj\.weight"):
        load_model(mixtral_copy)


def test_missing_expert_tensor_is_named(mixtral_copy):
    """Dropping one expert's weight names the layer, expert and file."""
    file = mixtral_copy / "model.safetensors"
    state = load_file(file)
    del state["model.layers.0.block_sparse_moe.experts.3.w2.weight"]
    save_file(state, file)
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*layer 0 expert 3 \(down"):
        load_model(mixtral_copy)


def test_shape_mismatch_names_file_and_tensor(mixtral_copy):
    """A config that disagrees with a tensor's shape names both shapes and the tensor."""
    cfg = json.loads((mixtral_copy / "config.json").read_text())
    cfg["vocab_size"] = 77
    (mixtral_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'embed_tokens\.weight'"):
        load_model(mixtral_copy)


def test_missing_shard_is_named(hf_checkpoint, tmp_path):
    """A shard listed in the index but absent is named."""
    ref, _ = hf_checkpoint("mixtral")
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    shard = sorted(tmp_path.glob("model-0000*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=shard.name):
        load_model(tmp_path)


def test_corrupt_config_json(mixtral_copy):
    """Malformed JSON is reported as such, with the file."""
    (mixtral_copy / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_model(mixtral_copy)


def test_load_pretrained_needs_a_tokenizer(mixtral_copy):
    """A model-only checkpoint cannot become a text generator; the error names tokenizer.json."""
    with pytest.raises(CheckpointError, match=r"tokenizer\.json: missing tokenizer file"):
        load_pretrained(mixtral_copy)


def test_unsupported_rope_scaling_is_rejected(mixtral_copy):
    """A RoPE variant we do not implement is refused instead of silently mis-computed."""
    cfg = json.loads((mixtral_copy / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}
    (mixtral_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="yarn"):
        load_model(mixtral_copy)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_loads_close_to_fp32(hf_checkpoint, dtype):
    """bf16/fp16 loading keeps every weight in that dtype and logits near the fp32 ones."""
    _, path = hf_checkpoint("mixtral")
    full, half = load_model(path), load_model(path, dtype=dtype)
    assert {p.dtype for p in half.parameters()} == {dtype}
    ids = torch.tensor([[1, 5, 9, 2, 7, 3]])
    with torch.no_grad():
        a, b = full(ids), half(ids).float()
    assert (a - b).abs().max() < 0.05 * (a.max() - a.min())


def _mapped_file(address: int) -> str | None:
    """The file backing the memory mapping that holds ``address`` (Linux /proc/self/maps)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        low, high = (int(a, 16) for a in fields[0].split("-"))
        if low <= address < high:
            return fields[5] if len(fields) == 6 else None
    return None


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")
def test_weights_in_the_stored_dtype_are_memory_mapped(tiny_checkpoint, tmp_path):
    """A tensor stored in the requested dtype is mapped from the file; a converted one is not."""
    save_checkpoint(load_model(tiny_checkpoint), tmp_path / "fp32", dtype=torch.float32)
    weights = str(tmp_path / "fp32" / "model.safetensors")
    mapped = load_model(tmp_path / "fp32").embed_tokens.weight
    converted = load_model(tmp_path / "fp32", dtype=torch.bfloat16).embed_tokens.weight
    assert _mapped_file(mapped.data_ptr()) == weights
    assert _mapped_file(converted.data_ptr()) != weights


def test_unsupported_dtype_is_refused(tiny_checkpoint):
    """Only float32, bfloat16 and float16 load; anything else is a CheckpointError."""
    with pytest.raises(CheckpointError, match="dtype"):
        load_model(tiny_checkpoint, dtype=torch.int8)
    with pytest.raises(CheckpointError, match="dtype"):
        load_pretrained(tiny_checkpoint, dtype="float64")


@settings(max_examples=15, deadline=None)
@given(cut=st.floats(0.0, 0.999))
def test_truncated_weights_file_is_a_checkpoint_error(hf_checkpoint, tmp_path_factory, cut):
    """A weights file cut anywhere raises CheckpointError naming it, never another error."""
    _, path = hf_checkpoint("mixtral")
    dst = tmp_path_factory.mktemp("cut")
    shutil.copytree(path, dst / "m")
    weights = dst / "m" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_model(dst / "m")


def test_no_tokenizer_means_ids_in_ids_out(mixtral_copy):
    """tokenizer=None loads a model-only checkpoint: ids in, ids out; text calls say why not."""
    gen = load_pretrained(mixtral_copy, tokenizer=None)
    ids = gen.generate_ids([1, 2, 3], max_tokens=4, temperature=0)
    assert len(ids) <= 4
    assert all(0 <= t < 101 for t in ids)
    with pytest.raises(GenerationError, match="without a tokenizer"):
        gen.generate("hello")


def test_explicit_tokenizer_path(mixtral_copy, tiny_checkpoint):
    """A tokenizer given by path is used for a checkpoint that has none."""
    own = load_pretrained(tiny_checkpoint).tokenizer
    gen = load_pretrained(mixtral_copy, tokenizer=tiny_checkpoint / "tokenizer.json")
    assert gen.tokenizer is not None
    assert own is not None
    assert gen.tokenizer.encode("The guard") == own.encode("The guard")


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_chat_template_from_tokenizer_config(tiny_checkpoint, tmp_path):
    """tokenizer_config.json's chat template renders the prompt, as transformers renders it."""
    import transformers

    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, dst)
    config = {"chat_template": CHAT_TEMPLATE, "bos_token": "<s>", "eos_token": "</s>"}
    (dst / "tokenizer_config.json").write_text(json.dumps(config))
    gen = load_pretrained(dst)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    rendered = gen.render_chat(messages)
    assert rendered == "<s><|system|>Be brief.</s><|user|>Hi</s><|assistant|>"
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(dst / "tokenizer.json"), bos_token="<s>", eos_token="</s>"
    )
    hf.chat_template = CHAT_TEMPLATE
    assert rendered == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert isinstance(gen.chat(messages, max_tokens=3, temperature=0), str)


def test_chat_template_is_sandboxed(tiny_checkpoint, tmp_path):
    """A template that reaches for Python internals fails as a CheckpointError, not code."""
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, dst)
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    (dst / "tokenizer_config.json").write_text(json.dumps({"chat_template": evil}))
    with pytest.raises(CheckpointError, match="chat template"):
        load_pretrained(dst).render_chat([{"role": "user", "content": "x"}])


def test_without_template_chat_is_plain_lines(tiny_checkpoint):
    """No tokenizer_config.json: ``role: text`` lines ending in ``assistant:``."""
    gen = load_pretrained(tiny_checkpoint)
    assert gen.render_chat([{"role": "user", "content": "Hi"}]) == "user: Hi\nassistant:"
