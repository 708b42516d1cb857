"""Reading and writing checkpoints: Hugging Face layouts in, the native layout out.

A checkpoint is a directory with ``config.json`` and either ``model.safetensors`` or a
sharded ``model.safetensors.index.json`` plus its shards. Per-expert tensors of the Hugging
Face layouts (``experts.{j}.w1/w2/w3`` for Mixtral, ``experts.{j}.gate_proj/up_proj/down_proj``
for Qwen2-MoE and DeepSeek-V3) are stacked into the model's [E, ...] expert weights. Every
problem raises `CheckpointError` naming the file and the tensor.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from guardrails.generators.moe.config import MoEConfig, config_from_json
from guardrails.generators.moe.errors import CheckpointError
from guardrails.generators.moe.model import MoEForCausalLM

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"

_EXPERT = re.compile(
    r"^layers\.(\d+)\.mlp\.experts\.(\d+)\.(w1|w2|w3|gate_proj|up_proj|down_proj)\.weight$"
)
_EXPERT_PART = {"w1": "gate", "w3": "up", "w2": "down", "gate_proj": "gate", "up_proj": "up"}
_EXPERT_PART["down_proj"] = "down"
_LAYER = re.compile(r"^layers\.(\d+)\.")


def read_config(path: Path) -> MoEConfig:
    """Parse ``path/config.json`` into a `MoEConfig`."""
    file = path / CONFIG_FILE
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory does not exist")
    if not file.is_file():
        raise CheckpointError(f"{file}: missing config file")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    return config_from_json(data, source=str(file))


def _weight_files(path: Path) -> dict[str, Path]:
    """Map every tensor name to the file that holds it."""
    single, index = path / WEIGHTS_FILE, path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index ({exc})") from exc
        files = {name: path / str(fname) for name, fname in weight_map.items()}
        for shard in sorted(set(files.values())):
            if not shard.is_file():
                raise CheckpointError(f"{shard}: shard listed in {index.name} is missing")
        return files
    if single.is_file():
        with safe_open(str(single), framework="pt") as f:
            return dict.fromkeys(f.keys(), single)
    raise CheckpointError(f"{path}: no {WEIGHTS_FILE} or {INDEX_FILE}")


def _read_tensors(files: dict[str, Path]) -> dict[str, tuple[Tensor, Path]]:
    by_file: dict[Path, list[str]] = {}
    for name, file in files.items():
        by_file.setdefault(file, []).append(name)
    out: dict[str, tuple[Tensor, Path]] = {}
    for file, names in by_file.items():
        try:
            with safe_open(str(file), framework="pt") as f:
                present = set(f.keys())
                for name in names:
                    if name not in present:
                        raise CheckpointError(f"{file}: tensor {name!r} listed in index is absent")
                    out[name] = (f.get_tensor(name), file)
        except (OSError, RuntimeError) as exc:  # safetensors reports corrupt files this way
            raise CheckpointError(f"{file}: cannot read safetensors ({exc})") from exc
    return out


def _rename(key: str) -> str:
    if key.startswith("model."):
        key = key[len("model.") :]
    key = key.replace(".block_sparse_moe.", ".mlp.")
    return key.replace(".mlp.shared_expert.", ".mlp.shared_experts.")


def _to_model_state(
    cfg: MoEConfig, raw: dict[str, tuple[Tensor, Path]], dtype: torch.dtype
) -> tuple[dict[str, Tensor], dict[str, Path]]:
    """Rename to the model's keys and stack per-expert tensors; returns (state, origins)."""
    state: dict[str, Tensor] = {}
    origin: dict[str, Path] = {}
    experts: dict[tuple[int, int, str], tuple[Tensor, Path]] = {}
    for key, (tensor, file) in raw.items():
        name = _rename(key)
        layer = _LAYER.match(name)
        if layer and int(layer.group(1)) >= cfg.num_layers:
            continue  # e.g. DeepSeek-V3's multi-token-prediction layer, unused for decoding
        if name.endswith("rotary_emb.inv_freq"):
            continue
        m = _EXPERT.match(name)
        if m:
            experts[(int(m.group(1)), int(m.group(2)), _EXPERT_PART[m.group(3)])] = (tensor, file)
            continue
        state[name] = tensor.to(dtype)
        origin[name] = file
    layers = sorted({k[0] for k in experts})
    for li in layers:
        gate_up, down = [], []
        files: set[Path] = set()
        for j in range(cfg.num_experts):
            parts = {}
            for part in ("gate", "up", "down"):
                found = experts.get((li, j, part))
                if found is None:
                    where = ", ".join(sorted({str(f) for f in {p for _, p in experts.values()}}))
                    raise CheckpointError(
                        f"{where}: missing tensor for layer {li} expert {j} ({part} projection)"
                    )
                parts[part] = found[0]
                files.add(found[1])
            gate_up.append(torch.cat((parts["gate"], parts["up"]), dim=0))
            down.append(parts["down"])
        src = next(iter(sorted(files)))
        for name, stacked in (
            (f"layers.{li}.mlp.experts.gate_up_proj", gate_up),
            (f"layers.{li}.mlp.experts.down_proj", down),
        ):
            try:
                state[name] = torch.stack(stacked).to(dtype)
            except RuntimeError as exc:
                raise CheckpointError(f"{src}: experts of layer {li} differ in shape") from exc
            origin[name] = src
    return state, origin


def load_model(path: str | Path, *, dtype: torch.dtype = torch.float32) -> MoEForCausalLM:
    """Load a checkpoint directory into a `MoEForCausalLM` in eval mode.

    Raises:
        CheckpointError: missing/unreadable files, unknown architecture, missing, unexpected
            or wrongly shaped tensors (the message names the file and the tensor).
    """
    path = Path(path)
    cfg = read_config(path)
    raw = _read_tensors(_weight_files(path))
    state, origin = _to_model_state(cfg, raw, dtype)
    model = MoEForCausalLM(cfg)
    expected = model.state_dict()
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
        if "embed_tokens.weight" in state:
            state["lm_head.weight"] = state["embed_tokens.weight"]
    optional = {k for k in expected if k.endswith("e_score_correction_bias")}
    for key in optional - state.keys():
        state[key] = torch.zeros_like(expected[key])
    weights_where = str(path / WEIGHTS_FILE)
    missing = sorted(expected.keys() - state.keys())
    if missing:
        raise CheckpointError(f"{weights_where}: missing tensors {missing[:8]}")
    unexpected = sorted(state.keys() - expected.keys())
    if unexpected:
        where = origin.get(unexpected[0], weights_where)
        raise CheckpointError(f"{where}: unexpected tensors {unexpected[:8]}")
    for key, want in expected.items():
        got = state[key]
        if got.shape != want.shape:
            raise CheckpointError(
                f"{origin.get(key, weights_where)}: tensor {key!r} has shape "
                f"{tuple(got.shape)}, the config expects {tuple(want.shape)}"
            )
    model.load_state_dict(state, strict=True)
    model.to(dtype)
    model.eval()
    return model


def save_checkpoint(
    model: MoEForCausalLM, out: str | Path, *, dtype: torch.dtype = torch.float16
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` in the native layout; returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    state: dict[str, Tensor] = {}
    for key, tensor in model.state_dict().items():
        if model.config.tie_word_embeddings and key == "lm_head.weight":
            continue
        state[key] = tensor.detach().to(dtype).contiguous()
    meta: dict[str, str] = {"format": "pt"}
    save_file(state, str(out / WEIGHTS_FILE), metadata=meta)
    return out


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """Config of a checkpoint as a plain dict (for the CLI and model cards)."""
    return read_config(Path(path)).to_dict()


__all__ = [
    "CONFIG_FILE",
    "INDEX_FILE",
    "TOKENIZER_FILE",
    "WEIGHTS_FILE",
    "checkpoint_info",
    "load_model",
    "read_config",
    "save_checkpoint",
]
