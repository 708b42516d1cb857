"""The one error the classifier raises: `ClassifierError`.

It is a `RuntimeError` (the contract the guard pipeline codes against) and a
`guardrails.exceptions.GuardrailsError`, so callers that catch every library error catch it too.
Raised for missing or corrupt weights, a weights file whose SHA-256 does not match its config,
non-text input, an unknown model name and malformed labelled data.
"""

from __future__ import annotations

from guardrails.exceptions import GuardrailsError


class ClassifierError(GuardrailsError, RuntimeError):
    """The classifier could not load or could not score what it was given."""


__all__ = [
    "ClassifierError",
]
