"""Text to model input for the fast model: hashed byte n-grams, vectorised with numpy.

The text is NFKC-folded, lower-cased and whitespace-collapsed, encoded as UTF-8, and every
byte n-gram (n in `NGRAM_SIZES`) is hashed (FNV-1a style, 64-bit, wrapping) into one of
``buckets`` rows of an embedding table. Hashing runs over whole numpy arrays, one pass per
(n, offset), so a 500-character text costs tens of microseconds, not a Python loop per byte.
Also splits long texts into overlapping windows, for both backbones.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

NGRAM_SIZES: tuple[int, ...] = (2, 3, 4, 5, 6)
_FNV_PRIME = np.uint64(1099511628211)
_FNV_OFFSET = 14695981039346656037
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """The view of the text the fast model sees: NFKC, lower case, single spaces."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def ngram_ids(
    text: str, *, buckets: int, sizes: Sequence[int] = NGRAM_SIZES
) -> npt.NDArray[np.int64]:
    """Bucket ids of every byte n-gram of the normalized text (padded with a space each side)."""
    data = (" " + normalize(text) + " ").encode("utf-8", errors="replace")
    b = np.frombuffer(data, dtype=np.uint8).astype(np.uint64)
    parts: list[npt.NDArray[np.uint64]] = []
    for n in sizes:
        count = len(b) - n + 1
        if count <= 0:
            continue
        # a distinct seed per n keeps "ab" (n=2) and "ab" inside longer grams apart
        h = np.full(count, np.uint64((_FNV_OFFSET + n * 0x9E3779B97F4A7C15) % 2**64))
        for k in range(n):
            h = (h ^ b[k : k + count]) * _FNV_PRIME
        parts.append(h % np.uint64(buckets))
    if not parts:
        return np.zeros(1, dtype=np.int64)
    return np.concatenate(parts).astype(np.int64)


def batch_ngram_ids(
    texts: Sequence[str], *, buckets: int, sizes: Sequence[int] = NGRAM_SIZES
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Flat ids and bag offsets for `torch.nn.functional.embedding_bag`."""
    per_text = [ngram_ids(t, buckets=buckets, sizes=sizes) for t in texts]
    lengths = np.fromiter((len(p) for p in per_text), dtype=np.int64, count=len(per_text))
    offsets = np.zeros(len(per_text), dtype=np.int64)
    if len(per_text) > 1:
        offsets[1:] = np.cumsum(lengths[:-1])
    return np.concatenate(per_text), offsets


def windows(text: str, *, size: int, stride: int) -> list[str]:
    """Overlapping character windows covering all of ``text`` (one window if it fits).

    Consecutive windows overlap by ``size - stride`` characters, so a phrase shorter than the
    overlap is always whole inside some window. The last window ends at the text's end.
    """
    if len(text) <= size:
        return [text]
    starts = list(range(0, len(text) - size, stride))
    starts.append(len(text) - size)
    return [text[s : s + size] for s in starts]
