"""Editing policy files in place without losing what people wrote in them.

Every edit loads the file with ruamel.yaml's round-trip loader (comments, key order, quoting
and flow/block style survive), changes the tree, validates the *result* as a whole policy
(bases included) and only then replaces the file atomically (a temporary file in the same
folder, fsynced, then renamed over the original). An edit that would leave an invalid policy
raises `PolicyError` and writes nothing.

Key paths address the YAML tree with dots, and rules by id in brackets:
``settings.audit.store``, ``rules[pii.email].action``, ``tests[0].expect``. A rule that only
a base policy (``extends``) declares gets an overlay entry ``{id: ...}`` in this file, which
the loader layers on the base's rule field by field.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import itertools
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from guardrails.exceptions import PolicyError, PolicyProblem
from guardrails.policy.model import Policy
from guardrails.policy.reading import bounded_yaml, parse_policy_yaml, read_policy_file

_SEGMENT = re.compile(r"([A-Za-z_$][\w$\-]*)|\[([^\]]+)\]")


@dataclass(frozen=True, slots=True)
class PolicyEdit:
    """The outcome of one edit: the text before and after, and the policy it validated to."""

    path: Path
    before: str
    after: str
    policy: Policy
    summary: str

    @property
    def changed(self) -> bool:
        """Whether the edit changed the file's text at all."""
        return self.before != self.after

    def diff(self) -> str:
        """A unified diff of the file, as ``git diff`` would show it."""
        return "".join(
            difflib.unified_diff(
                self.before.splitlines(keepends=True),
                self.after.splitlines(keepends=True),
                fromfile=f"a/{self.path.name}",
                tofile=f"b/{self.path.name}",
            )
        )


def _problem(path: Path, message: str, rule_id: str | None = None) -> PolicyError:
    return PolicyError([PolicyProblem(str(path), None, None, rule_id, message)])


def _detect_indent(text: str) -> tuple[int, int, int]:
    """(mapping, sequence, offset) indentation as ruamel.yaml wants it, read off the file so
    an edit does not re-indent every line (defaults: 2, 4, 2, the shipped packs' style)."""
    mapping, sequence, offset = 2, 4, 2
    lines = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    found_map = found_seq = False
    for line, following in itertools.pairwise(lines):
        stripped = line.rstrip()
        if not stripped.endswith(":") or stripped.lstrip().startswith("-"):
            continue
        parent = len(line) - len(line.lstrip())
        child = len(following) - len(following.lstrip())
        if child <= parent and not following.lstrip().startswith("-"):
            continue
        if following.lstrip().startswith("- ") and not found_seq:
            offset = child - parent
            sequence = offset + 2
            found_seq = True
        elif not following.lstrip().startswith("-") and not found_map:
            mapping = child - parent
            found_map = True
        if found_map and found_seq:
            break
    return mapping, max(sequence, offset + 2), offset


def _yaml(text: str) -> YAML:
    yaml = bounded_yaml()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long patterns or test lines
    mapping, sequence, offset = _detect_indent(text)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def parse_value(text: str) -> Any:
    """A command-line value as YAML reads it: ``true``, ``3``, ``[input, output]``, text."""
    try:
        return bounded_yaml(typ="safe").load(text)
    except YAMLError:
        return text


def parse_key(key: str) -> list[str | int]:
    """``rules[pii.email].action`` as ``["rules", "pii.email", "action"]``; a bracketed
    number (``tests[0]``) is a list index.

    Raises:
        ValueError: the key has no segments or stray characters.
    """
    parts: list[str | int] = []
    position = 0
    while position < len(key):
        if key[position] == "." and parts:
            position += 1
        match = _SEGMENT.match(key, position)
        if match is None:
            raise ValueError(f"cannot parse key path {key!r} at character {position + 1}")
        name, bracket = match.groups()
        if bracket is not None:
            parts.append(int(bracket) if bracket.isdigit() else bracket.strip())
        else:
            parts.append(name)
        position = match.end()
    if not parts:
        raise ValueError("empty key path")
    return parts


class _Document:
    """A policy file's round-trip tree, with the lookups edits share."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text = read_policy_file(path)
        self.yaml = _yaml(self.text)
        data = parse_policy_yaml(self.text, str(path), yaml=self.yaml)
        if not isinstance(data, CommentedMap):
            raise _problem(path, "a policy must be a YAML mapping")
        self.data = data

    def rules(self, *, create: bool) -> CommentedSeq:
        rules = self.data.get("rules")
        if isinstance(rules, CommentedSeq):
            return rules
        if rules is not None:
            raise _problem(self.path, "rules: must be a list")
        if not create:
            return CommentedSeq()
        seq = CommentedSeq()
        keys = list(self.data.keys())
        position = keys.index("tests") if "tests" in keys else len(keys)
        self.data.insert(position, "rules", seq)
        return seq

    def rule_index(self, rule_id: str) -> int | None:
        for index, rule in enumerate(self.rules(create=False)):
            if isinstance(rule, CommentedMap) and str(rule.get("id")) == rule_id:
                return index
        return None

    def base_rule_ids(self) -> set[str]:
        """Ids the bases declare (empty when the file extends nothing)."""
        if not self.data.get("extends"):
            return set()
        stripped = CommentedMap((k, v) for k, v in self.data.items() if k in ("name", "extends"))
        buffer = io.StringIO()
        self.yaml.dump(stripped, buffer)
        base = Policy.from_content(
            buffer.getvalue(), path=str(self.path), base_dir=self.path.parent
        )
        return {rule.id for rule in base.rules}

    def rule(self, rule_id: str) -> CommentedMap:
        """This file's entry for ``rule_id``, adding an overlay entry for a base's rule."""
        index = self.rule_index(rule_id)
        if index is not None:
            found = self.rules(create=False)[index]
            assert isinstance(found, CommentedMap)
            return found
        if rule_id not in self.base_rule_ids():
            raise _problem(self.path, "no such rule in this file or its bases", rule_id)
        overlay = CommentedMap([("id", rule_id)])
        self.rules(create=True).append(overlay)
        return overlay

    def dump(self) -> str:
        buffer = io.StringIO()
        self.yaml.dump(self.data, buffer)
        return buffer.getvalue()


def _apply(
    path: str | Path, change: Callable[[_Document], str], *, write: bool = True
) -> PolicyEdit:
    """Load, change, validate, then (``write``) atomically replace the file."""
    file = Path(path)
    document = _Document(file)
    summary = change(document)
    after = document.dump()
    policy = Policy.from_content(after, path=str(file), base_dir=file.parent)
    edit = PolicyEdit(file, document.text, after, policy, summary)
    if write and edit.changed:
        write_atomically(file, after)
    return edit


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old file or the new one, never half
    of either (same-folder temporary file, fsync, rename); the file's mode is kept."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else None
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def set_value(path: str | Path, key: str, value: Any, *, write: bool = True) -> PolicyEdit:
    """Set ``key`` (see the module docstring for key paths) to ``value``.

    Raises:
        PolicyError: the key path does not resolve, or the result does not validate.
    """

    def change(document: _Document) -> str:
        try:
            parts = parse_key(key)
        except ValueError as exc:
            raise _problem(document.path, str(exc)) from None
        node: Any = document.data
        rule_id: str | None = None
        for position, part in enumerate(parts[:-1]):
            if part == "rules" and position == 0 and len(parts) > 2 and isinstance(parts[1], str):
                continue
            if position == 1 and parts[0] == "rules" and isinstance(part, str):
                rule_id = part
                node = document.rule(part)
                continue
            if isinstance(node, CommentedSeq) and isinstance(part, int):
                if not 0 <= part < len(node):
                    raise _problem(document.path, f"{key}: index {part} is out of range")
                node = node[part]
            elif isinstance(node, CommentedMap) and isinstance(part, str):
                if part not in node:
                    node[part] = CommentedMap()
                node = node[part]
            else:
                raise _problem(document.path, f"{key}: {part!r} does not address a field")
        last = parts[-1]
        in_list = isinstance(node, CommentedSeq) and isinstance(last, int) and 0 <= last < len(node)
        if in_list or (isinstance(node, CommentedMap) and isinstance(last, str)):
            node[last] = value
        else:
            raise _problem(document.path, f"{key}: {last!r} does not address a field", rule_id)
        return f"set {key} = {value!r}"

    return _apply(path, change, write=write)


def set_enabled(path: str | Path, rule_id: str, enabled: bool, *, write: bool = True) -> PolicyEdit:
    """Enable or disable a rule (a base's rule gets an overlay entry in this file)."""

    def change(document: _Document) -> str:
        document.rule(rule_id)["enabled"] = enabled
        return f"{'enabled' if enabled else 'disabled'} rule {rule_id}"

    return _apply(path, change, write=write)


def add_rule(
    path: str | Path, rule: str | dict[str, Any], *, after: str | None = None, write: bool = True
) -> PolicyEdit:
    """Add a rule given as YAML text (a mapping) or a dict; after rule ``after`` or at the end.

    Raises:
        PolicyError: the rule is not a mapping with an id, the id already exists here or in a
            base (edit it with `set_value` instead), ``after`` is unknown, or the result does
            not validate (a regex that does not compile, an unknown field, ...).
    """

    def change(document: _Document) -> str:
        loaded = parse_value(rule) if isinstance(rule, str) else rule
        if not isinstance(loaded, dict) or "id" not in loaded:
            raise _problem(document.path, "a new rule must be a mapping with an id")
        rule_id = str(loaded["id"])
        if document.rule_index(rule_id) is not None or rule_id in document.base_rule_ids():
            raise _problem(document.path, "a rule with this id already exists", rule_id)
        entry = CommentedMap(loaded.items())  # block style, whatever style it was given in
        rules = document.rules(create=True)
        if after is None:
            rules.append(entry)
        else:
            index = document.rule_index(after)
            if index is None:
                raise _problem(document.path, "no such rule in this file (--after)", after)
            rules.insert(index + 1, entry)
        return f"added rule {rule_id}"

    return _apply(path, change, write=write)


def remove_rule(path: str | Path, rule_id: str, *, write: bool = True) -> PolicyEdit:
    """Remove a rule this file declares (a base's rule can only be disabled here).

    Raises:
        PolicyError: no such rule in this file, or inline tests still name it.
    """

    def change(document: _Document) -> str:
        index = document.rule_index(rule_id)
        if index is None:
            hint = (
                "; it comes from a base policy: disable it instead"
                if rule_id in document.base_rule_ids()
                else ""
            )
            raise _problem(document.path, f"no such rule in this file{hint}", rule_id)
        del document.rules(create=False)[index]
        return f"removed rule {rule_id}"

    return _apply(path, change, write=write)


__all__ = [
    "PolicyEdit",
    "add_rule",
    "parse_key",
    "parse_value",
    "remove_rule",
    "set_enabled",
    "set_value",
    "write_atomically",
]
