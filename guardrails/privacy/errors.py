"""The one error private training raises: `PrivacyError`.

A `ValueError` (bad data, a δ that is not below 1/n, an ε budget Opacus cannot reach) and a
`guardrails.exceptions.GuardrailsError`, so callers that catch every library error catch it.
Its message names the file and line for data problems.
"""

from __future__ import annotations

from guardrails.exceptions import GuardrailsError


class PrivacyError(GuardrailsError, ValueError):
    """Private training refused its input or could not meet the privacy target."""


class TrainingDivergedError(PrivacyError):
    """Training produced a model that is not usable (non-finite weights, or a public
    held-out loss far above the untrained model's); nothing is written."""


__all__ = [
    "PrivacyError",
    "TrainingDivergedError",
]
