"""Semantic diffs between two policy versions: rules added, removed and changed field by
field, and settings changed, compared on the *resolved* policies (bases layered in).

A version is a file, a shipped pack name, or a digest stored in the audit database. The
audit log stores a policy's `Policy.source`: the file's text followed by the sources of its
bases, joined by ``\\n---\\n`` in depth-first order. `policy_from_source` rebuilds the
layering from that text in a temporary folder, so a stored version resolves exactly as it
did when it ran, whatever the files on disk say today.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruamel.yaml.comments import CommentedMap

from guardrails.exceptions import PolicyError, PolicyProblem
from guardrails.policy.loading import load_policy, resolve_policy_path
from guardrails.policy.model import Policy
from guardrails.policy.reading import bounded_yaml, parse_policy_yaml

if TYPE_CHECKING:
    from audit import AuditStore

_DIGEST = re.compile(r"^(?:sha256:)?[0-9a-f]{64}$")
_SEPARATOR = "\n---\n"


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that differs: a dotted path and the value on each side (None: absent)."""

    path: str
    before: Any
    after: Any


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    """What changed from policy ``a`` to policy ``b``."""

    a: str
    b: str
    header: tuple[FieldChange, ...]
    settings: tuple[FieldChange, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[tuple[str, tuple[FieldChange, ...]], ...]
    tests: tuple[int, int]

    @property
    def empty(self) -> bool:
        """No semantic difference (comments, order of keys and formatting do not count)."""
        return not (self.header or self.settings or self.added or self.removed or self.changed)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``--json``)."""

        def changes(items: tuple[FieldChange, ...]) -> list[dict[str, Any]]:
            return [{"field": c.path, "before": c.before, "after": c.after} for c in items]

        return {
            "a": self.a,
            "b": self.b,
            "header": changes(self.header),
            "settings": changes(self.settings),
            "rules_added": list(self.added),
            "rules_removed": list(self.removed),
            "rules_changed": [{"rule_id": r, "fields": changes(c)} for r, c in self.changed],
            "tests": {"before": self.tests[0], "after": self.tests[1]},
        }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _compare(before: dict[str, Any], after: dict[str, Any]) -> tuple[FieldChange, ...]:
    a, b = _flatten(before), _flatten(after)
    return tuple(
        FieldChange(key, a.get(key), b.get(key))
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    )


def diff_policies(a: Policy, b: Policy, *, a_label: str = "", b_label: str = "") -> PolicyDiff:
    """The semantic difference from ``a`` to ``b`` (resolved models; defaults filled in, so
    writing a default value explicitly is not a change)."""
    ma, mb = a.model, b.model
    header = _compare(
        {"name": ma.name, "version": ma.version, "description": ma.description},
        {"name": mb.name, "version": mb.version, "description": mb.description},
    )
    settings = _compare(ma.settings.model_dump(mode="json"), mb.settings.model_dump(mode="json"))
    rules_a = {rule.id: rule.model_dump(mode="json") for rule in ma.rules}
    rules_b = {rule.id: rule.model_dump(mode="json") for rule in mb.rules}
    changed = tuple(
        (rule_id, fields)
        for rule_id in rules_a
        if rule_id in rules_b and (fields := _compare(rules_a[rule_id], rules_b[rule_id]))
    )
    return PolicyDiff(
        a=a_label or a.ref.header(),
        b=b_label or b.ref.header(),
        header=header,
        settings=settings,
        added=tuple(r for r in rules_b if r not in rules_a),
        removed=tuple(r for r in rules_a if r not in rules_b),
        changed=changed,
        tests=(len(ma.tests), len(mb.tests)),
    )


def _extends_of(document: str) -> list[str]:
    data = parse_policy_yaml(document, "<stored policy>", yaml=bounded_yaml(typ="safe"))
    extends = data.get("extends") if isinstance(data, dict) else None
    if isinstance(extends, str):
        return [extends]
    return [str(e) for e in extends] if isinstance(extends, list) else []


def policy_from_source(source: str, *, label: str) -> Policy:
    """Load a policy from its stored `Policy.source` (the file, then its bases' sources).

    Raises:
        PolicyError: the stored text does not split into the documents its ``extends`` name,
            or a document does not load.
    """
    documents = source.split(_SEPARATOR)
    problem = PolicyError(
        [PolicyProblem(label, None, None, None, "stored text does not match its extends")]
    )
    with tempfile.TemporaryDirectory(prefix="guardrails-policy-") as folder:
        root = Path(folder)

        def materialize(index: int) -> int:
            """Write document ``index`` (its bases first); return the next unread index."""
            if index >= len(documents):
                raise problem
            document = documents[index]
            bases = _extends_of(document)
            following = index + 1
            names = []
            for _base in bases:
                names.append(f"doc{following}.yaml")
                following = materialize(following)
            if bases:
                yaml = bounded_yaml()
                yaml.width = 4096
                data = parse_policy_yaml(document, "<stored policy>", yaml=yaml)
                assert isinstance(data, CommentedMap)
                data["extends"] = names
                path = root / f"doc{index}.yaml"
                with path.open("w", encoding="utf-8") as stream:
                    yaml.dump(data, stream)
            else:
                (root / f"doc{index}.yaml").write_text(document, encoding="utf-8")
            return following

        if materialize(0) != len(documents):
            raise problem
        loaded = load_policy(root / "doc0.yaml")
    # The temporary files renamed the bases; the model keeps the names the policy gave them.
    model = loaded.model.model_copy(update={"extends": tuple(_extends_of(documents[0]))})
    return Policy(model=model, source=source, path=label, digest=loaded.digest)


def looks_like_digest(reference: str) -> bool:
    """Whether ``reference`` is a SHA-256 policy digest (optionally ``sha256:``-prefixed)."""
    return bool(_DIGEST.match(reference.strip().lower()))


def load_policy_version(reference: str, *, store: AuditStore | None = None) -> Policy:
    """A policy from a file, a shipped pack name, or a digest stored in ``store``.

    Raises:
        PolicyError: no such file or pack; a digest without a store or not in it; or the
            policy does not load.
    """
    path = resolve_policy_path(reference)
    if path.exists():
        return load_policy(path)
    if not looks_like_digest(reference):
        raise PolicyError(
            [PolicyProblem(reference, None, None, None, "no such policy file or shipped pack")]
        )
    if store is None:
        raise PolicyError(
            [PolicyProblem(reference, None, None, None, "a digest needs an audit store (--audit)")]
        )
    digest = reference.strip().lower()
    candidates = [
        digest,
        digest.removeprefix("sha256:"),
        "sha256:" + digest.removeprefix("sha256:"),
    ]
    for candidate in dict.fromkeys(candidates):
        text = store.get_policy_text(candidate)
        if text is not None:
            return policy_from_source(text, label=f"{store!r}#{candidate[:19]}")
    raise PolicyError(
        [
            PolicyProblem(
                reference, None, None, None, "no policy with this digest in the audit store"
            )
        ]
    )


__all__ = [
    "FieldChange",
    "PolicyDiff",
    "diff_policies",
    "load_policy_version",
    "looks_like_digest",
    "policy_from_source",
]
