"""Loading policy files: reading YAML, layering ``extends`` bases, validating the result.

`load_policy` reads a file (or `Policy.from_content` a string), layers it on its ``extends``
bases, validates the whole thing with pydantic and either returns a complete `Policy` or
raises `PolicyError` listing *every* problem with its file, line, column and rule id. A policy
never half-loads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from guardrails.exceptions import PolicyError, PolicyProblem
from guardrails.policy.model import Policy, PolicyModel

SHIPPED_POLICIES = "policies"


def shipped_policy_dir() -> Path:
    """The folder of shipped policy packs: ``policies/`` in a checkout, the packaged copy in a
    wheel."""
    checkout = Path(__file__).resolve().parents[2] / SHIPPED_POLICIES
    if (checkout / "default.yaml").is_file():
        return checkout
    return Path(str(resources.files("guardrails") / "_policies"))


def default_policy_path() -> Path:
    """The shipped ``default.yaml``."""
    return shipped_policy_dir() / "default.yaml"


def resolve_policy_path(name_or_path: str | Path, *, base_dir: Path | None = None) -> Path:
    """A path as given, relative to ``base_dir``, or a shipped pack name such as ``default``."""
    candidate = Path(name_or_path)
    if base_dir is not None and not candidate.is_absolute():
        relative = base_dir / candidate
        if relative.exists():
            return relative
    if candidate.exists():
        return candidate
    shipped = shipped_policy_dir() / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    return candidate


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and validate a policy file (``None``: the shipped default policy).

    Raises:
        PolicyError: with every problem found, each naming file, line and rule id.
    """
    resolved = default_policy_path() if path is None else resolve_policy_path(path)
    try:
        text = resolved.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(
            [PolicyProblem(str(path), None, None, None, f"cannot read: {exc}")]
        ) from None
    return load_from_text(
        text, str(resolved), base_dir=resolved.parent, seen=(str(resolved.resolve()),)
    )


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def load_from_text(text: str, path: str, *, base_dir: Path, seen: tuple[str, ...]) -> Policy:
    """Load a policy from YAML ``text`` that error messages call ``path``.

    ``base_dir`` is where relative ``extends`` resolve; ``seen`` holds the resolved paths
    already on the ``extends`` chain, so a base leading back to one of them is a cycle.

    Raises:
        PolicyError: with every problem found, each naming file, line and rule id.
    """
    try:
        data = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        message = f"YAML syntax error: {exc.problem or exc.context}"
        raise PolicyError([PolicyProblem(path, line, column, None, message)]) from None
    except Exception as exc:  # ruamel raises a few unmarked errors (duplicate keys, ...)
        raise PolicyError([PolicyProblem(path, None, None, None, f"YAML error: {exc}")]) from None
    if not isinstance(data, CommentedMap):
        raise PolicyError([PolicyProblem(path, 1, 1, None, "a policy must be a YAML mapping")])

    plain = _to_plain(data)
    problems: list[PolicyProblem] = []
    sources = [text]
    extends = plain.get("extends") or []
    if isinstance(extends, str):
        extends = [extends]
    base_rules: list[Any] = []
    base_settings: dict[str, Any] = {}
    for base_name in extends if isinstance(extends, list) else []:
        base_path = resolve_policy_path(str(base_name), base_dir=base_dir)
        key = str(base_path.resolve())
        if key in seen:
            problems.append(_problem_at(path, data, ("extends",), f"extends cycle via {base_name}"))
            continue
        try:
            base_text = base_path.read_text(encoding="utf-8")
            base = load_from_text(
                base_text, str(base_path), base_dir=base_path.parent, seen=(*seen, key)
            )
        except OSError as exc:
            problems.append(_problem_at(path, data, ("extends",), f"cannot read base: {exc}"))
            continue
        except PolicyError as exc:
            problems.extend(exc.problems)
            continue
        sources.append(base.source)
        # Bases layer in order: a later base's rule with an earlier base's id replaces it
        # field by field, exactly as the overlay does below.
        layered = {r.get("id"): i for i, r in enumerate(base_rules)}
        for rule_dump in (r.model_dump(mode="json", exclude_unset=True) for r in base.rules):
            if rule_dump["id"] in layered:
                index = layered[rule_dump["id"]]
                base_rules[index] = {**base_rules[index], **rule_dump}
            else:
                layered[rule_dump["id"]] = len(base_rules)
                base_rules.append(rule_dump)
        base_settings = _deep_merge(
            base_settings, base.model.settings.model_dump(mode="json", exclude_unset=True)
        )

    # Layering: settings merge key by key (overlay wins); a rule with a base rule's id replaces
    # it field by field; new rules append. Tests stay with the file that declares them.
    merged = dict(plain)
    merged["settings"] = _deep_merge(base_settings, plain.get("settings") or {})
    own_rules = plain.get("rules") or []
    if base_rules and isinstance(own_rules, list):
        by_id = {r.get("id"): i for i, r in enumerate(base_rules)}
        rules = list(base_rules)
        for rule in own_rules:
            if isinstance(rule, dict) and rule.get("id") in by_id:
                index = by_id[rule["id"]]
                rules[index] = {**rules[index], **rule}
            else:
                rules.append(rule)
        merged["rules"] = rules
        offset_map = None  # line numbers of merged rules point at the overlay when they can
    else:
        offset_map = data
    duplicates = list(_duplicate_ids(path, data))
    problems.extend(duplicates)
    try:
        model = PolicyModel.model_validate(merged)
    except ValidationError as exc:
        found = _problems_from(exc, path, offset_map, merged, len(base_rules), data)
        # Duplicates were reported above with their lines; the model's own check repeats them.
        problems.extend(
            p for p in found if not (duplicates and p.message.startswith("duplicate rule id"))
        )
    if problems:
        raise PolicyError(problems)
    problems.extend(_check_tests(model, path, data))
    if problems:
        raise PolicyError(problems)
    source = "\n---\n".join(sources)
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    return Policy(model=model, source=source, path=path, digest=digest)


def _duplicate_ids(path: str, data: CommentedMap) -> Iterator[PolicyProblem]:
    rules = data.get("rules")
    if not isinstance(rules, CommentedSeq):
        return
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if isinstance(rule, CommentedMap) and "id" in rule:
            rule_id = str(rule["id"])
            if rule_id in seen:
                line, column = _locate(data, ("rules", index, "id"))
                yield PolicyProblem(path, line, column, rule_id, "duplicate rule id")
            seen.add(rule_id)


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _to_plain(node: Any) -> Any:
    if isinstance(node, CommentedMap):
        return {str(k): _to_plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_to_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


def _locate(data: Any, loc: tuple[Any, ...]) -> tuple[int | None, int | None]:
    """The 1-based line and column of the deepest node of ``loc`` present in ``data``."""
    line: int | None = None
    column: int | None = None
    node = data
    for key in loc:
        if isinstance(node, CommentedMap) and key in node:
            ln, col = node.lc.key(key)
            line, column = ln + 1, col + 1
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            ln, col = node.lc.item(key)
            line, column = ln + 1, col + 1
            node = node[key]
        else:
            break
    if line is None and isinstance(data, CommentedMap):
        line, column = data.lc.line + 1, data.lc.col + 1
    return line, column


def _problem_at(path: str, data: Any, loc: tuple[Any, ...], message: str) -> PolicyProblem:
    line, column = _locate(data, loc)
    return PolicyProblem(path, line, column, None, message)


def _problems_from(
    exc: ValidationError,
    path: str,
    data: Any,
    merged: dict[str, Any],
    base_rule_count: int,
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
        line, column = _locate(target, yaml_loc)
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
                line, column = _locate(data, ("tests", index, "rules"))
                yield PolicyProblem(
                    path, line, column, rule_id, f"test #{index + 1} names an unknown rule"
                )


__all__ = [
    "SHIPPED_POLICIES",
    "default_policy_path",
    "load_from_text",
    "load_policy",
    "resolve_policy_path",
    "shipped_policy_dir",
]
