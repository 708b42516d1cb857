"""Byte-level BPE tokenizers through the `tokenizers` library: loading and training."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from guardrails.generators.moe.errors import CheckpointError

EOS_TOKEN = "<|endoftext|>"


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


__all__ = [
    "EOS_TOKEN",
    "BPETokenizer",
    "train_bpe",
]
