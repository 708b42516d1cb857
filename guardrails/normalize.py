"""Text normalization against evasion, with an exact map back to the original offsets.

Rules match on a normalized *view* of the text (full-width letters folded, zero-width
characters dropped, Cyrillic look-alikes turned into Latin letters, ``1gn0r3`` into
``ignore``, ``i g n o r e`` into ``ignore``), but findings must point into the text the caller
gave us, so redaction edits the original. Every step is expressed as a list of edits
``(start, end, replacement)``; applying edits carries two arrays that give, for each
character of the view, the original range it came from.

Steps that have nothing to do cost nothing: pure-ASCII text skips the Unicode steps, and a view
with no edits keeps the identity map without building arrays.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import regex


class Step(enum.StrEnum):
    """A normalization step, by the name policy files use."""

    NFKC = "nfkc"
    INVISIBLE = "strip_invisible"
    CONFUSABLES = "confusables"
    LEETSPEAK = "leetspeak"
    JOIN_SPACED = "join_spaced"


ALL_STEPS: tuple[Step, ...] = tuple(Step)
"""Every step, in the order they are applied."""

Edit = tuple[int, int, str]


@dataclass(frozen=True, slots=True)
class NormalizedText:
    """A normalized view of ``original``.

    ``starts[i]``/``ends[i]`` give the original range behind view character ``i``; both are
    ``None`` when the view is the original text unchanged.
    """

    original: str
    text: str
    starts: Sequence[int] | None = None
    ends: Sequence[int] | None = None

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map the view range ``[start, end)`` to the original text.

        An empty range maps to the original position of its start.
        """
        if self.starts is None or self.ends is None:
            return start, end
        if start >= end:
            pos = self.starts[start] if start < len(self.starts) else len(self.original)
            return pos, pos
        return self.starts[start], self.ends[end - 1]


def _apply(view: NormalizedText, edits: list[Edit]) -> NormalizedText:
    """Apply sorted, non-overlapping ``edits`` (in view coordinates) to ``view``."""
    if not edits:
        return view
    text = view.text
    if view.starts is None or view.ends is None:
        old_starts: Sequence[int] = range(len(text))
        old_ends: Sequence[int] = range(1, len(text) + 1)
    else:
        old_starts, old_ends = view.starts, view.ends
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for start, end, replacement in edits:
        pieces.append(text[pos:start])
        starts.extend(old_starts[pos:start])
        ends.extend(old_ends[pos:start])
        if replacement:
            pieces.append(replacement)
            origin_start = old_starts[start]
            origin_end = old_ends[end - 1] if end > start else origin_start
            starts.extend([origin_start] * len(replacement))
            ends.extend([origin_end] * len(replacement))
        pos = end
    pieces.append(text[pos:])
    starts.extend(old_starts[pos:])
    ends.extend(old_ends[pos:])
    return NormalizedText(view.original, "".join(pieces), starts, ends)


# --- the steps -------------------------------------------------------------------------------

_NON_ASCII_CLUSTER = regex.compile(r"[\x00-\x7f]\p{M}+|[^\x00-\x7f]\p{M}*")


def _nfkc(text: str) -> list[Edit]:
    """NFKC per grapheme cluster, so combining marks compose with their base character."""
    if text.isascii():
        return []
    edits: list[Edit] = []
    for match in _NON_ASCII_CLUSTER.finditer(text):
        cluster = match.group()
        folded = unicodedata.normalize("NFKC", cluster)
        if folded != cluster:
            edits.append((match.start(), match.end(), folded))
    return edits


# Format characters (zero-width space/joiners, bidi embeddings, overrides and isolates, word
# joiner, BOM, soft hyphen...), variation selectors and tag characters: invisible, and used to
# split words so a pattern does not see them.
_INVISIBLE = regex.compile(r"[\p{Cf}\uFE00-\uFE0F\U000E0100-\U000E01EF\u115F\u1160\u3164]+")


def _strip_invisible(text: str) -> list[Edit]:
    if text.isascii():
        return []
    return [(m.start(), m.end(), "") for m in _INVISIBLE.finditer(text)]


# Look-alikes from the Unicode confusables table that NFKC leaves alone: Cyrillic, Greek and
# Armenian letters that render like Latin ones, and a few symbols.
_CONFUSABLES: dict[str, str] = {
    # Cyrillic lower / upper
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i",
    "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ɡ": "g", "ӏ": "l",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ԁ": "D",
    # Greek lower / upper
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ω": "w",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Armenian and others
    "օ": "o", "ս": "u", "ց": "g", "ո": "n", "ɑ": "a", "ı": "i", "ȷ": "j",
}  # fmt: skip
_CONFUSABLE_RE = regex.compile("[" + "".join(_CONFUSABLES) + r"]|[^\x00-\x7f]")


def _confusables(text: str) -> list[Edit]:
    """Fold look-alike letters to ASCII and strip diacritics from Latin letters."""
    if text.isascii():
        return []
    edits: list[Edit] = []
    for match in _CONFUSABLE_RE.finditer(text):
        char = match.group()
        folded = _CONFUSABLES.get(char)
        if folded is None:
            # Latin letter with diacritics: keep the base letter when it is ASCII.
            decomposed = unicodedata.normalize("NFD", char)
            base = decomposed[0]
            if len(decomposed) > 1 and base.isascii() and base.isalpha():
                folded = base
        if folded is not None:
            edits.append((match.start(), match.end(), folded))
    return edits


_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i",
         "|": "l", "8": "b", "9": "g"}  # fmt: skip
# A leet character counts only inside a word that has letters (``h4x0r``, ``1gn0re``), so
# plain numbers such as ``2024`` or ``4 items`` stay what they are.
_LEET_RE = regex.compile(
    r"(?<=\p{L}[013457@$!|89]*)[013457@$!|89]|[013457@$!|89](?=[013457@$!|89]*\p{L})"
)


def _leetspeak(text: str) -> list[Edit]:
    return [(m.start(), m.end(), _LEET[m.group()]) for m in _LEET_RE.finditer(text)]


# Three or more single letters separated by one separator each: "i g n o r e", "i.g.n.o.r.e".
_SPACED_RE = regex.compile(
    r"(?<![\p{L}\p{N}])(?:[\p{L}\p{N}][ .\-_*·•/|]){2,}[\p{L}\p{N}](?![\p{L}\p{N}])"
)


def _join_spaced(text: str) -> list[Edit]:
    edits: list[Edit] = []
    for match in _SPACED_RE.finditer(text):
        base = match.start()
        # Separators sit at every odd offset of the run.
        edits.extend((base + i, base + i + 1, "") for i in range(1, match.end() - base, 2))
    return edits


_STEPS: dict[Step, Callable[[str], list[Edit]]] = {
    Step.NFKC: _nfkc,
    Step.INVISIBLE: _strip_invisible,
    Step.CONFUSABLES: _confusables,
    Step.LEETSPEAK: _leetspeak,
    Step.JOIN_SPACED: _join_spaced,
}


def normalize(text: str, steps: Sequence[Step] = ALL_STEPS) -> NormalizedText:
    """Normalize ``text`` with ``steps`` (applied in the canonical order of `Step`).

    Returns the view and its offset map. Case is left alone: rules match case-insensitively
    where they mean to.
    """
    view = NormalizedText(text, text)
    wanted = set(steps)
    for step in ALL_STEPS:
        if step in wanted:
            view = _apply(view, _STEPS[step](view.text))
    return view
