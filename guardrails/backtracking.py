"""Static detection of regular expressions prone to catastrophic backtracking.

The pattern is parsed into a small tree (atoms, groups with branches, quantifiers) and three
shapes are reported, each only when it is *ambiguous* -- when the engine can split the same
text between the repetitions in more than one way, which is what makes backtracking blow up:

- ``nested``: an unbounded repetition inside another unbounded repetition, with nothing
  mandatory in the repeated body that the inner repetition cannot also match (``(a+)+``,
  ``(\\w+\\s?)*``; but not ``(?:[a-z]+\\.)+``, where the dot separates the repetitions).
- ``alternation``: an unboundedly repeated group whose branches can start with the same
  character (``(a|ab)*``, ``(\\w|\\d)+``).
- ``adjacent``: two unbounded repetitions over overlapping characters with only optional
  items between them (``\\d+\\d*``, ``.*\\s*.*``), quadratic on a text that fails late.

Which characters an atom matches is decided by compiling the atom alone and testing it on a
sample alphabet (plus every literal character in the pattern), so character classes, Unicode
properties and escapes need no hand-written semantics. This is a heuristic: it errs towards
reporting, and `confirm` runs the pattern on a crafted input under a timeout to tell a
confirmed problem from a suspected one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import regex

_SAMPLE = "aZz09_ \t\n.,-@+/:;!?'\"()[]{}$#%&*=<>\\|~^`éßΩжअ中文あ한\u200b\u00a0"
_ZERO_WIDTH = frozenset("bBAZzKG")
_CLASS_ESCAPES = frozenset("dDwWsShHvVRXN")
_BIG = 16  # a bounded repetition above this many counts as unbounded for backtracking


@dataclass(slots=True)
class _Atom:
    source: str
    chars: frozenset[str] = frozenset()


@dataclass(slots=True)
class _Group:
    branches: list[list[_Item]] = field(default_factory=list)
    lookaround: bool = False
    atomic: bool = False


@dataclass(slots=True)
class _Item:
    node: _Atom | _Group | None  # None: a zero-width assertion
    low: int = 1
    high: int | None = 1
    possessive: bool = False

    @property
    def unbounded(self) -> bool:
        return self.high is None or self.high > _BIG


@dataclass(frozen=True, slots=True)
class BacktrackingRisk:
    """One risky shape in a pattern: ``kind`` (nested, alternation, adjacent) and where."""

    kind: str
    fragment: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} quantifiers at {self.fragment!r}: {self.detail}"


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.position = 0
        self.ignore_case = False
        self.atoms: list[_Atom] = []

    def parse(self) -> _Group:
        group = self._group_body()
        if self.position < len(self.pattern):  # a stray ")": regex.compile would have failed
            raise ValueError(f"unbalanced parenthesis at {self.position}")
        return group

    def _group_body(self) -> _Group:
        group = _Group(branches=[[]])
        while self.position < len(self.pattern):
            char = self.pattern[self.position]
            if char == ")":
                break
            if char == "|":
                self.position += 1
                group.branches.append([])
                continue
            item = self._item()
            if item is not None:
                group.branches[-1].append(item)
        return group

    def _item(self) -> _Item | None:
        start = self.position
        node = self._node()
        if node == "skip":
            return None
        item = _Item(node if not isinstance(node, str) else None)
        low_high = self._quantifier()
        if low_high is not None:
            item.low, item.high, item.possessive = low_high
        if isinstance(item.node, _Atom) and not item.node.source:
            item.node.source = self.pattern[start : self.position]
        return item

    def _quantifier(self) -> tuple[int, int | None, bool] | None:
        text, at = self.pattern, self.position
        if at >= len(text):
            return None
        low: int
        high: int | None
        if text[at] in "*+?":
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[text[at]]
            at += 1
        else:
            match = regex.match(r"\{(\d*)(,?)(\d*)\}", text[at:])
            if match is None or not (match.group(1) or match.group(3)):
                return None
            low = int(match.group(1) or 0)
            high = (int(match.group(3)) if match.group(3) else None) if match.group(2) else low
            at += match.end()
        possessive = False
        if at < len(text) and text[at] in "?+":
            possessive = text[at] == "+"
            at += 1
        self.position = at
        return low, high, possessive

    def _node(self) -> _Atom | _Group | str:
        text = self.pattern
        char = text[self.position]
        if char == "(":
            return self._open_group()
        if char == "[":
            end = self._class_end(self.position)
            return self._atom(self.position, end)
        if char == "\\":
            nxt = text[self.position + 1 : self.position + 2]
            if nxt in _ZERO_WIDTH:
                self.position += 2
                return "assert"
            braced = text[self.position + 2 : self.position + 3] == "{"
            if braced and nxt in "pPNx":
                end = text.index("}", self.position) + 1
            elif nxt == "x":
                end = self.position + 4
            elif nxt in "uU":
                end = self.position + (6 if nxt == "u" else 10)
            elif nxt.isdigit():
                end = self.position + 2
                self.position = end
                return _Atom("\\1", frozenset(_SAMPLE))  # a backreference: anything
            else:
                end = self.position + 2
            return self._atom(self.position, end)
        if char in "^$":
            self.position += 1
            return "assert"
        return self._atom(self.position, self.position + 1)

    def _atom(self, start: int, end: int) -> _Atom:
        self.position = end
        atom = _Atom(self.pattern[start:end])
        self.atoms.append(atom)
        return atom

    def _class_end(self, start: int) -> int:
        text = self.pattern
        at = start + 1
        if at < len(text) and text[at] == "^":
            at += 1
        if at < len(text) and text[at] == "]":
            at += 1
        depth = 1
        while at < len(text):
            if text[at] == "\\":
                at += 2
                continue
            if text.startswith("[:", at):
                close = text.find(":]", at)
                if close != -1:
                    at = close + 2
                    continue
            if text[at] == "[":
                depth += 1
            elif text[at] == "]":
                depth -= 1
                if depth == 0:
                    return at + 1
            at += 1
        return len(text)

    def _open_group(self) -> _Group | str:
        text = self.pattern
        at = self.position + 1
        lookaround = atomic = False
        if text.startswith("?", at):
            flags = regex.match(r"\?([a-zA-Z\-]*)([:)])", text[at:])
            if text.startswith("?#", at):
                self.position = text.index(")", at) + 1
                return "skip"
            if flags is not None and flags.group(2) == ")":
                if "i" in flags.group(1).split("-")[0]:
                    self.ignore_case = True
                self.position = at + flags.end()
                return "skip"
            if flags is not None:
                at += flags.end()
            elif text.startswith(("?=", "?!"), at):
                lookaround, at = True, at + 2
            elif text.startswith(("?<=", "?<!"), at):
                lookaround, at = True, at + 3
            elif text.startswith("?>", at):
                atomic, at = True, at + 2
            elif text.startswith(("?P<", "?<", "?'"), at):
                close = "'" if text.startswith("?'", at) else ">"
                at = text.index(close, at + 2) + 1
            elif text.startswith("?P=", at) or text.startswith("?(", at):
                at = text.index(")", at) + 1 if text.startswith("?P=", at) else at + 1
            else:
                at += 1
        self.position = at
        group = self._group_body()
        self.position += 1  # the ")"
        group.lookaround, group.atomic = lookaround, atomic
        return group


def _chars(node: _Atom | _Group | None) -> frozenset[str]:
    if node is None:
        return frozenset()
    if isinstance(node, _Atom):
        return node.chars
    if node.lookaround:
        return frozenset()
    out: set[str] = set()
    for branch in node.branches:
        for item in branch:
            out |= _chars(item.node)
    return frozenset(out)


def _first(branch: list[_Item]) -> frozenset[str]:
    out: set[str] = set()
    for item in branch:
        node = item.node
        if isinstance(node, _Group) and not node.lookaround:
            for sub in node.branches:
                out |= _first(sub)
        elif isinstance(node, _Atom):
            out |= node.chars
        if item.low > 0 and node is not None and not (isinstance(node, _Group) and node.lookaround):
            break
    return frozenset(out)


def _has_unbounded(item: _Item) -> bool:
    if item.unbounded and not item.possessive:
        return True
    node = item.node
    if isinstance(node, _Group) and not node.lookaround and not node.atomic:
        return any(_has_unbounded(sub) for branch in node.branches for sub in branch)
    return False


def _render(item: _Item) -> str:
    node = item.node
    if isinstance(node, _Atom):
        return node.source
    return "(...)"


def analyze(pattern: str) -> list[BacktrackingRisk]:
    """The risky shapes in ``pattern`` (empty when none are found).

    Raises:
        regex.error: the pattern does not compile.
    """
    regex.compile(pattern)
    parser = _Parser(pattern)
    root = parser.parse()
    alphabet = set(_SAMPLE) | {c for c in pattern if not c.isspace()}
    flags = regex.IGNORECASE if parser.ignore_case else 0
    for atom in parser.atoms:
        try:
            compiled = regex.compile(atom.source, flags)
        except regex.error:
            atom.chars = frozenset(alphabet)  # an escape we cannot isolate: assume anything
            continue
        atom.chars = frozenset(c for c in alphabet if compiled.fullmatch(c))
    risks: list[BacktrackingRisk] = []
    _walk(root, risks)
    return risks


def _walk(group: _Group, risks: list[BacktrackingRisk]) -> None:
    for branch in group.branches:
        _adjacent(branch, risks)
        for item in branch:
            node = item.node
            if not isinstance(node, _Group):
                continue
            if item.unbounded and not item.possessive and not node.atomic and not node.lookaround:
                _nested(node, risks)
                _alternation(node, risks)
            _walk(node, risks)


def _nested(node: _Group, risks: list[BacktrackingRisk]) -> None:
    for branch in node.branches:
        for index, item in enumerate(branch):
            if not _has_unbounded(item):
                continue
            inner = _chars(item.node)
            separated = any(
                other.low > 0 and other.node is not None and not (_chars(other.node) & inner)
                for position, other in enumerate(branch)
                if position != index
                and not (isinstance(other.node, _Group) and other.node.lookaround)
            )
            if not separated:
                risks.append(
                    BacktrackingRisk(
                        "nested",
                        _render(item),
                        "an unbounded repetition inside an unbounded repetition, with nothing"
                        " mandatory between the repetitions that it cannot match",
                    )
                )
                return


def _alternation(node: _Group, risks: list[BacktrackingRisk]) -> None:
    firsts = [_first(branch) for branch in node.branches]
    for i, left in enumerate(firsts):
        for right in firsts[i + 1 :]:
            common = left & right
            if common:
                risks.append(
                    BacktrackingRisk(
                        "alternation",
                        "|".join("".join(_render(x) for x in b) for b in node.branches)[:60],
                        f"repeated branches can start with the same character ({min(common)!r})",
                    )
                )
                return


def _adjacent(branch: list[_Item], risks: list[BacktrackingRisk]) -> None:
    for index, item in enumerate(branch):
        if not item.unbounded or item.possessive or isinstance(item.node, _Group):
            continue
        chars = _chars(item.node)
        for other in branch[index + 1 :]:
            if other.node is None:
                continue  # zero-width: \b, ^, ...
            if isinstance(other.node, _Atom) and other.unbounded and not other.possessive:
                common = chars & other.node.chars
                if common:
                    risks.append(
                        BacktrackingRisk(
                            "adjacent",
                            _render(item) + "..." + _render(other),
                            "two unbounded repetitions over overlapping characters with only"
                            f" optional items between them (both match {min(common)!r})",
                        )
                    )
                    return
            if other.low > 0:
                break


def confirm(pattern: str, *, timeout_s: float = 0.1, size: int = 3000) -> str | None:
    """Run ``pattern`` on crafted inputs (a run of one character followed by a character that
    does not continue it) and return a description of the first that exceeds ``timeout_s``,
    or None when none does. Slow matching, not just a timeout, is what this proves."""
    compiled = regex.compile(pattern)
    for char in "a0 _.\t-Z中":
        for tail in ("!", "\x00", "\n"):
            attack = char * size + tail
            started = time.perf_counter()
            try:
                compiled.search(attack, timeout=timeout_s)
            except TimeoutError:
                return f"timed out after {timeout_s * 1000:.0f} ms on {char!r}×{size} + {tail!r}"
            if time.perf_counter() - started > timeout_s:
                return f"took over {timeout_s * 1000:.0f} ms on {char!r}×{size} + {tail!r}"
    return None


__all__ = ["BacktrackingRisk", "analyze", "confirm"]
