"""Variants of a policy for side-by-side measurements: the same rules without anchors, or
without normalization, so a benchmark (or a test) can compare them in one run."""

from __future__ import annotations

import dataclasses

from guardrails.policy import Policy


def policy_variant(policy: Policy, *, anchors: bool = True, normalization: bool = True) -> Policy:
    """``policy`` with its rules' anchors and/or normalization steps removed."""
    update: dict[str, object] = {}
    if not anchors:
        update["anchors"] = None
    if not normalization:
        update["normalization"] = ()
    rules = tuple(rule.model_copy(update=update) for rule in policy.rules)
    settings = policy.settings
    if not normalization:
        settings = settings.model_copy(update={"normalization": ()})
    model = policy.model.model_copy(update={"rules": rules, "settings": settings})
    suffix = ("" if anchors else "-no-anchors") + ("" if normalization else "-raw")
    return dataclasses.replace(policy, model=model, path=policy.path + suffix)
