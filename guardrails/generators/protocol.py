"""The generator protocol: what the guard wraps and the proxy serves.

Any callable that takes a prompt and returns text (or chunks of text) is a generator; the
protocols below name the four shapes the guard accepts so type checkers can check adapters.
A generator may also report token usage and why it stopped: a whole completion as a
`Completion` (a `str`), a stream as an iterator with ``usage`` and ``finish_reason``
attributes that are set once it is exhausted (see `guardrails.generators.moe`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "AsyncGenerator",
    "AsyncStreamingGenerator",
    "Completion",
    "Generator",
    "ModelGenerator",
    "StreamingGenerator",
    "usage_dict",
]


@runtime_checkable
class Generator(Protocol):
    """**Protocol:** a synchronous text generator.

    ``generate(prompt, **options)`` returns the whole completion. Options the guard does not
    understand (``max_new_tokens``, ``temperature``, ``stop``...) are passed through untouched.
    """

    def __call__(self, prompt: str, /, **options: Any) -> str: ...


@runtime_checkable
class StreamingGenerator(Protocol):
    """**Protocol:** a generator that yields the completion as text chunks.

    Chunk boundaries are arbitrary (a token, a word, a byte-pair): the guard's streaming check
    never assumes they align with anything.
    """

    def __call__(self, prompt: str, /, **options: Any) -> Iterator[str]: ...


@runtime_checkable
class AsyncGenerator(Protocol):
    """**Protocol:** an ``async def`` generator returning the whole completion."""

    async def __call__(self, prompt: str, /, **options: Any) -> str: ...


@runtime_checkable
class AsyncStreamingGenerator(Protocol):
    """**Protocol:** a generator returning an async iterator of text chunks."""

    def __call__(self, prompt: str, /, **options: Any) -> AsyncIterator[str]: ...


@runtime_checkable
class ModelGenerator(Protocol):
    """**Protocol:** a loaded model that the CLI and the proxy can serve by name.

    ``generate`` returns the whole completion; ``stream`` yields text chunks. Both accept the
    sampling options of the OpenAI API where they make sense (``max_tokens``,
    ``temperature``, ``top_p``, ``stop``, ``seed``).
    """

    name: str

    def generate(self, prompt: str, /, **options: Any) -> str: ...

    def stream(self, prompt: str, /, **options: Any) -> Iterator[str]: ...


class Completion(str):
    """A whole completion that also says what it cost and why it ended.

    It *is* the text (a `str`), so it satisfies `Generator` and every caller that expects a
    string; a server reads `usage` and `finish_reason` from it when present (the proxy puts
    them into the OpenAI response). ``finish_reason`` is ``"stop"`` (end of text or a stop
    sequence) or ``"length"`` (the token budget ran out).
    """

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str

    def __new__(
        cls, text: str, *, prompt_tokens: int, completion_tokens: int, finish_reason: str
    ) -> Completion:
        self = super().__new__(cls, text)
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.finish_reason = finish_reason
        return self

    @property
    def usage(self) -> dict[str, int]:
        """OpenAI's ``usage`` object: prompt, completion and total tokens."""
        return usage_dict(self.prompt_tokens, self.completion_tokens)


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage`` object for the given token counts."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
