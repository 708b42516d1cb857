"""Byte-level BPE tokenizers through the `tokenizers` library: loading and training."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from guardrails.generators.moe.errors import CheckpointError

EOS_TOKEN = "<|endoftext|>"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

__all__ = [
    "EOS_TOKEN",
    "TOKENIZER_CONFIG_FILE",
    "BPETokenizer",
    "ChatTemplate",
    "read_chat_template",
    "render_plain_chat",
    "train_bpe",
]


class BPETokenizer:
    """A `tokenizers.Tokenizer` with the end-of-text id the generator stops on."""

    def __init__(self, tokenizer: Tokenizer, *, eos_token_id: int | None = None) -> None:
        self.tokenizer = tokenizer
        if eos_token_id is None:
            eos_token_id = tokenizer.token_to_id(EOS_TOKEN)
        self.eos_token_id: int | None = eos_token_id

    @classmethod
    def from_file(cls, path: str | Path, *, eos_token_id: int | None = None) -> BPETokenizer:
        """Load a ``tokenizer.json``; a missing or unreadable file raises `CheckpointError`."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: missing tokenizer file")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise CheckpointError(f"{path}: cannot read tokenizer ({exc})") from exc
        return cls(tok, eos_token_id=eos_token_id)

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (with the tokenizer's own special-token template)."""
        return list(self.tokenizer.encode(text).ids)

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``; special tokens are dropped, a cut UTF-8 sequence shows as U+FFFD."""
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))


def train_bpe(texts: Iterable[str], *, vocab_size: int) -> BPETokenizer:
    """Train a byte-level BPE tokenizer (GPT-2 style, every byte representable)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(tok)


@dataclass(frozen=True, slots=True)
class ChatTemplate:
    """A Hugging Face chat template (Jinja) with the special tokens it may refer to."""

    source: str
    bos_token: str = ""
    eos_token: str = ""

    def render(
        self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True
    ) -> str:
        """The prompt text for ``messages``, as `transformers`' ``apply_chat_template``.

        Rendered in Jinja's immutable sandbox (a template is checkpoint data, not code).

        Raises:
            CheckpointError: the template does not compile or raises while rendering.
        """
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        try:
            return env.from_string(self.source).render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TemplateError as exc:
            raise CheckpointError(f"the chat template failed: {exc}") from exc


def render_plain_chat(messages: Sequence[Mapping[str, Any]]) -> str:
    """The fallback without a template: ``role: text`` lines, then ``assistant:``."""
    lines = [f"{m.get('role', 'user')}: {m.get('content') or ''}" for m in messages]
    return "\n".join([*lines, "assistant:"])


def _token_text(value: Any) -> str:
    if isinstance(value, dict):  # {"content": "<s>", ...} in older configs
        value = value.get("content")
    return value if isinstance(value, str) else ""


def read_chat_template(path: str | Path) -> ChatTemplate | None:
    """The chat template of a checkpoint's ``tokenizer_config.json`` (None when absent).

    A list of named templates picks the one named ``default``. A file that is not JSON or a
    template that is not a string raises `CheckpointError`.
    """
    file = Path(path) / TOKENIZER_CONFIG_FILE
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from exc
    source = data.get("chat_template") if isinstance(data, dict) else None
    if source is None:
        return None
    if isinstance(source, list):
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        source = named.get("default")
    if not isinstance(source, str):
        raise CheckpointError(f"{file}: chat_template is not a string (or has no 'default')")
    return ChatTemplate(
        source, _token_text(data.get("bos_token")), _token_text(data.get("eos_token"))
    )
