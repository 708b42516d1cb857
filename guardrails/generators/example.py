"""A documented example generator: what the demo wraps when no model is chosen.

It is deliberately tiny and deterministic (no model, no network) and answers like a support
desk that leaks a little personal data, so the demo shows output redaction. Any function with
this signature can be wrapped the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

_ANSWERS = {
    "refund": (
        "Refunds take 5-7 days. Questions? Write to billing@example.com or call +44 20 7946 0958."
    ),
    "password": (
        "Reset it from the login page. Our admin key is AKIAIOSFODNN7EXAMPLE, don't share it."
    ),
}
_DEFAULT = "Thanks for your message. A colleague (jane.doe@example.com) will get back to you."


def support_bot(prompt: str, /, **options: Any) -> str:
    """Answer ``prompt`` from a few canned replies chosen by keyword."""
    lowered = prompt.lower()
    for keyword, answer in _ANSWERS.items():
        if keyword in lowered:
            return answer
    return _DEFAULT


def support_bot_stream(prompt: str, /, **options: Any) -> Iterator[str]:
    """`support_bot`, streamed a few characters at a time, as a model server would."""
    answer = support_bot(prompt)
    size = int(options.get("chunk_size", 5))
    for start in range(0, len(answer), size):
        yield answer[start : start + size]


__all__ = [
    "support_bot",
    "support_bot_stream",
]
