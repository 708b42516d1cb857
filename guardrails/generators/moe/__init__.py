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
    import torch

    from guardrails.generators.moe.generator import MoEGenerator
    from guardrails.generators.moe.tokenizer import BPETokenizer

BUNDLED_DIR = Path(__file__).parent / "bundled"
BUNDLED_NAME = "guardrails-moe-pydoc"


def load_pretrained(
    path: str | Path,
    *,
    quantize: bool = False,
    name: str | None = None,
    dtype: str | torch.dtype = "float32",
    tokenizer: BPETokenizer | str | Path | None = "auto",
) -> MoEGenerator:
    """Load a checkpoint directory (config.json, safetensors, tokenizer.json) as a generator.

    Args:
        path: a Mixtral, Qwen2-MoE, DeepSeek-V3 or native checkpoint directory.
        quantize: convert linears and experts to INT8 (the rest of the model runs in float32).
        name: the generator's name (defaults to the directory name).
        dtype: weights in memory: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (or the
            torch dtype). Tensors stored in that dtype are memory-mapped, not copied.
        tokenizer: ``"auto"`` reads ``tokenizer.json`` from the checkpoint (an error when
            it is missing); a `BPETokenizer` or a path to a ``tokenizer.json`` uses that one;
            ``None`` loads no tokenizer: the generator then takes and returns token ids
            (`MoEGenerator.generate_ids`). A chat template is read from
            ``tokenizer_config.json`` when the checkpoint has one.

    Raises:
        CheckpointError: a file or tensor is missing or does not fit the config, or an
            unsupported dtype.
    """
    import torch

    from guardrails.generators.moe.generator import MoEGenerator
    from guardrails.generators.moe.loading import TOKENIZER_FILE, load_model
    from guardrails.generators.moe.quantization import quantize_model
    from guardrails.generators.moe.tokenizer import BPETokenizer, read_chat_template

    path = Path(path)
    if isinstance(dtype, str):
        resolved = {"float32": torch.float32, "bfloat16": torch.bfloat16}
        resolved["float16"] = torch.float16
        if dtype not in resolved:
            raise CheckpointError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
        dtype = resolved[dtype]
    model = load_model(path, dtype=dtype)
    eos = model.config.eos_token_id
    tok: BPETokenizer | None
    if isinstance(tokenizer, BPETokenizer) or tokenizer is None:
        tok = tokenizer
    else:
        file = path / TOKENIZER_FILE if tokenizer == "auto" else Path(tokenizer)
        if tokenizer == "auto" and not file.is_file():
            raise CheckpointError(
                f"{file}: missing tokenizer file (pass tokenizer=<a tokenizer.json or "
                "BPETokenizer>, or tokenizer=None to generate from token ids)"
            )
        tok = BPETokenizer.from_file(file, eos_token_id=eos)
    if quantize:
        quantize_model(model)
    template = read_chat_template(path)
    return MoEGenerator(model, tok, name=name or path.name, chat_template=template)


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
