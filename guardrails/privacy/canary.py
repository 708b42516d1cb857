"""Canary exposure (Carlini et al. 2019, "The Secret Sharer").

A canary is a sentence with a random secret, e.g. "my account number is 4 8 1 5 1 6". After
training on data that contains it, the canary is ranked by the model's loss among
``candidates`` sentences that differ only in the secret; exposure = log2(candidates) −
log2(rank). A model that never saw the canary ranks it at random (expected exposure
log2(e) ≈ 1.44 bits); one that memorised it ranks it first (exposure = log2(candidates)).
The candidate set is a random sample of the secret space (the true secret plus
``candidates − 1`` others), the sampling estimate the paper also uses.
Importing this module imports torch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from guardrails.privacy.generator import encode_records, per_example_nll

PREFIX = "my account number is"


@dataclass(frozen=True, slots=True)
class Exposure:
    """One canary's rank among its candidates and its exposure in bits."""

    secret: str
    rank: int
    candidates: int
    exposure: float


def make_secrets(count: int, *, digits: int, rng: random.Random) -> list[str]:
    """``count`` distinct random secrets of ``digits`` space-separated digits."""
    out: set[str] = set()
    while len(out) < count:
        out.add(" ".join(str(rng.randrange(10)) for _ in range(digits)))
    return sorted(out)


def canary(secret: str) -> str:
    """The sentence that carries ``secret``."""
    return f"{PREFIX} {secret}"


def insert_canaries(
    records: Sequence[str], secrets: Sequence[str], *, repeats: int, rng: random.Random
) -> list[str]:
    """``records`` with each canary added ``repeats`` times as its own record, shuffled."""
    out = list(records) + [canary(s) for s in secrets for _ in range(repeats)]
    rng.shuffle(out)
    return out


def sequence_losses(
    model: Any, texts: Sequence[str], tokenizer: Any, *, seq_len: int = 32
) -> torch.Tensor:
    """Mean token loss of each text under ``model`` (lower = more likely)."""
    x, y = encode_records(texts, tokenizer, seq_len=seq_len)
    model.train(False)
    parts = []
    with torch.inference_mode():
        for i in range(0, len(x), 256):
            parts.append(per_example_nll(model(x[i : i + 256]), y[i : i + 256]))
    return torch.cat(parts)


def exposure(
    model: Any, tokenizer: Any, secret: str, *, candidates: int, digits: int, rng: random.Random
) -> Exposure:
    """Exposure of ``secret``'s canary among ``candidates`` (itself + random others)."""
    others: set[str] = set()
    while len(others) < candidates - 1:
        s = " ".join(str(rng.randrange(10)) for _ in range(digits))
        if s != secret:
            others.add(s)
    texts = [canary(secret)] + [canary(s) for s in sorted(others)]
    losses = sequence_losses(model, texts, tokenizer)
    rank = 1 + int((losses[1:] < losses[0]).sum())
    return Exposure(secret, rank, candidates, math.log2(candidates) - math.log2(rank))


__all__ = [
    "PREFIX",
    "Exposure",
    "canary",
    "exposure",
    "insert_canaries",
    "make_secrets",
    "sequence_losses",
]
