"""Dynamic micro-batching: concurrent async callers share one forward pass.

A caller's texts join a queue; the first caller starts a collector task that waits up to
``max_wait_s`` (or until ``max_batch`` texts are queued), runs the batch function once in a
worker thread so the event loop keeps serving, and hands each caller its own slice. A failure
in the batch function is raised in every caller of that batch. One batcher serves one event
loop; `SafetyClassifier` keeps one per loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

R = TypeVar("R")


class MicroBatcher(Generic[R]):
    """Gathers `submit` calls made within a short window into one call of ``batch_fn``."""

    def __init__(
        self, batch_fn: Callable[[list[str]], list[R]], *, max_batch: int, max_wait_s: float
    ) -> None:
        self._batch_fn = batch_fn
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue: list[tuple[list[str], asyncio.Future[list[R]]]] = []
        self._queued = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches_run = 0

    async def submit(self, texts: Sequence[str]) -> list[R]:
        """Score ``texts`` as part of whatever batch forms in the wait window."""
        items = list(texts)
        if not items:
            return []
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._queue.append((items, future))
        self._queued += len(items)
        if self._queued >= self._max_batch:
            self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._collect())
        return await future

    async def _collect(self) -> None:
        while self._queue:
            if self._queued < self._max_batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._max_wait_s)
            self._wake.clear()
            taken: list[tuple[list[str], asyncio.Future[list[R]]]] = []
            count = 0
            while self._queue and (not taken or count + len(self._queue[0][0]) <= self._max_batch):
                items, future = self._queue.pop(0)
                taken.append((items, future))
                count += len(items)
            self._queued -= count
            flat = [t for items, _ in taken for t in items]
            try:
                results = await asyncio.to_thread(self._batch_fn, flat)
            except Exception as exc:  # every caller of the batch sees the failure
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches_run += 1
            start = 0
            for items, future in taken:
                if not future.done():
                    future.set_result(results[start : start + len(items)])
                start += len(items)


__all__ = [
    "MicroBatcher",
]
