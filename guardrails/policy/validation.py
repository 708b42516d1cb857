"""Validating layered policy data into a `PolicyModel`, every problem located in the file.

Pydantic reports problems by location in the *merged* data; this module maps each back to
the line and column of the round-trip tree the file parsed into, names the rule by id, and
adds the checks pydantic cannot place (duplicate ids with their own lines, inline tests that
name unknown rules). All problems are reported together.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from guardrails.exceptions import PolicyError, PolicyProblem
from guardrails.policy.model import PolicyModel
from guardrails.policy.reading import locate


def validate_policy(
    merged: dict[str, Any],
    path: str,
    data: CommentedMap,
    *,
    layered: bool,
    problems: list[PolicyProblem] | None = None,
) -> PolicyModel:
    """Validate ``merged`` (the file ``path``, parsed as ``data``, with its bases layered in;
    ``layered`` when base rules were merged, so rule positions no longer match the file).

    Raises:
        PolicyError: every problem, ``problems`` (e.g. from loading bases) first.
    """
    found = list(problems or ())
    duplicates = list(_duplicate_ids(path, data))
    found.extend(duplicates)
    model: PolicyModel | None = None
    try:
        model = PolicyModel.model_validate(merged)
    except ValidationError as exc:
        located = _problems_from(exc, path, None if layered else data, merged, data)
        # Duplicates were reported above with their lines; the model's own check repeats them.
        found.extend(
            p for p in located if not (duplicates and p.message.startswith("duplicate rule id"))
        )
    if found or model is None:
        raise PolicyError(found)
    found.extend(_check_tests(model, path, data))
    if found:
        raise PolicyError(found)
    return model


def problem_at(path: str, data: Any, loc: tuple[Any, ...], message: str) -> PolicyProblem:
    """A problem at the deepest node of ``loc`` present in ``data``."""
    line, column = locate(data, loc)
    return PolicyProblem(path, line, column, None, message)


def _duplicate_ids(path: str, data: CommentedMap) -> Iterator[PolicyProblem]:
    rules = data.get("rules")
    if not isinstance(rules, CommentedSeq):
        return
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if isinstance(rule, CommentedMap) and "id" in rule:
            rule_id = str(rule["id"])
            if rule_id in seen:
                line, column = locate(data, ("rules", index, "id"))
                yield PolicyProblem(path, line, column, rule_id, "duplicate rule id")
            seen.add(rule_id)


def _problems_from(
    exc: ValidationError,
    path: str,
    data: Any,
    merged: dict[str, Any],
    overlay: Any,
) -> Iterator[PolicyProblem]:
    for error in exc.errors():
        loc = tuple(error["loc"])
        rule_id = None
        yaml_loc = loc
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rules = merged.get("rules") or []
            if 0 <= loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
                raw_id = rules[loc[1]].get("id")
                rule_id = str(raw_id) if raw_id is not None else f"#{loc[1] + 1}"
            if data is None:
                # Merged with bases: find the overlay's rule of the same id for its line.
                own = overlay.get("rules") if isinstance(overlay, CommentedMap) else None
                index = next(
                    (
                        i
                        for i, r in enumerate(own or [])
                        if isinstance(r, CommentedMap) and str(r.get("id")) == rule_id
                    ),
                    None,
                )
                yaml_loc = ("rules", index, *loc[2:]) if index is not None else ("rules",)
        target = data if data is not None else overlay
        line, column = locate(target, yaml_loc)
        field = (
            ".".join(str(part) for part in loc[2:] if not isinstance(part, int))
            if rule_id
            else ".".join(str(p) for p in loc)
        )
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] in ("enum", "literal_error"):
            message = f"{message} (got {error.get('input')!r})"
        yield PolicyProblem(
            path, line, column, rule_id, f"{field}: {message}" if field else message
        )


def _check_tests(model: PolicyModel, path: str, data: Any) -> Iterator[PolicyProblem]:
    """Inline tests may only name rules that exist."""
    known = {rule.id for rule in model.rules}
    for index, test in enumerate(model.tests):
        for rule_id in test.rules or ():
            if rule_id not in known:
                line, column = locate(data, ("tests", index, "rules"))
                yield PolicyProblem(
                    path, line, column, rule_id, f"test #{index + 1} names an unknown rule"
                )


__all__ = ["problem_at", "validate_policy"]
