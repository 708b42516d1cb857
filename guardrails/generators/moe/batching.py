"""Dynamic batching: concurrent requests share one running batch of decode steps.

A background thread owns the model. Each iteration it admits waiting requests (prefilled
together, left-padded), merges their KV caches into the running batch, samples one token for
every row with that row's own parameters and seeded generator, drops rows that finished or
whose consumer went away, and runs one batched decode step. A request that arrives while
others are decoding joins at the next step instead of waiting for them to finish.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from guardrails.generators.moe.errors import GenerationError
from guardrails.generators.moe.generation import (
    SamplingParams,
    check_prompts,
    left_pad,
    make_rng,
    sample_next,
)
from guardrails.generators.moe.model import MoEForCausalLM
from guardrails.generators.moe.modules import KVCache

__all__ = ["BatchingEngine"]

_DONE = object()


@dataclass(eq=False)
class _Request:
    ids: list[int]
    params: SamplingParams
    budget: int
    rng: torch.Generator | None
    out: queue.Queue[object] = field(default_factory=queue.Queue)
    produced: int = 0
    cancelled: bool = False


class BatchingEngine:
    """Serve many concurrent token streams from one decode loop.

    Args:
        model: the model; the engine's thread is its only user once started.
        max_batch: most rows decoded together; later requests wait for a free row.
    """

    def __init__(self, model: MoEForCausalLM, *, max_batch: int = 16) -> None:
        if max_batch < 1:
            raise GenerationError(f"max_batch must be >= 1, got {max_batch}")
        self.model = model
        self.max_batch = max_batch
        self._inbox: queue.Queue[_Request | None] = queue.Queue()
        self._closed = threading.Event()
        self.steps = 0
        self.max_rows_seen = 0
        self._thread = threading.Thread(target=self._run, name="moe-batching", daemon=True)
        self._thread.start()

    def submit(self, ids: list[int], params: SamplingParams) -> Generator[int, None, None]:
        """Queue a prompt; returns an iterator of its new token ids (ends at eos or budget).

        Closing the iterator early (e.g. on a stop sequence) frees its row at the next step.
        """
        if self._closed.is_set():
            raise GenerationError("the batching engine is closed")
        room = check_prompts(self.model, [ids])
        req = _Request(list(ids), params, min(params.max_new_tokens, room), make_rng(params.seed))
        self._inbox.put(req)
        return self._tokens(req)

    @staticmethod
    def _tokens(req: _Request) -> Generator[int, None, None]:
        try:
            while True:
                item = req.out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, int)
                yield item
        finally:
            req.cancelled = True

    def close(self) -> None:
        """Stop the loop thread (requests still running get their stream ended)."""
        self._closed.set()
        self._inbox.put(None)
        self._thread.join(timeout=10)

    def _admit(self, active: list[_Request]) -> list[_Request]:
        new: list[_Request] = []
        block = not active
        while len(active) + len(new) < self.max_batch:
            try:
                item = self._inbox.get(block=block, timeout=0.5 if block else None)
            except queue.Empty:
                break
            if item is None:
                break
            new.append(item)
            block = False
        return new

    def _run(self) -> None:
        active: list[_Request] = []
        cache: KVCache | None = None
        logits: Tensor | None = None
        with torch.inference_mode():
            while not self._closed.is_set():
                try:
                    new = self._admit(active)
                    if new:
                        ids, mask = left_pad([r.ids for r in new])
                        fresh = self.model.new_cache()
                        new_logits = self.model(
                            ids, attention_mask=mask, cache=fresh, last_only=True
                        )
                        cache = fresh if cache is None else KVCache.merge([cache, fresh])
                        logits = (
                            new_logits[:, -1]
                            if logits is None
                            else torch.cat((logits, new_logits[:, -1]), 0)
                        )
                        active.extend(new)
                    if not active or logits is None or cache is None:
                        continue
                    self.max_rows_seen = max(self.max_rows_seen, len(active))
                    keep: list[int] = []
                    tokens: list[int] = []
                    for i, req in enumerate(active):
                        if req.cancelled:
                            continue
                        tok = int(sample_next(logits[i : i + 1], req.params, req.rng)[0])
                        req.out.put(tok)
                        req.produced += 1
                        eos = None if req.params.ignore_eos else self.model.config.eos_token_id
                        if tok == eos or req.produced >= req.budget:
                            req.out.put(_DONE)
                            continue
                        keep.append(i)
                        tokens.append(tok)
                    if len(keep) != len(active):
                        cache.select(torch.tensor(keep, dtype=torch.long))
                        active = [active[i] for i in keep]
                    if not active:
                        cache, logits = None, None
                        continue
                    step_ids = torch.tensor(tokens, dtype=torch.long)[:, None]
                    logits = self.model(step_ids, cache=cache, last_only=True)[:, -1]
                    self.steps += 1
                except Exception as exc:  # hand the failure to every waiting caller
                    for req in active:
                        req.out.put(exc)
                    active, cache, logits = [], None, None
        for req in active:
            req.out.put(_DONE)
