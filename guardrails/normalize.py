"""Text normalization against evasion, with an exact map back to the original offsets.

Rules match on a normalized *view* of the text (full-width letters folded, zero-width
characters dropped, Cyrillic look-alikes turned into Latin letters, ``1gn0r3`` into
``ignore``, ``i g n o r e`` into ``ignore``), but findings must point into the text the caller
gave us, so redaction edits the original. Every step is expressed as a list of edits
``(start, end, replacement)``; applying edits carries two arrays that give, for each
character of the view, the original range it came from.

The steps' own patterns are fixed, linear and written here, so they use the faster standard
`re`; policy patterns, which users write, always go through `regex` with a timeout.
Steps that have nothing to do cost nothing: pure-ASCII text skips the Unicode steps, and a view
with no edits keeps the identity map without building arrays.
"""

from __future__ import annotations

import bisect
import enum
import functools
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

__all__ = [
    "ALL_STEPS",
    "Edit",
    "NormalizedText",
    "Step",
    "canonical_steps",
    "normalize",
    "prepare",
    "unsettled_from",
]


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
class _StepMap:
    """The edits one step made, indexed for mapping output positions back to its input.

    ``out_starts[k]``/``out_ends[k]``: where edit ``k``'s replacement sits in the output;
    ``in_starts[k]``/``in_ends[k]``: what it replaced in the input; ``shift[k]``: input
    position minus output position just after edit ``k``.
    """

    in_starts: list[int]
    in_ends: list[int]
    out_starts: list[int]
    out_ends: list[int]
    shift: list[int]

    def start(self, pos: int) -> int:
        """Input position of output position ``pos`` (as a range start)."""
        k = bisect.bisect_right(self.out_starts, pos) - 1
        if k < 0:
            return pos
        if pos < self.out_ends[k]:
            return self.in_starts[k]
        return pos + self.shift[k]

    def forward(self, pos: int) -> int:
        """Output position of input position ``pos`` (inside an edit: where it begins)."""
        k = bisect.bisect_right(self.in_starts, pos) - 1
        if k < 0:
            return pos
        if pos < self.in_ends[k] or (pos == self.in_starts[k]):
            return self.out_starts[k]
        return pos - self.shift[k]

    def end(self, pos: int) -> int:
        """Input end of the character at output position ``pos`` (exclusive)."""
        k = bisect.bisect_right(self.out_starts, pos) - 1
        if k < 0:
            return pos + 1
        if pos < self.out_ends[k]:
            return self.in_ends[k]
        return pos + self.shift[k] + 1


@dataclass(frozen=True, slots=True)
class NormalizedText:
    """A normalized view of ``original`` and the edits that lead back to it.

    Mapping costs a binary search per step that changed something; a view with no edits
    (``steps == ()``) is the original text.
    """

    original: str
    text: str
    steps: tuple[_StepMap, ...] = ()

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map the view range ``[start, end)`` to the original text.

        An empty range maps to the original position of its start.
        """
        if not self.steps:
            return start, end
        if start >= end:
            for step in reversed(self.steps):
                start = step.start(start)
            return start, start
        low, high = start, end
        for step in reversed(self.steps):
            low, high = step.start(low), step.end(high - 1)
        return low, high

    def to_view(self, offset: int) -> int:
        """The view position where original ``offset`` begins (a position inside an edit maps
        to the start of that edit's replacement, so nothing after ``offset`` is skipped)."""
        for step in self.steps:
            offset = step.forward(offset)
        return offset


def _apply(view: NormalizedText, edits: list[Edit]) -> NormalizedText:
    """Apply sorted, non-overlapping ``edits`` (in view coordinates) to ``view``."""
    if not edits:
        return view
    text = view.text
    pieces: list[str] = []
    in_starts: list[int] = []
    in_ends: list[int] = []
    out_starts: list[int] = []
    out_ends: list[int] = []
    shift: list[int] = []
    pos = 0
    out = 0
    for start, end, replacement in edits:
        pieces.append(text[pos:start])
        pieces.append(replacement)
        out += start - pos
        in_starts.append(start)
        in_ends.append(end)
        out_starts.append(out)
        out += len(replacement)
        out_ends.append(out)
        shift.append(end - out)
        pos = end
    pieces.append(text[pos:])
    step = _StepMap(in_starts, in_ends, out_starts, out_ends, shift)
    return NormalizedText(view.original, "".join(pieces), (*view.steps, step))


# --- the steps -------------------------------------------------------------------------------


@functools.cache
def _nfkc_changing() -> frozenset[str]:
    """Every character NFKC changes on its own.

    Built once, on first use (~0.1 s), from `unicodedata` itself rather than a hand-kept list,
    so it matches the interpreter's Unicode version exactly.
    """
    changing: set[str] = set()
    for low, high in ((0x80, 0x20000), (0x2F800, 0x2FA20)):
        for code in range(low, high):
            char = chr(code)
            if unicodedata.normalize("NFKC", char) != char:
                changing.add(char)
    return frozenset(changing)


_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")


def _nfkc(text: str) -> list[Edit]:
    """NFKC per grapheme cluster (a base and its combining marks), so marks compose with
    their base; runs of non-ASCII text that are already normalized are skipped whole."""
    if text.isascii() or unicodedata.is_normalized("NFKC", text):
        return []
    changing = _nfkc_changing()
    combining = unicodedata.combining
    edits: list[Edit] = []
    for match in _NON_ASCII_RUN.finditer(text):
        run = match.group()
        base = match.start()
        leading_mark = bool(combining(run[0])) and base > 0
        if not leading_mark and unicodedata.is_normalized("NFKC", run):
            continue
        i, size = 0, len(run)
        while i < size:
            j = i + 1
            while j < size and combining(run[j]):
                j += 1
            start = base + i - (1 if i == 0 and leading_mark else 0)
            if j - i > 1 or run[i] in changing or start < base + i:
                cluster = text[start : base + j]
                folded = unicodedata.normalize("NFKC", cluster)
                if folded != cluster:
                    edits.append((start, base + j, folded))
            i = j
    return edits


# Format characters (zero-width space/joiners, bidi embeddings, overrides and isolates, word
# joiner, BOM, soft hyphen...), variation selectors and tag characters: invisible, and used to
# split words so a pattern does not see them.
def _char_class(codes: list[int]) -> str:
    """A character-class body for ``codes``, contiguous runs written as ranges."""
    ranges: list[list[int]] = []
    for code in codes:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )


_INVISIBLE_CODES = sorted(
    [c for c in range(0x80, 0x110000) if unicodedata.category(chr(c)) == "Cf"]
    + [*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0), 0x115F, 0x1160, 0x3164]
)
# `re` scans a class of BMP characters several times faster than one that also holds astral
# ones, so the astral class only runs on the rare text that has astral characters.
_INVISIBLE = re.compile("[" + _char_class([c for c in _INVISIBLE_CODES if c < 0x10000]) + "]+")
_INVISIBLE_ALL = re.compile("[" + _char_class(_INVISIBLE_CODES) + "]+")


def _strip_invisible(text: str) -> list[Edit]:
    if text.isascii():
        return []
    pattern = _INVISIBLE_ALL if max(text) > "\uffff" else _INVISIBLE
    return [(m.start(), m.end(), "") for m in pattern.finditer(text)]


# Look-alikes come from Unicode's confusables data (UTS #39, confusables.txt), as shipped by
# the `confusable-homoglyphs` package (MIT licence; its confusables.json is generated from
# confusables.txt), read from the installed package, never from the network. A character
# folds to the ASCII letter or digit the data pairs it with; three derived rules fill the
# gaps the data leaves for text meant to be read as Latin:
# - LATIN LETTER SMALL CAPITAL X (and LATIN SMALL CAPITAL LETTER X) is X, by its Unicode name
#   (the data pairs small capitals with Cherokee or Cyrillic letters, not with Latin ones);
# - a lowercase letter whose uppercase folds (Cyrillic к, Greek τ) folds to that, lowercased;
# - anything but a lowercase letter paired with "l" (Cyrillic І, Greek Ι, Lisu ꓲ, ∣) is "I":
#   the data's prototype for I-like strokes is "l", and "Ignore" is the likelier reading.
# Marks and CJK characters are left alone (a mark is not a letter; 〇 is a CJK number).
_SMALL_CAPITAL = re.compile(r"^LATIN (?:LETTER SMALL CAPITAL|SMALL CAPITAL LETTER) ([A-Z])$")
_NOT_FOLDED = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003ffff]")


@functools.cache
def _confusables_table() -> dict[str, str]:
    """Character -> ASCII look-alike, from the Unicode confusables data (built once)."""
    raw = resources.files("confusable_homoglyphs").joinpath("confusables.json")
    data: dict[str, list[dict[str, str]]] = json.loads(raw.read_text("utf-8"))
    table: dict[str, str] = {}
    for char, entries in data.items():
        if len(char) != 1 or char.isascii() or _NOT_FOLDED.match(char):
            continue
        if unicodedata.category(char).startswith("M"):
            continue
        targets = [e["c"] for e in entries if len(e["c"]) == 1 and e["c"].isascii()]
        targets = [t for t in targets if t.isalnum()]
        if not targets:
            continue
        target = targets[0]
        if target == "l" and unicodedata.category(char) != "Ll":
            target = "I"
        table[char] = target
    # Small capitals and the cased scripts with Latin look-alikes (Greek, Cyrillic,
    # Armenian, Cherokee, Latin extensions, Deseret): the derived rules look only there.
    ranges = ((0x80, 0x2000), (0xA640, 0xAC00), (0x10400, 0x10800), (0x1DF00, 0x1E000))
    for code in (c for low, high in ranges for c in range(low, high)):
        char = chr(code)
        if char in table:
            continue
        small = _SMALL_CAPITAL.match(unicodedata.name(char, ""))
        if small:
            table[char] = small.group(1).lower()
            continue
        upper = char.upper()
        if len(upper) == 1 and upper != char and upper in table and table[upper].isalpha():
            table[char] = table[upper].lower()
    return table


# Only non-ASCII text outside the CJK blocks is looked at, character by character.
_FOLDABLE_RUN = re.compile(r"[^\x00-\x7f\u2e80-\u9fff\uac00-\ud7af]+")


def _confusables(text: str) -> list[Edit]:
    """Fold look-alike characters to ASCII and strip diacritics from Latin letters."""
    if text.isascii():
        return []
    table = _confusables_table()
    edits: list[Edit] = []
    for run in _FOLDABLE_RUN.finditer(text):
        base_index = run.start()
        for offset, char in enumerate(run.group()):
            folded = table.get(char)
            if folded is None and (
                "\u00c0" <= char <= "\u024f" or "\u1e00" <= char <= "\u1eff" or char in "ёїЁЇй"
            ):
                # A letter with diacritics: keep its base letter, itself folded if need be.
                decomposed = unicodedata.normalize("NFD", char)
                base = table.get(decomposed[0], decomposed[0])
                if len(decomposed) > 1 and base.isascii() and base.isalpha():
                    folded = base
            if folded is not None:
                index = base_index + offset
                edits.append((index, index + 1, folded))
    return edits


_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i",
         "|": "l", "8": "b", "9": "g"}  # fmt: skip
# A leet character counts only inside a word that has letters (``h4x0r``, ``1gn0re``), so
# plain numbers such as ``2024`` or ``4 items`` stay what they are.
_LEET_RUN = re.compile(r"[013457@$!|89]+")
_LEET_DIGITS = frozenset("01345789")


def _leetspeak(text: str) -> list[Edit]:
    """Fold leet characters inside words (``h4x0r``, ``1gn0re``), not plain numbers.

    A run of leet characters counts when a letter follows it, or when a letter precedes it
    and it ends in a digit: ``code!`` stays ``code!`` so a phrase at the end of a sentence
    still ends on a word boundary.
    """
    edits: list[Edit] = []
    size = len(text)
    for match in _LEET_RUN.finditer(text):
        start, end = match.span()
        before = start > 0 and text[start - 1].isalpha()
        after = end < size and text[end].isalpha()
        if after or (before and text[end - 1] in _LEET_DIGITS):
            edits.extend((i, i + 1, _LEET[text[i]]) for i in range(start, end))
    return edits


# Three or more single letters separated by one separator each: "i g n o r e", "i.g.n.o.r.e";
# a separator is one punctuation mark or a run of whitespace of any length ("i \t g  n o r e").
_SEP = r"(?:[ \t\r\n]+|[.\-_*·•/|])"
_SEP_RE = re.compile(_SEP)
_SPACED_RE = re.compile(rf"\b(?:[^\W_]{_SEP}){{2,}}[^\W_]\b")


# Any run of three or more has a middle letter with a separator on both sides; looking for
# that first (a pattern that starts with a small class) skips most texts cheaply. A hint
# starts only at the first character of a whitespace run, so long runs are scanned once.
_SPACED_HINT = re.compile(rf"(?<![ \t\r\n]){_SEP}[^\W_][ \t\r\n.\-_*·•/|]")


_SPACED_HINTS = re.compile(rf"(?=(?<![ \t\r\n]){_SEP}[^\W_][ \t\r\n.\-_*·•/|])")


def _join_spaced(text: str) -> list[Edit]:
    if not _SPACED_HINT.search(text):
        return []
    edits: list[Edit] = []
    # A run starting at s has a hint at s + 1, so trying just before each hint, in order,
    # finds what a scan of the whole text finds, without visiting every word.
    last_end = 0
    for hint in _SPACED_HINTS.finditer(text):
        start = hint.start() - 1
        if start < last_end:
            continue
        match = _SPACED_RE.match(text, start)
        if match is None:
            continue
        last_end = match.end()
        edits.extend(
            (sep.start(), sep.end(), "") for sep in _SEP_RE.finditer(text, start, last_end)
        )
    return edits


_STEPS: dict[Step, Callable[[str], list[Edit]]] = {
    Step.NFKC: _nfkc,
    Step.INVISIBLE: _strip_invisible,
    Step.CONFUSABLES: _confusables,
    Step.LEETSPEAK: _leetspeak,
    Step.JOIN_SPACED: _join_spaced,
}


def _unsettled_nfkc(text: str) -> int:
    # NFKC works per cluster (a base and its combining marks): the last one may still grow.
    # A whitespace base stays itself whatever marks follow (checked over every mark).
    i = len(text)
    while i > 0 and unicodedata.combining(text[i - 1]):
        i -= 1
    if i > 0 and text[i - 1] in " \t\r\n":
        return i
    return max(i - 1, 0)


def _unsettled_none(text: str) -> int:
    return len(text)


_LEET_TAIL = re.compile(r"[013457@$!|89]+\Z")


def _unsettled_leetspeak(text: str) -> int:
    # A leet run is folded or not by the character after it.
    match = _LEET_TAIL.search(text)
    return match.start() if match else len(text)


_SPACED_TAIL = re.compile(rf"(?:[^\W_]{_SEP})*[^\W_]?\Z")


def _unsettled_join_spaced(text: str) -> int:
    # A run of spaced letters that reaches the end may still grow, or stop being one.
    match = _SPACED_TAIL.search(text, max(0, len(text) - 4096))
    start = match.start() if match else len(text)
    if start == max(0, len(text) - 4096) and start > 0:
        return 0  # an absurdly long spaced run: settle nothing
    return start


_UNSETTLED: dict[Step, Callable[[str], int]] = {
    Step.NFKC: _unsettled_nfkc,
    Step.INVISIBLE: _unsettled_none,
    Step.CONFUSABLES: _unsettled_none,
    Step.LEETSPEAK: _unsettled_leetspeak,
    Step.JOIN_SPACED: _unsettled_join_spaced,
}


def unsettled_from(text: str, steps: Sequence[Step]) -> int:
    """The original offset from which normalizing a longer text that starts with ``text``
    could give a different view (so a stream cannot judge text there yet).

    Each step looks only a bounded way ahead, except at its tail: an NFKC cluster, a run of
    leet characters, a run of spaced letters that reaches the end. Each step's tail is found
    in its input truncated where the earlier steps stop being settled.
    """
    view = NormalizedText(text, text)
    cut = len(text)
    for step in canonical_steps(steps):
        visible = view.text[: view.to_view(cut)] if cut < len(text) else view.text
        point = _UNSETTLED[step](visible)
        if point < len(visible) or cut < len(text):
            cut = min(cut, view.to_original(point, point)[0])
        view = _apply(view, _STEPS[step](view.text))
    return cut


def prepare(steps: Sequence[Step] = ALL_STEPS) -> None:
    """Build the tables ``steps`` use now (about 0.1 s) rather than in the first check."""
    wanted = set(steps)
    if Step.NFKC in wanted:
        _nfkc_changing()
    if Step.CONFUSABLES in wanted:
        _confusables_table()


def canonical_steps(steps: Sequence[Step]) -> tuple[Step, ...]:
    """``steps`` without repeats, in the order they are applied."""
    wanted = set(steps)
    return tuple(step for step in ALL_STEPS if step in wanted)


def normalize(
    text: str,
    steps: Sequence[Step] = ALL_STEPS,
    *,
    start: NormalizedText | None = None,
    done: Sequence[Step] = (),
) -> NormalizedText:
    """Normalize ``text`` with ``steps`` (applied in the canonical order of `Step`).

    Returns the view and its offset map. Case is left alone: rules match case-insensitively
    where they mean to. ``start`` is a view of ``text`` already normalized with ``done``
    (a prefix of the canonical ``steps``), so views sharing steps share the work.
    """
    view = start if start is not None else NormalizedText(text, text)
    finished = set(done) if start is not None else set()
    for step in canonical_steps(steps):
        if step not in finished:
            view = _apply(view, _STEPS[step](view.text))
    return view
