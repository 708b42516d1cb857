"""The generator protocol: what the guard wraps and the proxy serves.

Any callable that takes a prompt and returns text (or chunks of text) is a generator; the
protocols below name the four shapes the guard accepts so type checkers can check adapters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol, runtime_checkable


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
