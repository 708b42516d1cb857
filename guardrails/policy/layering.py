"""Layering a policy on its ``extends`` bases: pure merges of plain data, no I/O.

Settings merge key by key (the later layer wins); a rule whose id an earlier layer declared
replaces that rule field by field; new rules append. Bases layer in the order ``extends``
lists them, then the file itself goes on top. Tests stay with the file that declares them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from guardrails.policy.model import PolicyModel


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` on ``base``: nested mappings merge, anything else in ``overlay`` wins."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def layer_rules(rules: Sequence[Any], overlay: Iterable[Any]) -> list[Any]:
    """``overlay``'s rules on ``rules``: an id ``rules`` has replaces that rule field by field,
    anything else appends (so a duplicate id within ``overlay`` stays visible to validation)."""
    layered = list(rules)
    by_id = {r.get("id"): i for i, r in enumerate(layered) if isinstance(r, dict)}
    for rule in overlay:
        if isinstance(rule, dict) and rule.get("id") in by_id:
            index = by_id[rule["id"]]
            layered[index] = {**layered[index], **rule}
        else:
            layered.append(rule)
    return layered


def layer_bases(bases: Iterable[PolicyModel]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rules and settings of ``bases`` layered in order, as the fields each set."""
    rules: list[Any] = []
    settings: dict[str, Any] = {}
    for base in bases:
        rules = layer_rules(
            rules, (r.model_dump(mode="json", exclude_unset=True) for r in base.rules)
        )
        settings = deep_merge(settings, base.settings.model_dump(mode="json", exclude_unset=True))
    return rules, settings


def layer_file(plain: dict[str, Any], bases: Sequence[PolicyModel]) -> dict[str, Any]:
    """A file's plain data with its (already loaded) bases layered underneath.

    Without base rules, or when the file's ``rules`` is not a list (validation reports it),
    the file's ``rules`` stay exactly as written, so their lines can be reported.
    """
    base_rules, base_settings = layer_bases(bases)
    merged = dict(plain)
    own_settings = plain.get("settings") or {}
    if isinstance(own_settings, dict):  # anything else is left for validation to report
        merged["settings"] = deep_merge(base_settings, own_settings)
    own_rules = plain.get("rules") or []
    if base_rules and isinstance(own_rules, list):
        merged["rules"] = layer_rules(base_rules, own_rules)
    return merged


__all__ = ["deep_merge", "layer_bases", "layer_file", "layer_rules"]
