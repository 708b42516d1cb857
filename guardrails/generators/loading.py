"""Generators by name: the registry behind ``--generator`` on the command line.

A spec is a registered name (``moe``, ``example``) or ``module:function`` naming any
callable. Unknown names and import failures raise `GeneratorSpecError` with the reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from guardrails.exceptions import GuardrailsError


class GeneratorSpecError(GuardrailsError, ValueError):
    """A ``--generator`` spec that names nothing callable."""


def _example(stream: bool) -> Callable[..., Any]:
    from guardrails.generators.example import support_bot, support_bot_stream

    return support_bot_stream if stream else support_bot


def _moe(stream: bool) -> Callable[..., Any]:
    try:
        from guardrails.generators.moe import load_bundled
    except ImportError as exc:  # the bundled model needs torch
        raise GeneratorSpecError(f"the MoE generator is not available: {exc}") from exc
    model = load_bundled()
    return model.stream if stream else model.generate


GENERATORS: dict[str, Callable[[bool], Callable[..., Any]]] = {
    "example": _example,
    "moe": _moe,
}
"""Registered generator factories by name; each takes ``stream`` and returns a callable."""


def default_generator_name() -> str:
    """``moe`` when the bundled MoE checkpoint is installed, else ``example``."""
    try:
        from guardrails.generators.moe import bundled_available
    except ImportError:
        return "example"
    return "moe" if bundled_available() else "example"


def load_generator(spec: str | None = None, *, stream: bool = False) -> Callable[..., Any]:
    """The callable for ``spec`` (``None``: `default_generator_name`).

    For ``module:function`` specs ``stream`` is ignored: the function decides by returning
    a str or an iterator of chunks.
    """
    name = spec or default_generator_name()
    factory = GENERATORS.get(name)
    if factory is not None:
        return factory(stream)
    module_name, sep, attribute = name.partition(":")
    if not sep or not module_name or not attribute:
        known = ", ".join(sorted(GENERATORS))
        raise GeneratorSpecError(
            f"unknown generator {name!r}: use one of {known} or module:function"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise GeneratorSpecError(f"cannot import {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise GeneratorSpecError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise GeneratorSpecError(f"{name!r} is not callable")
    return target  # type: ignore[no-any-return]


__all__ = [
    "GENERATORS",
    "GeneratorSpecError",
    "default_generator_name",
    "load_generator",
]
