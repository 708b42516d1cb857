"""Token-level generation: sampling parameters, next-token sampling, the decode loop.

Prompts of different lengths are left-padded into one batch; the model's key mask hides the
padding and positions count real tokens only, so a row's output does not depend on its
neighbours. Prompts are never truncated: a prompt that fills the context window raises
`GenerationError`, and ``max_new_tokens`` is clipped to the room the context has left.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from guardrails.generators.moe.errors import GenerationError
from guardrails.generators.moe.model import MoEForCausalLM

__all__ = [
    "SamplingParams",
    "check_prompts",
    "generate_ids",
    "iter_tokens",
    "left_pad",
    "make_rng",
    "sample_next",
]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to pick tokens. ``temperature=0`` is greedy; ``top_k=0`` and ``top_p=1`` disable.

    Every invalid field is reported at once in one `GenerationError`.
    """

    max_new_tokens: int = 64
    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if not isinstance(self.temperature, int | float) or not (
            math.isfinite(self.temperature) and self.temperature >= 0
        ):
            problems.append(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            problems.append(f"top_k must be an int >= 0, got {self.top_k!r}")
        if not isinstance(self.top_p, int | float) or not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            problems.append(f"stop sequences must be non-empty strings, got {self.stop!r}")
        if self.seed is not None and not isinstance(self.seed, int):
            problems.append(f"seed must be an int, got {self.seed!r}")
        if problems:
            raise GenerationError("invalid sampling parameters: " + "; ".join(problems))


def make_rng(seed: int | None) -> torch.Generator | None:
    """A seeded CPU generator, or None to use torch's global one."""
    return None if seed is None else torch.Generator().manual_seed(seed)


def sample_next(
    logits: Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> Tensor:
    """Pick one token per row of ``logits`` [B, V] → [B]."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    scores = logits.to(torch.float32) / params.temperature
    if params.top_k and params.top_k < scores.shape[-1]:
        kth = scores.topk(params.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        probs = sorted_scores.softmax(dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (the first stays)
        drop = (probs.cumsum(dim=-1) - probs) >= params.top_p
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(1, order, sorted_scores)
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def check_prompts(model: MoEForCausalLM, prompts: Sequence[Sequence[int]]) -> int:
    """Validate token prompts; returns how many new tokens the context still allows."""
    if not prompts:
        raise GenerationError("no prompts given")
    context = model.config.max_position_embeddings
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise GenerationError(f"prompt {i} is empty")
        if len(p) >= context:
            raise GenerationError(
                f"prompt {i} has {len(p)} tokens; the context window is {context} "
                "(prompts are not truncated: shorten the prompt)"
            )
        bad = [t for t in p if not 0 <= t < model.config.vocab_size]
        if bad:
            raise GenerationError(f"prompt {i} has token ids outside the vocabulary: {bad[:5]}")
    return context - max(len(p) for p in prompts)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """(ids [B, L], mask [B, L]) with every prompt right-aligned."""
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[i, longest - len(p) :] = True
    return ids, mask


def iter_tokens(
    model: MoEForCausalLM, prompts: Sequence[Sequence[int]], params: SamplingParams
) -> Iterator[list[int | None]]:
    """Yield, per decode step, the new token of each row (None once a row has ended).

    A row ends after emitting the end-of-text token (unless ``ignore_eos``); the loop ends
    when every row has, or after ``max_new_tokens`` (clipped to the context). Stop strings are
    the caller's business: it simply stops iterating.
    """
    room = check_prompts(model, prompts)
    budget = min(params.max_new_tokens, room)
    eos = None if params.ignore_eos else model.config.eos_token_id
    rng = make_rng(params.seed)
    ids, mask = left_pad(prompts)
    cache = model.new_cache()
    done = [False] * len(prompts)
    # Inference mode is entered per step, never held across a ``yield``: a consumer may
    # resume this generator on another thread (a server's thread pool), and the mode is
    # thread-local, so a forward would otherwise run outside it on tensors made inside it.
    with torch.inference_mode():
        logits = model(ids, attention_mask=mask, cache=cache, last_only=True)[:, -1]
    for step in range(budget):
        with torch.inference_mode():
            nxt = sample_next(logits, params, rng)
        out: list[int | None] = []
        for i, tok in enumerate(nxt.tolist()):
            out.append(None if done[i] else tok)
            if tok == eos:
                done[i] = True
        yield out
        if all(done) or step == budget - 1:
            return
        with torch.inference_mode():
            logits = model(nxt[:, None], cache=cache, last_only=True)[:, -1]


def generate_ids(
    model: MoEForCausalLM, prompts: Sequence[Sequence[int]], params: SamplingParams
) -> list[list[int]]:
    """New token ids per prompt, the end-of-text token excluded."""
    eos = None if params.ignore_eos else model.config.eos_token_id
    out: list[list[int]] = [[] for _ in prompts]
    for step in iter_tokens(model, prompts, params):
        for i, tok in enumerate(step):
            if tok is not None and tok != eos:
                out[i].append(tok)
    return out
