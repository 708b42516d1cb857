"""Errors raised by the MoE generator.

::

    GuardrailsError, ValueError
     └── MoEError                 any problem the MoE generator reports
          ├── CheckpointError     a checkpoint directory, file or tensor is missing, unknown or
          │                       of the wrong shape (the message names the file and tensor)
          └── GenerationError     a prompt or sampling option the generator cannot honour
"""

from __future__ import annotations

from guardrails.exceptions import GuardrailsError


class MoEError(GuardrailsError, ValueError):
    """Base class of every error the MoE generator raises."""


class CheckpointError(MoEError):
    """A checkpoint cannot be loaded: missing file, unknown architecture, bad tensor."""


class GenerationError(MoEError):
    """A prompt or a sampling option is invalid (empty prompt, too long, bad parameter)."""


__all__ = [
    "CheckpointError",
    "GenerationError",
    "MoEError",
]
