"""The shipped packs and their inline tests, as seeds for the property tests of the rule engine
and of streaming (a helper module, not a test file)."""

from __future__ import annotations

from dataclasses import dataclass

from guardrails import Stage
from guardrails.policy import Policy, load_policy
from guardrails.policy.loading import shipped_policy_dir

__all__ = ["PACKS", "SEEDS", "Seed", "pack"]


def _pack_names() -> list[str]:
    return sorted(path.stem for path in shipped_policy_dir().glob("*.yaml"))


_LOADED: dict[str, Policy] = {}


def pack(name: str) -> Policy:
    """The shipped pack ``name``, loaded once."""
    if name not in _LOADED:
        _LOADED[name] = load_policy(name)
    return _LOADED[name]


PACKS: list[str] = _pack_names()
"""Every shipped pack, by name."""


@dataclass(frozen=True)
class Seed:
    """An inline test of a shipped pack: its text and stage."""

    pack: str
    text: str
    stage: Stage


def _seeds() -> list[Seed]:
    seen: set[tuple[str, Stage]] = set()
    out: list[Seed] = []
    for name in PACKS:
        for test in pack(name).model.tests:
            key = (test.text, test.stage)
            if key not in seen:
                seen.add(key)
                out.append(Seed(name, test.text, test.stage))
    return out


SEEDS: list[Seed] = _seeds()
"""Every distinct inline test text of every shipped pack."""
