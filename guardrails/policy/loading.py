"""Loading policies: finding files and shipped packs, loading bases, building the `Policy`.

`load_policy` reads a file (or `Policy.from_content` a string) and, in four steps, parses it
within bounds (`guardrails.policy.reading`), loads its ``extends`` bases, layers it on them
(`guardrails.policy.layering`) and validates the result (`guardrails.policy.validation`). It
either returns a complete `Policy` or raises `PolicyError` listing *every* problem with its
file, line, column and rule id. A policy never half-loads.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from ruamel.yaml.comments import CommentedMap

from guardrails.exceptions import PolicyError, PolicyProblem
from guardrails.policy.layering import layer_file
from guardrails.policy.model import Policy
from guardrails.policy.reading import parse_policy_yaml, read_policy_file, to_plain
from guardrails.policy.validation import problem_at, validate_policy

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
    text = read_policy_file(resolved)
    return load_from_text(
        text, str(resolved), base_dir=resolved.parent, seen=(str(resolved.resolve()),)
    )


def load_from_text(text: str, path: str, *, base_dir: Path, seen: tuple[str, ...]) -> Policy:
    """Load a policy from YAML ``text`` that error messages call ``path``.

    ``base_dir`` is where relative ``extends`` resolve; ``seen`` holds the resolved paths
    already on the ``extends`` chain, so a base leading back to one of them is a cycle.

    Raises:
        PolicyError: with every problem found, each naming file, line and rule id.
    """
    data = parse_policy_yaml(text, path)
    if not isinstance(data, CommentedMap):
        raise PolicyError([PolicyProblem(path, 1, 1, None, "a policy must be a YAML mapping")])
    plain = to_plain(data)
    bases, problems = _load_bases(plain.get("extends"), path, data, base_dir=base_dir, seen=seen)
    merged = layer_file(plain, [base.model for base in bases])
    layered = any(base.rules for base in bases) and isinstance(plain.get("rules") or [], list)
    model = validate_policy(merged, path, data, layered=layered, problems=problems)
    source = "\n---\n".join([text, *(base.source for base in bases)])
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    return Policy(model=model, source=source, path=path, digest=digest)


def _load_bases(
    extends: object, path: str, data: CommentedMap, *, base_dir: Path, seen: tuple[str, ...]
) -> tuple[list[Policy], list[PolicyProblem]]:
    """Each base ``extends`` names, loaded; a cycle or a base that does not load is a problem
    (an ``extends`` that is not a list of names is left for validation to report)."""
    names = [extends] if isinstance(extends, str) else extends
    bases: list[Policy] = []
    problems: list[PolicyProblem] = []
    for name in names if isinstance(names, list) else []:
        base_path = resolve_policy_path(str(name), base_dir=base_dir)
        key = str(base_path.resolve())
        if key in seen:
            problems.append(problem_at(path, data, ("extends",), f"extends cycle via {name}"))
            continue
        try:
            base_text = read_policy_file(base_path)
            bases.append(
                load_from_text(
                    base_text, str(base_path), base_dir=base_path.parent, seen=(*seen, key)
                )
            )
        except PolicyError as exc:
            problems.extend(exc.problems)
    return bases, problems


__all__ = [
    "SHIPPED_POLICIES",
    "default_policy_path",
    "load_from_text",
    "load_policy",
    "resolve_policy_path",
    "shipped_policy_dir",
]
