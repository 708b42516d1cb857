"""Reading and writing checkpoints: Hugging Face layouts in, the native layout out.

A checkpoint is a directory with ``config.json`` and either ``model.safetensors`` or a
sharded ``model.safetensors.index.json`` plus its shards. Per-expert tensors of the Hugging
Face layouts (``experts.{j}.w1/w2/w3`` for Mixtral, ``experts.{j}.gate_proj/up_proj/down_proj``
for Qwen2-MoE and DeepSeek-V3) are stacked into the model's [E, ...] expert weights. Every
problem raises `CheckpointError` naming the file and the tensor.
"""

from __future__ import annotations

import json
import math
import mmap
import re
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from guardrails.generators.moe.config import MoEConfig, config_from_json
from guardrails.generators.moe.errors import CheckpointError
from guardrails.generators.moe.model import MoEForCausalLM
from guardrails.generators.moe.modules import RotaryEmbedding

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
        return dict.fromkeys(_read_header(single), single)
    raise CheckpointError(f"{path}: no {WEIGHTS_FILE} or {INDEX_FILE}")


_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER = 100 * 2**20


@dataclass(frozen=True, slots=True)
class _Entry:
    """Where one tensor lies in a safetensors file (absolute byte offsets)."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int


def _read_header(file: Path) -> dict[str, _Entry]:
    """The tensor table of a safetensors file, checked against the file's size."""
    try:
        size = file.stat().st_size
        with file.open("rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or n > min(_MAX_HEADER, size - 8):
                raise CheckpointError(f"{file}: cannot read safetensors (bad header length)")
            table = json.loads(f.read(n))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: cannot read safetensors ({exc})") from exc
    if not isinstance(table, dict):
        raise CheckpointError(f"{file}: cannot read safetensors (header is not an object)")
    entries: dict[str, _Entry] = {}
    for name, info in table.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{file}: tensor {name!r} has a bad header entry") from exc
        nbytes = math.prod(shape) * dtype.itemsize
        if end - begin != nbytes or begin < 0 or 8 + n + end > size:
            raise CheckpointError(f"{file}: tensor {name!r} lies outside the file or is cut")
        entries[name] = _Entry(file, dtype, shape, 8 + n + begin, 8 + n + end)
    return entries


class _TensorReader:
    """Reads tensors from safetensors files without holding more than one extra copy.

    `view` maps a tensor straight from the file (copy-on-write memory map: its pages are
    the page cache's, read when first touched); `read_into` reads the bytes into a tensor the
    caller allocated (a slice of a stacked expert weight), through one temporary only when
    the dtype changes.
    """

    def __init__(self) -> None:
        self._maps: dict[Path, mmap.mmap] = {}
        self._files: dict[Path, BufferedReader] = {}

    def view(self, entry: _Entry) -> Tensor:
        if entry.start == entry.end:
            return torch.empty(entry.shape, dtype=entry.dtype)
        mapped = self._maps.get(entry.file)
        if mapped is None:
            with entry.file.open("rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            self._maps[entry.file] = mapped
        count = math.prod(entry.shape)
        flat = torch.frombuffer(mapped, dtype=entry.dtype, count=count, offset=entry.start)
        return flat.view(entry.shape)

    def read(self, entry: _Entry, dtype: torch.dtype) -> Tensor:
        """The tensor in ``dtype``: a file view when the dtype matches, else a converted copy."""
        if entry.dtype == dtype:
            return self.view(entry)
        out = torch.empty(entry.shape, dtype=dtype)
        self.read_into(entry, out)
        return out

    def read_into(self, entry: _Entry, out: Tensor) -> None:
        if tuple(out.shape) != entry.shape:
            raise CheckpointError(
                f"{entry.file}: a tensor has shape {entry.shape}, expected {tuple(out.shape)}"
            )
        target = out if out.dtype == entry.dtype else torch.empty(entry.shape, dtype=entry.dtype)
        f = self._files.get(entry.file)
        if f is None:
            f = self._files[entry.file] = entry.file.open("rb")
        f.seek(entry.start)
        buffer = memoryview(target.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]
        if f.readinto(buffer) != entry.end - entry.start:
            raise CheckpointError(f"{entry.file}: cannot read safetensors (file is cut)")
        if target is not out:
            out.copy_(target)

    def close(self) -> None:
        """Close the files read with `read_into` (memory maps live as long as their views)."""
        for f in self._files.values():
            f.close()
        self._files.clear()


def _entries(files: dict[str, Path]) -> dict[str, _Entry]:
    headers = {file: _read_header(file) for file in sorted(set(files.values()))}
    out: dict[str, _Entry] = {}
    for name, file in files.items():
        entry = headers[file].get(name)
        if entry is None:
            raise CheckpointError(f"{file}: tensor {name!r} listed in index is absent")
        out[name] = entry
    return out


def _rename(key: str) -> str:
    if key.startswith("model."):
        key = key[len("model.") :]
    key = key.replace(".block_sparse_moe.", ".mlp.")
    return key.replace(".mlp.shared_expert.", ".mlp.shared_experts.")


def _to_model_state(
    cfg: MoEConfig,
    entries: dict[str, _Entry],
    expected: dict[str, Tensor],
    reader: _TensorReader,
    dtype: torch.dtype,
) -> tuple[dict[str, Tensor], dict[str, Path]]:
    """Rename to the model's keys and stack per-expert tensors; returns (state, origins).

    Per-expert tensors are read straight into their slice of the stacked weight, so loading
    never holds a checkpoint tensor and its stacked copy at once.
    """
    state: dict[str, Tensor] = {}
    origin: dict[str, Path] = {}
    experts: dict[tuple[int, int, str], _Entry] = {}
    plain: dict[str, _Entry] = {}
    for key, entry in entries.items():
        name = _rename(key)
        layer = _LAYER.match(name)
        if layer and int(layer.group(1)) >= cfg.num_layers:
            continue  # e.g. DeepSeek-V3's multi-token-prediction layer, unused for decoding
        if name.endswith("rotary_emb.inv_freq"):
            continue
        m = _EXPERT.match(name)
        if m:
            experts[(int(m.group(1)), int(m.group(2)), _EXPERT_PART[m.group(3)])] = entry
            continue
        plain[name] = entry
    for name, want in expected.items():  # before reading anything, in the model's order
        found = plain.get(name)
        if found is not None and tuple(want.shape) != found.shape:
            raise CheckpointError(
                f"{found.file}: tensor {name!r} has shape {found.shape}, "
                f"the config expects {tuple(want.shape)}"
            )
    for name, entry in plain.items():
        state[name] = reader.read(entry, dtype)
        origin[name] = entry.file
    for li in sorted({k[0] for k in experts}):
        gate_up_name = f"layers.{li}.mlp.experts.gate_up_proj"
        down_name = f"layers.{li}.mlp.experts.down_proj"
        gate_up_shape = expected.get(gate_up_name, torch.empty(0, 0, 0)).shape
        down_shape = expected.get(down_name, torch.empty(0, 0, 0)).shape
        src = min(e.file for (layer_idx, _, _), e in experts.items() if layer_idx == li)
        gate_up = torch.empty(gate_up_shape, dtype=dtype)
        down = torch.empty(down_shape, dtype=dtype)
        inner = gate_up_shape[1] // 2
        for j in range(cfg.num_experts):
            for part in ("gate", "up", "down"):
                found = experts.get((li, j, part))
                if found is None:
                    where = ", ".join(sorted({str(e.file) for e in experts.values()}))
                    raise CheckpointError(
                        f"{where}: missing tensor for layer {li} expert {j} ({part} projection)"
                    )
                if j >= gate_up_shape[0]:
                    raise CheckpointError(f"{src}: layer {li} has more experts than the config")
                out = {
                    "gate": gate_up[j, :inner],
                    "up": gate_up[j, inner:],
                    "down": down[j],
                }[part]
                if tuple(out.shape) != found.shape:
                    raise CheckpointError(
                        f"{found.file}: experts of layer {li} differ in shape from the config "
                        f"(expert {j} {part}: {found.shape}, expected {tuple(out.shape)})"
                    )
                reader.read_into(found, out)
        state[gate_up_name], state[down_name] = gate_up, down
        origin[gate_up_name] = origin[down_name] = src
    return state, origin


def load_model(path: str | Path, *, dtype: torch.dtype = torch.float32) -> MoEForCausalLM:
    """Load a checkpoint directory into a `MoEForCausalLM` in eval mode.

    Args:
        path: the checkpoint directory.
        dtype: the weights' dtype in memory (``torch.float32``, ``bfloat16`` or ``float16``).
            Tensors stored in that dtype are memory-mapped from the file, not copied; the
            model is built without allocating weights of its own first, so peak memory
            stays near the size of the weights.

    Raises:
        CheckpointError: missing/unreadable files, unknown architecture, missing, unexpected
            or wrongly shaped tensors (the message names the file and the tensor).
    """
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise CheckpointError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    path = Path(path)
    cfg = read_config(path)
    entries = _entries(_weight_files(path))
    with torch.device("meta"):
        model = MoEForCausalLM(cfg)
    expected = model.state_dict()
    reader = _TensorReader()
    try:
        state, origin = _to_model_state(cfg, entries, expected, reader, dtype)
    finally:
        reader.close()
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
        if "embed_tokens.weight" in state:
            state["lm_head.weight"] = state["embed_tokens.weight"]
    optional = {k for k in expected if k.endswith("e_score_correction_bias")}
    for key in optional - state.keys():
        state[key] = torch.zeros(expected[key].shape, dtype=torch.float32)
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
    for key in optional:  # the router's bias stays float32, like its scores
        state[key] = state[key].to(torch.float32)
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    # the rotary frequencies are computed, not stored: build them for real off the meta device
    model.rope = RotaryEmbedding(
        cfg.rope_dim, cfg.rope_theta, interleave=cfg.rope_interleave, yarn=cfg.rope_yarn
    )
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
