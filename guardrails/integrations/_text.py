"""How chat messages become the text a policy checks, and tool calls travel through it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["TOOL_CALLS_MARK", "join_output", "render_messages", "split_output", "text_of"]

TOOL_CALLS_MARK = "\n\n[tool calls] "
"""Separates an answer's text from the JSON of its tool calls in the checked output, so a
rule sees the arguments a model wants to pass as well as what it says."""


def text_of(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list of blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and isinstance(block.get("text"), str):
                parts.append(block["text"])
        return "\n".join(parts)
    return str(content)


def render_messages(messages: Iterable[tuple[str, str]]) -> str:
    """``role: text`` lines: every message the model will read, tool results included."""
    return "\n".join(f"{role}: {text}" for role, text in messages if text)


def join_output(text: str, tool_calls: list[dict[str, Any]]) -> str:
    """The output as checked: the text, then the tool calls' names and arguments as JSON."""
    if not tool_calls:
        return text
    return text + TOOL_CALLS_MARK + json.dumps(tool_calls, ensure_ascii=False, sort_keys=True)


def split_output(checked: str, expected_calls: int) -> tuple[str, list[dict[str, Any]]] | None:
    """Undo `join_output` on the checked (maybe redacted) text; None when the redaction
    left tool calls that no longer parse or number differently (the caller withholds them)."""
    if not expected_calls:
        return checked, []
    text, mark, tail = checked.rpartition(TOOL_CALLS_MARK)
    if not mark:
        return None
    try:
        calls = json.loads(tail)
    except ValueError:
        return None
    if not isinstance(calls, list) or len(calls) != expected_calls:
        return None
    if not all(isinstance(c, dict) and isinstance(c.get("args"), dict) for c in calls):
        return None
    return text, calls
