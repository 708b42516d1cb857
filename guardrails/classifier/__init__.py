"""The safety classifier: multi-label scores for seven categories, on prompts and outputs.

This module is import-light on purpose (no torch): `load_classifier` imports torch when it
is first called. A loaded classifier scores any list of texts::

    clf = load_classifier("fast")          # or "minilm", or a directory of weights
    clf.score(["kill the process on port 80"])  # -> [{"prompt_injection": 0.01, ...}]

Empty (or whitespace-only) text is benign: it scores 0.0 in every category without running
the model. Texts longer than one window are scored window by window and the maximum per
category is returned, so a payload late in a long text is never silently cut off.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from guardrails.classifier.categories import CATEGORIES, TAXONOMY
from guardrails.classifier.errors import ClassifierError

if TYPE_CHECKING:
    from guardrails.classifier.runtime import SafetyClassifier

__all__ = ["CATEGORIES", "TAXONOMY", "ClassifierError", "load_classifier", "preload"]

_CACHE: dict[tuple[object, ...], SafetyClassifier] = {}
_CACHE_LOCK = threading.Lock()


def load_classifier(
    name_or_path: str = "fast",
    *,
    int8: bool = False,
    num_threads: int | None = None,
    max_batch_size: int = 64,
    max_wait_ms: float = 2.0,
    cache: bool = True,
) -> SafetyClassifier:
    """Load a shipped classifier by name (``"fast"``, ``"minilm"``) or from a weights directory.

    Loads are cached per process: the same name (or the same directory with unchanged files)
    and options return the same loaded classifier, so every guard and policy in a process
    shares one copy and only the first pays for torch and the weights.

    Args:
        name_or_path: a shipped model name or a directory holding ``config.json`` and weights.
        int8: apply INT8 dynamic quantization to the model's linear layers.
        num_threads: torch intra-op threads (process-wide). ``None``: one thread, unless
            ``OMP_NUM_THREADS`` is set, which is then respected and never overridden.
        max_batch_size: largest forward pass, for `score` and for micro-batching.
        max_wait_ms: how long `score_async` waits to gather concurrent callers into one batch.
        cache: reuse (and keep) a process-wide loaded copy.

    Raises:
        ClassifierError: unknown name, missing or corrupt weights.
    """
    from guardrails.classifier.runtime import cache_key, configure_threads_if_loaded, load

    if not cache:
        return load(
            name_or_path,
            int8=int8,
            num_threads=num_threads,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
        )
    key = (*cache_key(name_or_path), int8, max_batch_size, max_wait_ms)
    with _CACHE_LOCK:  # one load at a time: two threads asking at start-up load once
        clf = _CACHE.get(key)
        if clf is None:
            clf = load(
                name_or_path,
                int8=int8,
                num_threads=num_threads,
                max_batch_size=max_batch_size,
                max_wait_ms=max_wait_ms,
            )
            _CACHE[key] = clf
        else:
            configure_threads_if_loaded(num_threads)
    return clf


def preload(name_or_path: str = "fast", *, int8: bool = False) -> SafetyClassifier:
    """Load (cached) and warm a classifier: call at start-up, before reporting ready.

    Raises:
        ClassifierError: as `load_classifier`.
    """
    return load_classifier(name_or_path, int8=int8).warm()
