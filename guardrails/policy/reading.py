"""Policy YAML as untrusted input: read and parse with bounds, every error at ``file:line``.

Policy files are edited by people and hot-reloaded by a running proxy, so a file must never
be able to take the reader down. Three bounds hold for every policy, test file and stored
policy text this package reads:

- **size**: at most `MAX_POLICY_BYTES`; a larger file is refused after reading only that
  many bytes, with the line where it crosses the limit.
- **alias expansion**: aliases (``*name``) may add at most `MAX_ALIAS_NODES` nodes in all
  when expanded, counted as the document is composed, before anything is built from it. A
  "billion laughs" alias bomb is refused at the line of the alias that crosses the bound;
  an alias inside the node it names (a recursive structure) is refused outright.
- **nesting depth**: at most `MAX_DEPTH` levels.

Every YAML error (syntax, duplicate keys, a bound) becomes a `PolicyError` whose problem
names the file, line and column. `locate` and `to_plain` are the two views of the parsed
round-trip tree the loader and the editors share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer, ComposerError, MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from guardrails.exceptions import PolicyError, PolicyProblem

#: The largest policy (or policy test) file read, in bytes of UTF-8: 30 times the largest
#: shipped pack, and small enough that the pure-Python round-trip parser (about 60 µs of CPU
#: a token) parses a worst-case file, one token every two bytes, in under 10 s of CPU.
MAX_POLICY_BYTES = 256 * 1024
#: The most nodes alias expansion may add to one document.
MAX_ALIAS_NODES = 10_000
#: The deepest nesting of mappings and sequences.
MAX_DEPTH = 64


#: The context of a `ComposerError` this module raises: valid YAML, refused as too costly.
_REFUSED = "refused by a policy reading bound"


class _BoundedComposer(Composer):
    """A composer that counts what aliases expand to and refuses past `MAX_ALIAS_NODES`."""

    def compose_document(self: Any) -> Any:
        self._expanded = 0
        self._sizes: dict[int, int] = {}
        self._open: set[str] = set()
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.parser.check_event(AliasEvent):
            event = self.parser.peek_event()
            if event.anchor in self._open:
                raise ComposerError(
                    _REFUSED,
                    None,
                    f"recursive alias *{event.anchor} is not allowed",
                    event.start_mark,
                )
            target = self.anchors.get(event.anchor)
            if target is not None:
                self._expanded += self._size(target)
                if self._expanded > MAX_ALIAS_NODES:
                    raise ComposerError(
                        _REFUSED,
                        None,
                        f"alias *{event.anchor} expands the document past {MAX_ALIAS_NODES:,}"
                        " nodes; refused as an alias bomb",
                        event.start_mark,
                    )
            return super().compose_node(parent, index)
        anchor = self.parser.peek_event().anchor
        if anchor is None:
            return super().compose_node(parent, index)
        self._open.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._open.discard(anchor)

    def _size(self, node: Node) -> int:
        """Nodes in ``node`` with every alias inside it expanded (memoized: linear time)."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        size = 1
        if isinstance(node, SequenceNode):
            size += sum(self._size(child) for child in node.value)
        elif isinstance(node, MappingNode):
            size += sum(self._size(k) + self._size(v) for k, v in node.value)
        self._sizes[id(node)] = size
        return size


def bounded_yaml(*, typ: str = "rt", allow_duplicate_keys: bool = False) -> YAML:
    """A ruamel.yaml loader with this module's alias and depth bounds (round-trip by default,
    ``typ="safe"`` for plain values). Callers may set dump options on it."""
    yaml = YAML(typ=typ, pure=True)
    yaml.Composer = _BoundedComposer
    yaml.max_depth = MAX_DEPTH
    yaml.allow_duplicate_keys = allow_duplicate_keys
    return yaml


def _too_large(path: str, head: bytes) -> PolicyError:
    line = head[:MAX_POLICY_BYTES].decode("utf-8", errors="ignore").count("\n") + 1
    return PolicyError(
        [
            PolicyProblem(
                path,
                line,
                None,
                None,
                f"file is larger than the limit of {MAX_POLICY_BYTES:,} bytes"
                " (it passes the limit on this line)",
            )
        ]
    )


def read_policy_file(path: str | Path) -> str:
    """The text of a policy file, read as UTF-8, at most `MAX_POLICY_BYTES` of it.

    Raises:
        PolicyError: the file cannot be read, is not UTF-8, or is over the size limit.
    """
    try:
        with Path(path).open("rb") as stream:
            head = stream.read(MAX_POLICY_BYTES + 1)
        if len(head) > MAX_POLICY_BYTES:
            raise _too_large(str(path), head)
        return head.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(
            [PolicyProblem(str(path), None, None, None, f"cannot read: {exc}")]
        ) from None


def parse_policy_yaml(text: str, path: str, *, yaml: YAML | None = None) -> Any:
    """Parse ``text`` (which error messages call ``path``) within this module's bounds.

    ``yaml`` is a loader from `bounded_yaml` with the caller's options (default: round-trip,
    duplicate keys refused).

    Raises:
        PolicyError: one problem at ``file:line:column`` for a syntax error, a duplicate key,
            an alias bomb or recursive alias, nesting too deep, or text over the size limit.
    """
    encoded = text.encode("utf-8", errors="surrogatepass")
    if len(encoded) > MAX_POLICY_BYTES:
        raise _too_large(path, encoded)
    loader = yaml or bounded_yaml()
    try:
        return loader.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        problem = (exc.problem or exc.context or str(exc)).strip()
        if exc.context == _REFUSED:
            message = problem
        elif isinstance(exc, MaxDepthExceededError):
            message = f"nested deeper than {MAX_DEPTH} levels; refused"
        else:
            message = f"YAML syntax error: {problem}"
        raise PolicyError([PolicyProblem(path, line, column, None, message)]) from None
    except (YAMLError, RecursionError, ValueError) as exc:
        # ruamel raises a few unmarked errors; a depth it cannot reach lands here as well.
        message = f"YAML error: {exc}"
        raise PolicyError([PolicyProblem(path, None, None, None, message)]) from None


def to_plain(node: Any) -> Any:
    """A round-trip tree as plain dicts, lists and strings (what pydantic validates)."""
    if isinstance(node, CommentedMap):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [to_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


def locate(data: Any, loc: tuple[Any, ...]) -> tuple[int | None, int | None]:
    """The 1-based line and column of the deepest node of ``loc`` present in ``data``."""
    line: int | None = None
    column: int | None = None
    node = data
    for key in loc:
        if isinstance(node, CommentedMap) and key in node:
            ln, col = node.lc.key(key)
            line, column = ln + 1, col + 1
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            ln, col = node.lc.item(key)
            line, column = ln + 1, col + 1
            node = node[key]
        else:
            break
    if line is None and isinstance(data, CommentedMap):
        line, column = data.lc.line + 1, data.lc.col + 1
    return line, column


__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_POLICY_BYTES",
    "bounded_yaml",
    "locate",
    "parse_policy_yaml",
    "read_policy_file",
    "to_plain",
]
