"""Generators: the protocol the guard wraps, the built-in MoE model and adapters."""

from guardrails.generators.protocol import (
    AsyncGenerator,
    AsyncStreamingGenerator,
    Completion,
    Generator,
    ModelGenerator,
    StreamingGenerator,
)

__all__ = [
    "AsyncGenerator",
    "AsyncStreamingGenerator",
    "Completion",
    "Generator",
    "ModelGenerator",
    "StreamingGenerator",
]
