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


_WORD = re.compile(r"\w")
# ideographs, kana and hangul carry a word's worth of meaning in one or two characters
_DENSE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def signal_chars(text: str) -> int:
    """Letters and digits in ``text``, each CJK ideograph, kana or hangul counting 3."""
    return len(_WORD.findall(text)) + 2 * len(_DENSE.findall(text))


def has_signal(text: str, minimum: int) -> bool:
    """``signal_chars(text) >= minimum``, stopping as soon as the minimum is reached."""
    if minimum <= 0:
        return True
    count = 0
    for m in _WORD.finditer(text):
        count += 3 if _DENSE.match(m.group(0)) else 1
        if count >= minimum:
            return True
    return False


def _reduce(h: npt.NDArray[np.uint64], buckets: int) -> npt.NDArray[np.uint64]:
    # uint64 division is ~10x slower than a mask; for a power-of-two table they agree
    if buckets & (buckets - 1) == 0:
        return h & np.uint64(buckets - 1)
    return h % np.uint64(buckets)


def ngram_ids(
    text: str, *, buckets: int, sizes: Sequence[int] = NGRAM_SIZES
) -> npt.NDArray[np.int64]:
    """Bucket ids of every byte n-gram of the normalized text (padded with a space each side)."""
    ids, _ = batch_ngram_ids([text], buckets=buckets, sizes=sizes)
    return ids


def batch_ngram_ids(
    texts: Sequence[str], *, buckets: int, sizes: Sequence[int] = NGRAM_SIZES
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Flat ids and bag offsets for `torch.nn.functional.embedding_bag`.

    All texts are hashed in one pass over their concatenated bytes; n-grams that would cross
    from one text into the next are dropped, and each text's ids land in its own bag. A text
    too short for any n-gram size gets one id (bucket 0) so no bag is empty.
    """
    datas = [(" " + normalize(t) + " ").encode("utf-8", errors="replace") for t in texts]
    lens = np.fromiter((len(d) for d in datas), dtype=np.int64, count=len(datas))
    raw = np.frombuffer(b"".join(datas), dtype=np.uint8).astype(np.uint64)
    total = len(raw)
    starts = np.zeros(len(datas), dtype=np.int64)
    starts[1:] = np.cumsum(lens[:-1])
    counts = np.stack([np.maximum(lens - n + 1, 0) for n in sizes])  # (sizes, texts)
    per_text = counts.sum(0)
    empty = per_text == 0
    per_text = np.where(empty, 1, per_text)
    offsets = np.zeros(len(datas), dtype=np.int64)
    offsets[1:] = np.cumsum(per_text[:-1])
    inner = np.zeros_like(counts)
    inner[1:] = np.cumsum(counts[:-1], axis=0)
    out = np.zeros(int(per_text.sum()), dtype=np.int64)
    text_of = np.repeat(np.arange(len(datas)), lens)
    ends = (starts + lens)[text_of]
    positions = np.arange(total)
    for si, n in enumerate(sizes):
        count = total - n + 1
        if count <= 0:
            continue
        # a distinct seed per n keeps "ab" (n=2) and "ab" inside longer grams apart
        h = np.full(count, np.uint64((_FNV_OFFSET + n * 0x9E3779B97F4A7C15) % 2**64))
        for k in range(n):  # in place: no temporaries on the hot path
            np.bitwise_xor(h, raw[k : k + count], out=h)
            np.multiply(h, _FNV_PRIME, out=h)
        if len(datas) == 1:  # one text: every n-gram is inside it and already in bag order
            out[inner[si, 0] : inner[si, 0] + count] = _reduce(h, buckets)
            continue
        valid = positions[:count] + n <= ends[:count]
        pos = positions[:count][valid]
        owner = text_of[:count][valid]
        dest = offsets[owner] + inner[si, owner] + (pos - starts[owner])
        out[dest] = _reduce(h[valid], buckets).astype(np.int64)
    return out, offsets


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


__all__ = [
    "NGRAM_SIZES",
    "batch_ngram_ids",
    "has_signal",
    "ngram_ids",
    "normalize",
    "signal_chars",
    "windows",
]
