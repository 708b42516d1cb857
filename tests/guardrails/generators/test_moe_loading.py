"""Checkpoint loading: sharded files, native round trip, and errors that name file and tensor."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file, save_file  # noqa: E402

from guardrails.generators.moe import CheckpointError, load_pretrained  # noqa: E402
from guardrails.generators.moe.loading import load_model, save_checkpoint  # noqa: E402


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
