"""The built-in MoE generator: a DeepSeekMoE-style decoder that loads HF checkpoints.

Importing this package does not import torch; the loaders below do, when called.

Modules: `config` (MoEConfig and the HF config readers), `modules` (norm, RoPE, attention,
KV cache), `routing` (router, grouped expert dispatch), `model`, `loading` (checkpoints),
`tokenizer`, `generation` (sampling, decode loop), `generator` (the text-level
`MoEGenerator`), `quantization` (INT8), `batching` (dynamic batching), `training`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from guardrails.generators.moe.errors import CheckpointError, GenerationError, MoEError

if TYPE_CHECKING:
    from guardrails.generators.moe.generator import MoEGenerator

BUNDLED_DIR = Path(__file__).parent / "bundled"
BUNDLED_NAME = "guardrails-moe-pydoc"


def load_pretrained(
    path: str | Path, *, quantize: bool = False, name: str | None = None
) -> MoEGenerator:
    """Load a checkpoint directory (config.json, safetensors, tokenizer.json) as a generator.

    Args:
        path: a Mixtral, Qwen2-MoE, DeepSeek-V3 or native checkpoint directory.
        quantize: convert linears and experts to INT8 dynamic quantization.
        name: the generator's name (defaults to the directory name).

    Raises:
        CheckpointError: a file or tensor is missing or does not fit the config.
    """
    from guardrails.generators.moe.generator import MoEGenerator
    from guardrails.generators.moe.loading import TOKENIZER_FILE, load_model
    from guardrails.generators.moe.quantization import quantize_model
    from guardrails.generators.moe.tokenizer import BPETokenizer

    path = Path(path)
    model = load_model(path)
    tokenizer = BPETokenizer.from_file(
        path / TOKENIZER_FILE, eos_token_id=model.config.eos_token_id
    )
    if quantize:
        quantize_model(model)
    return MoEGenerator(model, tokenizer, name=name or path.name)


def bundled_available() -> bool:
    """Whether the bundled checkpoint is installed and torch can be imported (no import)."""
    import importlib.util

    files = ("config.json", "model.safetensors", "tokenizer.json")
    has_files = all((BUNDLED_DIR / f).is_file() for f in files)
    return has_files and importlib.util.find_spec("torch") is not None


def load_bundled(*, quantize: bool = False) -> MoEGenerator:
    """The small model trained on Python documentation that ships inside this package."""
    return load_pretrained(BUNDLED_DIR, quantize=quantize, name=BUNDLED_NAME)


__all__ = [
    "BUNDLED_DIR",
    "BUNDLED_NAME",
    "CheckpointError",
    "GenerationError",
    "MoEError",
    "bundled_available",
    "load_bundled",
    "load_pretrained",
]
