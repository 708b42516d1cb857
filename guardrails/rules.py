"""The rule engine: compiled pattern and keyword rules, run over normalized views of a text.

Rules are compiled once per policy. A scan normalizes the text once per distinct set of
normalization steps the rules ask for (usually two views: a light one for PII and secrets,
where digits must stay digits, and the full one for prompt-injection phrasing), runs every
rule of the stage with a bounded regex call, checks validators, and maps each match back to
the original text. A regex timeout, or the whole check running past its deadline, becomes an
error finding handled by ``on_error``.

Skipping text is an optimisation that never changes a result. Each pattern is analysed when
it is compiled (`PatternShape`): the literals every match starts with, the literals every
match contains, its longest match and how far past its start it looks. A rule whose matches
all start with known literals is tried only where one occurs; a rule with a bounded match
length and a required literal runs only in windows around the literal, widened by how far it
can look ahead; any other rule scans the whole text. Both shortcuts visit match positions in
the same order as a full scan, so the findings are exactly those of a full scan (a hypothesis
test over every shipped rule holds this). The policy's declared ``anchors`` are not trusted
for this: a wrong declaration would make the filter fail open.

For streams (``partial=True``) the scan also says where text must be held back: the first
position whose match could still change when more text arrives (found by running the pattern,
made unable to succeed, with partial matching: it stops where any path of the matcher reads
the end of the text), and the point from which normalization could still change.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import regex

from guardrails.decision import Action, Finding, Severity, Span, Stage
from guardrails.normalize import (
    NormalizedText,
    Step,
    canonical_steps,
    normalize,
    prepare,
    unsettled_from,
)
from guardrails.policy import Mode, OnError, Policy, Rule
from guardrails.validators import get_validator

__all__ = [
    "CompiledRule",
    "PatternShape",
    "RuleEngine",
    "RuleScan",
    "keyword_pattern",
    "pattern_shape",
]

_CJK = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]")


def keyword_pattern(keywords: tuple[str, ...]) -> str:
    """One case-insensitive alternation for ``keywords``.

    Latin phrases match on word boundaries (``kill`` does not fire inside ``skill``) with any
    run of whitespace between their words; CJK phrases, which have no spaces, match anywhere.
    """

    def phrase(keyword: str) -> str:
        return r"\s+".join(regex.escape(word) for word in keyword.split())

    ordered = sorted({k.strip() for k in keywords}, key=len, reverse=True)
    bounded = [phrase(k) for k in ordered if not _CJK.search(k)]
    free = [phrase(k) for k in ordered if _CJK.search(k)]
    parts = []
    if bounded:
        parts.append(r"(?<![\p{L}\p{N}_])(?:" + "|".join(bounded) + r")(?![\p{L}\p{N}_])")
    if free:
        parts.append("(?:" + "|".join(free) + ")")
    return "(?i:" + "|".join(parts) + ")"


# --- what a pattern can match ---------------------------------------------------------------

# The standard library's parser of `re` syntax gives the tree the analysis walks. Policy
# patterns are `regex` syntax; `regex`-only constructs either fail to parse here (then the
# rule simply scans everything) or are rewritten first when their shape is the same
# (\p{..} is one character, like \w). Private module: imported by name, typed as Any.
_sre: Any = importlib.import_module("re._parser")
_op: Any = importlib.import_module("re._constants")

_MAX_LITERALS = 48
_UNICODE_PROPERTY = regex.compile(r"\\\\|\\[pP](?:\{[^}]*\}|[A-Za-z])")


@dataclass(frozen=True, slots=True)
class PatternShape:
    """What a pattern can match, as far as the analysis can prove it.

    ``max_width``: the longest match (None: unbounded or unknown); ``reach``: how far past a
    match's start the matcher may look, lookaheads included (None: unbounded or unknown);
    ``starts``: literals (case-folded) one of which every match starts with; ``required``:
    literals one of which every match contains. None means "nothing proven".
    """

    min_width: int = 0
    max_width: int | None = None
    reach: int | None = None
    starts: tuple[str, ...] | None = None
    required: tuple[str, ...] | None = None


_ZERO_WIDTH_OPS = (_op.AT, _op.ASSERT, _op.ASSERT_NOT)
_BOUNDARIES = (
    _op.AT_BOUNDARY,
    _op.AT_NON_BOUNDARY,
    _op.AT_UNI_BOUNDARY,
    _op.AT_UNI_NON_BOUNDARY,
    _op.AT_LOC_BOUNDARY,
    _op.AT_LOC_NON_BOUNDARY,
)


class _UnknownError(Exception):
    """A construct the analysis does not model: nothing is proven about the pattern."""


def _width(
    seq: Iterable[tuple[Any, Any]], groups: dict[int, int | None]
) -> tuple[int, int | None, int | None]:
    """``(min width, max width, reach)`` of a parsed sequence (None: unbounded)."""
    total: tuple[int, int | None, int | None] = (0, 0, 0)
    for op, av in seq:
        item: tuple[int, int | None, int | None]
        if op in (_op.LITERAL, _op.NOT_LITERAL, _op.IN, _op.ANY):
            if op is _op.LITERAL and av == ord("{"):
                raise _UnknownError  # `regex` fuzzy constraints look like a literal brace to `re`
            item = (1, 1, 1)
        elif op in (_op.MAX_REPEAT, _op.MIN_REPEAT, _op.POSSESSIVE_REPEAT):
            least, most, sub = av
            s_low, s_high, s_reach = _width(sub, groups)
            unbounded = most == _op.MAXREPEAT
            r_high = None if unbounded or s_high is None else most * s_high
            r_reach: int | None
            if most == 0:
                r_reach = 0
            elif s_reach is None or s_high is None:
                r_reach = None
            elif unbounded:
                r_reach = s_reach if s_high == 0 else None
            else:
                r_reach = (most - 1) * s_high + s_reach
            item = (least * s_low, r_high, r_reach)
        elif op is _op.SUBPATTERN:
            group, _add, _del, sub = av
            item = _width(sub, groups)
            if group is not None:
                groups[group] = item[1]
        elif op is _op.ATOMIC_GROUP:
            item = _width(av, groups)
        elif op is _op.BRANCH:
            item = _alternatives([_width(branch, dict(groups)) for branch in av[1]])
        elif op in (_op.ASSERT, _op.ASSERT_NOT):
            direction, sub = av
            inner = _width(sub, dict(groups))
            # A lookbehind reads before the position, which a scan always lets it see.
            item = (0, 0, inner[2] if direction == 1 else 0)
        elif op is _op.AT:
            if av in _BOUNDARIES:
                item = (0, 0, 1)
            elif av in (_op.AT_BEGINNING, _op.AT_BEGINNING_STRING, _op.AT_BEGINNING_LINE):
                item = (0, 0, 0)
            else:
                raise _UnknownError  # $ and \\Z need to know where the text ends
        elif op is _op.GROUPREF:
            ref = groups.get(av)
            item = (0, ref, ref)
        elif op is _op.GROUPREF_EXISTS:
            _group, yes, no = av
            options = [_width(yes, dict(groups))]
            options.append(_width(no, dict(groups)) if no is not None else (0, 0, 0))
            item = _alternatives(options)
        else:
            raise _UnknownError
        total = _sequence(*total, item)
    return total


def _sequence(
    low: int, high: int | None, reach: int | None, item: tuple[int, int | None, int | None]
) -> tuple[int, int | None, int | None]:
    i_low, i_high, i_reach = item
    new_reach = reach
    if reach is not None:
        new_reach = None if high is None or i_reach is None else max(reach, high + i_reach)
    new_high = None if high is None or i_high is None else high + i_high
    return low + i_low, new_high, new_reach


def _alternatives(
    options: list[tuple[int, int | None, int | None]],
) -> tuple[int, int | None, int | None]:
    highs = [o[1] for o in options]
    reaches = [o[2] for o in options]
    return (
        min(o[0] for o in options),
        None if None in highs else max(h for h in highs if h is not None),
        None if None in reaches else max(r for r in reaches if r is not None),
    )


def _literals(seq: list[tuple[Any, Any]]) -> tuple[set[str], bool] | None:
    """Strings (case-folded) one of which every match of ``seq`` starts with, and whether
    ``seq`` matches exactly those strings. None: nothing proven."""
    acc = {""}
    for op, av in seq:
        if op in _ZERO_WIDTH_OPS:
            continue
        found = _item_literals(op, av)
        if found is None:
            return None if acc == {""} else (acc, False)
        strings, complete = found
        grown = {a + b for a in acc for b in strings}
        if len(grown) > _MAX_LITERALS:
            return None if acc == {""} else (acc, False)
        acc = grown
        if not complete:
            return acc, False
    return acc, True


def _item_literals(op: Any, av: Any) -> tuple[set[str], bool] | None:
    if op is _op.LITERAL:
        return {_fold(chr(av))}, True
    if op is _op.SUBPATTERN:
        return _literals(av[3])
    if op is _op.ATOMIC_GROUP:
        return _literals(av)
    if op is _op.BRANCH:
        union: set[str] = set()
        complete = True
        for branch in av[1]:
            found = _literals(branch)
            if found is None:
                return None
            union |= found[0]
            complete = complete and found[1]
        return union, complete
    if op in (_op.MAX_REPEAT, _op.MIN_REPEAT, _op.POSSESSIVE_REPEAT):
        least, most, sub = av
        found = _literals(sub)
        if found is None:
            return None
        if least == most == 1:
            return found
        if least == 0 and most == 1:
            return found[0] | {""}, found[1]
        if least >= 1:
            return found[0], False
    return None


def _required(seq: list[tuple[Any, Any]]) -> set[str] | None:
    """Strings one of which every match of ``seq`` contains (the most selective found)."""
    best: set[str] | None = None

    def better(candidate: set[str] | None) -> None:
        nonlocal best
        if not candidate or "" in candidate:
            return
        if best is None or (min(map(len, candidate)), -len(candidate)) > (
            min(map(len, best)),
            -len(best),
        ):
            best = candidate

    for index, (op, av) in enumerate(seq):
        found = _literals(seq[index:])
        better(found[0] if found is not None else None)
        if op is _op.SUBPATTERN:
            better(_required(av[3]))
        elif op is _op.ATOMIC_GROUP:
            better(_required(av))
        elif op in (_op.MAX_REPEAT, _op.MIN_REPEAT, _op.POSSESSIVE_REPEAT) and av[0] >= 1:
            better(_required(av[2]))
        elif op is _op.BRANCH:
            options = [_required(branch) for branch in av[1]]
            if all(o is not None for o in options):
                better(set().union(*(o for o in options if o is not None)))
    return best


def _minimal(literals: set[str], *, prefix: bool = False) -> set[str]:
    """``literals`` without those that contain (``prefix``: start with) another one: finding
    that one is enough."""
    if prefix:
        return {s for s in literals if not any(o != s and s.startswith(o) for o in literals)}
    return {s for s in literals if not any(o != s and o in s for o in literals)}


@functools.cache
def pattern_shape(source: str) -> PatternShape:
    """Analyse ``source`` (`regex` syntax); unknown constructs prove nothing."""
    rewritten = _UNICODE_PROPERTY.sub(lambda m: m.group() if m.group() == "\\\\" else r"\w", source)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            parsed = _sre.parse(rewritten)
        seq = list(parsed)
        low, high, reach = _width(seq, {})
    except (_UnknownError, Exception):  # any parse failure: the rule scans the whole text
        return PatternShape()
    starts = _literals(seq)
    required = _required(seq)
    if starts is not None:
        starts = (_minimal(starts[0], prefix=True), starts[1])
    if required is not None:
        required = _minimal(required)
    return PatternShape(
        min_width=low,
        max_width=high,
        reach=reach,
        starts=tuple(sorted(starts[0])) if starts and "" not in starts[0] else None,
        required=tuple(sorted(required)) if required else None,
    )


@functools.cache
def _fold_table() -> tuple[dict[int, str], re.Pattern[str] | None]:
    """Where case-insensitive matching and ``str.lower`` disagree (LONG S folds like ``s``,
    final sigma like sigma): a translation of lowered text, and a pattern finding such
    characters in it."""
    table: dict[int, str] = {}
    for code in range(0x80, 0x20000):
        char = chr(code)
        lowered = char.lower()
        folded = char.casefold()
        if len(lowered) == 1 and len(folded) == 1 and folded != lowered:
            table[ord(lowered)] = folded
    odd = "".join(re.escape(chr(c)) for c in sorted(table))
    return table, (re.compile(f"[{odd}]") if odd else None)


def _fold(text: str) -> str:
    """``text`` case-folded character by character (same length, same offsets)."""
    low = text.lower()
    if text.isascii():
        return low
    if len(low) != len(text):
        # A character that lower() lengthens (U+0130) stays as it is, so offsets hold.
        low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    table, odd = _fold_table()
    if odd is not None and odd.search(low):
        low = low.translate(table)
    return low


def _stability_source(source: str) -> str:
    """``source`` made unable to succeed, with every end-of-text test turned into a lookahead,
    so that a partial search stops exactly where some path reads the end of the text."""
    out: list[str] = []
    i, size, in_class = 0, len(source), False
    while i < size:
        char = source[i]
        if char == "\\" and i + 1 < size:
            pair = source[i : i + 2]
            if not in_class and pair[1] in "bBZz":
                out.append(
                    {
                        "b": r"(?:(?<=\w)(?!\w)|(?<!\w)(?=\w))",
                        "B": r"(?:(?<=\w)(?=\w)|(?<!\w)(?!\w))",
                        "Z": r"(?![\s\S])",
                        "z": r"(?![\s\S])",
                    }[pair[1]]
                )
            else:
                out.append(pair)
            i += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            out.append(char)
            i += 1
            # A ']' first in a class (after an optional '^') is a literal.
            if i < size and source[i] == "^":
                out.append("^")
                i += 1
            if i < size and source[i] == "]":
                out.append("]")
                i += 1
            continue
        elif char == "$":
            out.append(r"(?=\n|(?![\s\S]))")
            i += 1
            continue
        out.append(char)
        i += 1
    return "(?:" + "".join(out) + ")(?!)"


# --- compiled rules and scans ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A pattern or keyword rule ready to run."""

    rule: Rule
    pattern: regex.Pattern[str]
    view: tuple[Step, ...]
    validator: Callable[[str], bool] | None
    shadow: bool
    shape: PatternShape = PatternShape()
    #: The pattern made unable to match, for finding where a stream must hold back.
    stability: regex.Pattern[str] | None = None

    @property
    def anchors(self) -> tuple[str, ...]:
        """The literals the engine looks for before running the pattern (empty: none)."""
        return self.shape.starts or self.shape.required or ()


@dataclass(slots=True)
class RuleScan:
    """What one scan found.

    ``holds`` (partial scans only) are original offsets from which text must not be released
    yet: a match there could still change when more text arrives. ``spans`` (partial scans
    only) are the original spans of every match, findings or not (a validator may reject
    one): a stream must not cut through one, or the next scan would see a different text.
    """

    findings: list[Finding] = field(default_factory=list)
    holds: list[int] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    views_ms: float = 0.0


#: Texts at least this long are matched with ``concurrent=True``: `regex` then releases the
#: GIL while it matches, so a long check in the pool does not stall the event loop's thread
#: (for short texts the release costs more than it frees).
_CONCURRENT_CHARS = 4096

#: How often a rule whose regex budget ran out while its thread was starved of CPU (it used
#: under half the budget in CPU time) is run again before the timeout counts.
_STARVED_ATTEMPTS = 4


class _DeadlineError(Exception):
    """The whole check ran past its deadline."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _find_all(text: str, literals: tuple[str, ...], limit: int) -> list[int] | None:
    """Sorted start offsets of every occurrence of every literal in ``text``; None when
    there are more than ``limit`` (then a plain scan is cheaper)."""
    found: list[int] = []
    for literal in literals:
        index = text.find(literal)
        while index != -1:
            found.append(index)
            if len(found) > limit:
                return None
            index = text.find(literal, index + 1)
    return sorted(set(found))


class _LiteralIndex:
    """Which of many literals occur in a text, in one pass (Hyperscan's literal matcher,
    when the `hyperscan` package is installed; otherwise one ``in`` test per literal).

    Presence of a UTF-8 encoded literal in the UTF-8 encoded text is presence in the text
    (UTF-8 is self-synchronizing), so this is exact, not a heuristic.
    """

    #: Below this many characters, ``in`` tests are cheaper than a Hyperscan call.
    MIN_CHARS = 2048

    def __init__(self, literals: set[str]) -> None:
        self.literals = sorted(literals)
        self._database: Any = None
        try:
            hyperscan = importlib.import_module("hyperscan")
        except ImportError:  # optional: the plain path is always correct
            return
        try:
            database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            database.compile(
                expressions=[s.encode("utf-8", "surrogatepass") for s in self.literals],
                ids=list(range(len(self.literals))),
                elements=len(self.literals),
                flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(self.literals),
                literal=True,
            )
        except Exception:  # any compile failure: fall back to `in` tests
            return
        self._database = database
        self._scratch_type = hyperscan.Scratch
        # Hyperscan's scratch space must not be shared by concurrent scans: one per thread.
        self._local = threading.local()

    def present(self, text: str) -> set[str] | None:
        """The literals found in ``text``; None when the plain path should be used."""
        if self._database is None or len(text) < self.MIN_CHARS:
            return None
        found: set[int] = set()

        def on_match(index: int, _start: int, _end: int, _flags: int, _ctx: object) -> None:
            found.add(index)

        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = self._scratch_type(self._database)
        self._database.scan(
            text.encode("utf-8", "surrogatepass"), match_event_handler=on_match, scratch=scratch
        )
        return {self.literals[i] for i in found}


class RuleEngine:
    """Runs a policy's pattern and keyword rules. Thread-safe: it keeps no per-call state.

    ``skip=False`` turns off the literal and window shortcuts (every rule scans the whole
    text); it exists so tests and benchmarks can compare against the plain scan.
    """

    def __init__(self, policy: Policy, *, skip: bool = True) -> None:
        settings = policy.settings
        self.policy = policy
        self.skip = skip
        self.timeout_s = settings.regex_timeout_ms / 1000.0
        self.on_error = settings.on_error
        self._by_stage: dict[Stage, list[CompiledRule]] = {stage: [] for stage in Stage}
        _fold_table()  # built once per process, here rather than inside a timed scan
        for rule in policy.rules:
            if not rule.enabled or rule.classifier is not None:
                continue
            source = (
                rule.pattern if rule.pattern is not None else keyword_pattern(rule.keywords or ())
            )
            compiled = CompiledRule(
                rule=rule,
                pattern=regex.compile(source),
                view=canonical_steps(
                    rule.normalization if rule.normalization is not None else settings.normalization
                ),
                validator=get_validator(rule.validator) if rule.validator else None,
                shadow=(rule.mode or settings.mode) is Mode.SHADOW,
                shape=pattern_shape(source),
                stability=_compile_stability(source),
            )
            prepare(compiled.view)
            for stage in rule.applies_to:
                self._by_stage[stage].append(compiled)
        self._literal_index: dict[tuple[Stage, tuple[Step, ...]], _LiteralIndex] = {}
        for stage, compiled_rules in self._by_stage.items():
            wanted: dict[tuple[Step, ...], set[str]] = {}
            for compiled in compiled_rules:
                if compiled.shape.required:
                    wanted.setdefault(compiled.view, set()).update(compiled.shape.required)
            for steps, literals in wanted.items():
                self._literal_index[(stage, steps)] = _LiteralIndex(literals)

    def rules_for(self, stage: Stage) -> list[CompiledRule]:
        """The enabled pattern/keyword rules of ``stage``, in policy order."""
        return self._by_stage[stage]

    def scan(
        self,
        text: str,
        stage: Stage,
        *,
        partial: bool = False,
        start: int = 0,
        deadline: float | None = None,
    ) -> RuleScan:
        """Run every rule of ``stage`` over ``text``.

        Args:
            partial: the text may still grow (streaming): also report ``holds`` and ``spans``.
            start: matches start at or after this original offset; the text before it is
                context (lookbehinds see it). A stream passes the released tail it keeps.
            deadline: a `time.monotonic()` instant by which the whole scan must end. When it
                passes, the scan stops and adds one error finding (``rule_id="check_timeout"``)
                with the action ``on_error`` chooses; findings so far are kept.
        """
        result = RuleScan()
        views: dict[tuple[Step, ...], NormalizedText] = {}
        folded: dict[tuple[Step, ...], str | None] = {}
        settle: dict[tuple[Step, ...], int] = {}
        present: dict[tuple[Step, ...], set[str] | None] = {}
        for compiled in self._by_stage[stage]:
            if deadline is not None and time.monotonic() >= deadline:
                result.findings.append(self._deadline_finding())
                break
            view = views.get(compiled.view)
            if view is None:
                view = views[compiled.view] = self._view(text, compiled.view, views)
            required = compiled.shape.required
            if required is not None and self.skip and not partial:
                # Every match contains one of these: none in the text, no match (a stream
                # still looks, since a match may be on its way).
                low = self._folded(view, compiled.view, folded)
                if low is not None:
                    if compiled.view not in present:
                        index = self._literal_index.get((stage, compiled.view))
                        present[compiled.view] = index.present(low) if index else None
                    found = present[compiled.view]
                    if found is not None:
                        if found.isdisjoint(required):
                            continue
                    elif not any(literal in low for literal in required):
                        continue
            try:
                self._run(compiled, view, result, partial, start, deadline, folded, settle)
            except _DeadlineError:
                result.findings.append(self._deadline_finding())
                break
        result.findings.sort(key=lambda f: (f.span.start if f.span else -1, f.rule_id))
        return result

    @staticmethod
    def _folded(
        view: NormalizedText, steps: tuple[Step, ...], folded: dict[tuple[Step, ...], str | None]
    ) -> str | None:
        """The view's text case-folded (cached per view); None if folding changed its length,
        so offsets in it would lie."""
        if steps not in folded:
            low = _fold(view.text)
            folded[steps] = low if len(low) == len(view.text) else None
        return folded[steps]

    def _deadline_finding(self) -> Finding:
        return self.error_finding("check_timeout", "the check ran past its deadline")

    @staticmethod
    def _view(
        text: str, steps: tuple[Step, ...], views: dict[tuple[Step, ...], NormalizedText]
    ) -> NormalizedText:
        """Normalize, starting from the longest cached view whose steps are a prefix."""
        best: tuple[Step, ...] = ()
        for done in views:
            if len(done) > len(best) and steps[: len(done)] == done:
                best = done
        if best:
            return normalize(text, steps, start=views[best], done=best)
        return normalize(text, steps)

    def _run(
        self,
        compiled: CompiledRule,
        view: NormalizedText,
        result: RuleScan,
        partial: bool,
        start: int,
        deadline: float | None,
        folded: dict[tuple[Step, ...], str | None],
        settle: dict[tuple[Step, ...], int],
    ) -> None:
        rule = compiled.rule
        marks = (len(result.findings), len(result.holds), len(result.spans))
        for attempt in range(_STARVED_ATTEMPTS):
            cpu_began = time.thread_time()
            try:
                self._run_once(compiled, view, result, partial, start, deadline, folded, settle)
                return
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise _DeadlineError from None
                starved = time.thread_time() - cpu_began < self.timeout_s / 2
                if not starved or attempt == _STARVED_ATTEMPTS - 1:
                    break
                # The budget ran out while this thread waited for a CPU, not while it matched
                # (a busy machine): run the rule again, so a verdict never depends on load.
                del result.findings[marks[0] :], result.holds[marks[1] :], result.spans[marks[2] :]
        result.findings.append(
            self.error_finding(rule.id, f"regex timed out after {self.timeout_s * 1000:.0f} ms")
        )

    def _run_once(
        self,
        compiled: CompiledRule,
        view: NormalizedText,
        result: RuleScan,
        partial: bool,
        start: int,
        deadline: float | None,
        folded: dict[tuple[Step, ...], str | None],
        settle: dict[tuple[Step, ...], int],
    ) -> None:
        """One attempt at `_run`; raises `TimeoutError` when its budget runs out."""
        began = time.monotonic()
        budget_end = began + self.timeout_s
        hard_end = budget_end if deadline is None else min(budget_end, deadline)
        view_start = view.to_view(start) if start else 0
        end = len(view.text)
        if partial:
            if compiled.view not in settle:
                settle[compiled.view] = view.to_view(unsettled_from(view.original, compiled.view))
            settled = settle[compiled.view]
            absent = self._absent_hold(compiled, view, view_start, settled, folded)
            if absent is not None:
                # No literal every match needs is in the text: nothing matches yet, and a
                # match can only begin where one could still arrive.
                result.holds.append(view.to_original(absent, absent)[0])
                return
            hold = self._first_unsettled(compiled, view, view_start, settled, hard_end)
            if hold is not None:
                result.holds.append(view.to_original(hold, hold)[0])
        for match in self._matches(compiled, view, view_start, end, hard_end, folded):
            if partial:
                s, e = view.to_original(match.start(), match.end())
                result.spans.append((s, e))
            self._record(compiled, view, match, result)

    def _scan_all(
        self, pattern: regex.Pattern[str], text: str, start: int, end: int, hard_end: float
    ) -> Iterator[regex.Match[str]]:
        """Every match of ``pattern`` in ``text[start:end]``, one plain bounded scan."""
        return pattern.finditer(  # type: ignore[no-any-return]
            text,
            start,
            end,
            concurrent=len(text) >= _CONCURRENT_CHARS,
            timeout=self._left(hard_end),
        )

    @staticmethod
    def _left(hard_end: float) -> float:
        left = hard_end - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def _absent_hold(
        self,
        compiled: CompiledRule,
        view: NormalizedText,
        view_start: int,
        settled: int,
        folded: dict[tuple[Step, ...], str | None],
    ) -> int | None:
        """Where a stream must hold back for a rule none of whose required literals is in the
        text (None: some is, or nothing is proven). A match of a longer text then contains a
        literal that overlaps the new text or the unsettled tail, so it starts no earlier
        than that literal's earliest start minus the longest match."""
        shape = compiled.shape
        if not self.skip or shape.required is None:
            return None
        low = self._folded(view, compiled.view, folded)
        if low is None or any(literal in low for literal in shape.required):
            return None
        longest_literal = max(map(len, shape.required))
        earliest = min(settled, len(low)) - longest_literal + 1
        if shape.starts is not None and set(shape.starts) <= set(shape.required):
            reach_back = 0  # the literal starts the match
        elif shape.max_width is not None:
            reach_back = shape.max_width
        else:
            return None
        return max(view_start, earliest - reach_back)

    def _first_unsettled(
        self,
        compiled: CompiledRule,
        view: NormalizedText,
        view_start: int,
        settled: int,
        hard_end: float,
    ) -> int | None:
        """The first view position at or after ``view_start`` whose outcome may change when
        more text arrives (its matcher reads up to ``settled``, where the view may change)."""
        if compiled.stability is None:
            return view_start
        if settled <= view_start:
            return view_start
        found = compiled.stability.search(
            view.text,
            view_start,
            settled,
            partial=True,
            concurrent=len(view.text) >= _CONCURRENT_CHARS,
            timeout=self._left(hard_end),
        )
        return found.start() if found is not None else settled

    def _matches(
        self,
        compiled: CompiledRule,
        view: NormalizedText,
        view_start: int,
        end: int,
        hard_end: float,
        folded: dict[tuple[Step, ...], str | None],
    ) -> Iterator[regex.Match[str]]:
        """The matches a full left-to-right scan from ``view_start`` finds, in order."""
        pattern, shape, text = compiled.pattern, compiled.shape, view.text
        literals = shape.starts
        windowed = (
            shape.required is not None and shape.max_width is not None and shape.reach is not None
        )
        if not self.skip or shape.min_width == 0 or (literals is None and not windowed):
            yield from self._scan_all(pattern, text, view_start, end, hard_end)
            return
        low_text = self._folded(view, compiled.view, folded)
        if low_text is None:
            yield from self._scan_all(pattern, text, view_start, end, hard_end)
            return
        last_end = view_start
        size = max(1, end - view_start)
        # Each candidate costs a call; past a few per KB, one plain scan is cheaper.
        limit = 8 + size // 256
        positions = _find_all(low_text, literals, limit) if literals is not None else None
        if literals is not None and positions is None and not windowed:
            yield from self._scan_all(pattern, text, view_start, end, hard_end)
            return
        if positions is not None:
            # Every match starts with one of the literals: try exactly those positions, in
            # order, skipping those inside the previous match (as a full scan would).
            for position in positions:
                if position < last_end:
                    continue
                match = pattern.match(
                    text,
                    position,
                    end,
                    concurrent=len(text) >= _CONCURRENT_CHARS,
                    timeout=self._left(hard_end),
                )
                if match is not None:
                    last_end = match.end()
                    yield match
            return
        required, longest, reach = shape.required, shape.max_width, shape.reach
        assert required is not None
        assert longest is not None
        assert reach is not None
        found = _find_all(low_text, required, size // max(longest + reach, 256) + 1)
        if found is None:
            # The literal is common here: windows would cost more than one plain scan.
            yield from self._scan_all(pattern, text, view_start, end, hard_end)
            return
        # A match containing a literal at `a` starts in [a + len - longest, a]; a matcher
        # started at s reads no further than s + reach. (For several literals, the window
        # uses the shortest: a longer one at `a` only narrows where the match can start.)
        shortest = min(map(len, required))
        starts = [(max(view_start, a + shortest - longest), a + 1) for a in found]
        merged: list[list[int]] = []
        for w_low, w_high in starts:
            if w_high <= w_low:
                continue
            if merged and w_low <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], w_high)
            else:
                merged.append([w_low, w_high])
        for w_low, w_high in merged:
            begin = max(w_low, last_end)
            if begin >= w_high:
                continue
            stop = min(end, w_high - 1 + reach)
            for match in pattern.finditer(
                text,
                begin,
                stop,
                concurrent=len(text) >= _CONCURRENT_CHARS,
                timeout=self._left(hard_end),
            ):
                if match.start() >= w_high:
                    break
                last_end = match.end()
                yield match

    def _record(
        self,
        compiled: CompiledRule,
        view: NormalizedText,
        match: regex.Match[str],
        result: RuleScan,
    ) -> None:
        rule = compiled.rule
        group = rule.group if rule.group is not None else 0
        start, end = match.span(group)
        if start < 0 or start == end:
            return
        if compiled.validator is not None and not compiled.validator(view.text[start:end]):
            return
        original_start, original_end = view.to_original(start, end)
        matched = view.original[original_start:original_end]
        result.findings.append(
            Finding(
                rule_id=rule.id,
                category=rule.category,
                action=rule.action,
                severity=rule.severity,
                span=Span(original_start, original_end),
                digest=_digest(matched),
                message=rule.message,
                replacement=rule.redaction,
                shadow=compiled.shadow,
            )
        )

    def error_finding(self, rule_id: str, message: str) -> Finding:
        """A finding for a failure inside the guard, with the action ``on_error`` chooses:
        block when failing closed, flag (allowed but marked for review) when failing open."""
        action = Action.BLOCK if self.on_error is OnError.BLOCK else Action.FLAG
        return Finding(
            rule_id=rule_id,
            category="error",
            action=action,
            severity=Severity.HIGH,
            message=message,
        )


def _compile_stability(source: str) -> regex.Pattern[str] | None:
    """The stability twin of ``source``; None if it does not compile (then a stream holds
    from the start of the unreleased text until the end, which is always safe)."""
    try:
        return regex.compile(_stability_source(source))
    except regex.error:
        return None
