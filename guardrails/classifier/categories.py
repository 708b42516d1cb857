"""The classifier's categories and their mapping onto published taxonomies.

The names are ours (short, snake_case, stable in policy files); the mapping says which
OpenAI moderation categories and MLCommons AILuminate hazard categories each one covers, so a
policy author can line our scores up with either.
"""

from __future__ import annotations

from typing import Final

CATEGORIES: Final[tuple[str, ...]] = (
    "prompt_injection",
    "violence",
    "hate",
    "sexual",
    "self_harm",
    "illicit",
    "privacy",
)

# category -> (OpenAI moderation categories, MLCommons AILuminate v1.0 hazard categories)
TAXONOMY: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "prompt_injection": (
        (),  # OpenAI moderation has no jailbreak category
        (),  # neither has the MLCommons hazard taxonomy: it is an attack, not a hazard
    ),
    "violence": (
        ("violence", "violence/graphic", "harassment/threatening"),
        ("S1 Violent Crimes",),
    ),
    "hate": (
        ("hate", "hate/threatening", "harassment"),
        ("S10 Hate",),
    ),
    "sexual": (
        ("sexual", "sexual/minors"),
        ("S12 Sexual Content", "S3 Sex-Related Crimes", "S4 Child Sexual Exploitation"),
    ),
    "self_harm": (
        ("self-harm", "self-harm/intent", "self-harm/instructions"),
        ("S11 Suicide & Self-Harm",),
    ),
    "illicit": (
        ("illicit", "illicit/violent"),
        ("S2 Non-Violent Crimes", "S9 Indiscriminate Weapons (CBRNE)", "S8 Intellectual Property"),
    ),
    "privacy": (
        (),  # OpenAI moderation has no privacy category
        ("S7 Privacy",),
    ),
}

TAXONOMY_NOTE: Final[str] = (
    "prompt_injection is outside both taxonomies (OWASP LLM01: Prompt Injection); privacy maps "
    "to MLCommons S7 only. MLCommons S5 Defamation, S6 Specialized Advice and S13 Elections "
    "have no category here."
)


__all__ = [
    "CATEGORIES",
    "TAXONOMY",
    "TAXONOMY_NOTE",
]
