"""Policies: YAML files validated into a typed model, with errors that point at file and line.

`load_policy` reads a file (or `Policy.from_content` a string), layers it on its ``extends``
bases, validates the whole thing with pydantic and either returns a complete `Policy` or
raises `PolicyError` listing *every* problem with its file, line, column and rule id. A policy
never half-loads. `policy_json_schema` exports the JSON Schema editors use.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from guardrails.decision import Action, PolicyRef, Severity, Stage
from guardrails.exceptions import PolicyError, PolicyProblem
from guardrails.normalize import ALL_STEPS, Step
from guardrails.validators import VALIDATORS


class OnError(enum.StrEnum):
    """What a failure inside the guard turns into: fail closed (block) or open (allow+flag)."""

    BLOCK = "block"
    ALLOW = "allow"


class AuditStorage(enum.StrEnum):
    """How much of the prompt and output text the audit log keeps."""

    FULL = "full"
    REDACTED = "redacted"
    HASH = "hash"


class Mode(enum.StrEnum):
    """``enforce`` applies actions; ``shadow`` computes and audits them without enforcing."""

    ENFORCE = "enforce"
    SHADOW = "shadow"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class AuditOutage(enum.StrEnum):
    """What happens to calls while the audit store is unreachable."""

    FAIL_CLOSED = "fail_closed"
    SPILL = "spill"


class AuditSettings(_Model):
    """What the audit log records for calls under this policy."""

    store: AuditStorage = Field(
        AuditStorage.REDACTED,
        description="Text kept in the audit log: full text, the redacted text, or a SHA-256.",
    )
    outage: AuditOutage = Field(
        AuditOutage.FAIL_CLOSED,
        description=(
            "fail_closed: while the store is down, calls follow on_error (refused by default)."
            " spill: events go to an fsynced local spill file and are replayed, exactly once,"
            " when the store is back; calls go on."
        ),
    )
    spill_dir: str = Field(
        "guardrails-spill",
        description="Folder of spill files (relative to the working directory) in spill mode.",
    )


class ClassifierSettings(_Model):
    """The safety classifier behind ``classifier:`` rules."""

    model: str = Field("fast", description="'fast', 'minilm', or a directory with weights.")
    enabled: bool = Field(True, description="Off turns every classifier rule off.")


class Settings(_Model):
    """Policy-wide settings."""

    normalization: tuple[Step, ...] = Field(
        ALL_STEPS, description="Normalization steps applied before rules match (default: all)."
    )
    on_error: OnError = Field(
        OnError.BLOCK,
        description="What a regex timeout, classifier failure or audit outage turns into.",
    )
    audit: AuditSettings = Field(default_factory=AuditSettings)
    max_input_chars: int = Field(
        200_000, gt=0, description="Longer texts are blocked without scanning (rule id max_chars)."
    )
    regex_timeout_ms: float = Field(
        100.0, gt=0, description="Upper bound on each regex call; a timeout follows on_error."
    )
    stream_holdback_chars: int = Field(
        24,
        ge=0,
        description="Characters a stream always holds back beyond partial matches.",
    )
    anchor_window_chars: int = Field(
        400,
        ge=16,
        description="Anchored rules run this many characters either side of an anchor.",
    )
    mode: Mode = Field(Mode.ENFORCE, description="shadow: audit verdicts without enforcing.")
    refusal: str = Field(
        "I can't help with that.", description="Text returned instead of a blocked completion."
    )
    classifier: ClassifierSettings = Field(default_factory=ClassifierSettings)


class ClassifierMatch(_Model):
    """Fire when the classifier's score for ``category`` reaches ``threshold``."""

    category: str = Field(description="Classifier category (see the classifier model card).")
    threshold: float | None = Field(
        None, gt=0, le=1, description="Score at which the rule fires (default: calibrated)."
    )


RuleId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.\-]*$", max_length=80)]


class Rule(_Model):
    """One rule: a matcher (``pattern``, ``keywords`` or ``classifier``) and what to do."""

    id: RuleId = Field(description="Unique id, lower-case; shown in findings and errors.")
    description: str = ""
    category: str = Field("policy", description="Grouping such as pii, secret, injection.")
    applies_to: tuple[Stage, ...] = Field((Stage.INPUT, Stage.OUTPUT), min_length=1)
    pattern: str | None = Field(None, description="Regular expression (the `regex` package).")
    group: int | str | None = Field(
        None, description="Capture group whose span is the finding (default: whole match)."
    )
    keywords: tuple[str, ...] | None = Field(
        None, description="Phrases matched case-insensitively on word boundaries."
    )
    classifier: ClassifierMatch | None = None
    anchors: tuple[str, ...] | None = Field(
        None,
        description=(
            "Literals (case-insensitive) at least one of which every match contains. When set,"
            " the pattern only runs near their occurrences (settings.anchor_window_chars),"
            " which makes rare rules nearly free on long texts. Keyword rules get anchors"
            " automatically."
        ),
    )
    validator: Literal["cn_resident_id", "iban", "luhn", "us_ssn"] | None = Field(
        None, description="Checksum a match must pass to count."
    )
    normalization: tuple[Step, ...] | None = Field(
        None, description="Normalization steps for this rule (default: the policy's)."
    )
    action: Action = Action.BLOCK
    severity: Severity = Severity.MEDIUM
    message: str = ""
    replacement: str | None = Field(None, description="Redaction text (default [REDACTED:id]).")
    mode: Mode | None = Field(None, description="Override the policy's mode for this rule.")
    enabled: bool = True
    show_id: bool = Field(True, description="May the rule id be shown to the caller?")

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                regex.compile(value)
            except regex.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @field_validator("keywords")
    @classmethod
    def _keywords_not_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and (not value or any(not k.strip() for k in value)):
            raise ValueError("keywords must be a non-empty list of non-empty phrases")
        return value

    @model_validator(mode="after")
    def _one_matcher(self) -> Rule:
        matchers = [m for m in ("pattern", "keywords", "classifier") if getattr(self, m)]
        if len(matchers) != 1:
            raise ValueError(
                "a rule needs exactly one of pattern, keywords or classifier"
                + (f" (has {', '.join(matchers)})" if matchers else "")
            )
        if self.anchors is not None and (not self.anchors or any(not a for a in self.anchors)):
            raise ValueError("anchors must be non-empty strings")
        if self.validator and not self.pattern:
            raise ValueError("validator needs a pattern")
        if self.group is not None and self.pattern:
            compiled = regex.compile(self.pattern)
            ok = (
                self.group in compiled.groupindex
                if isinstance(self.group, str)
                else 0 <= self.group <= compiled.groups
            )
            if not ok:
                raise ValueError(f"group {self.group!r} is not in the pattern")
        return self

    @property
    def redaction(self) -> str:
        """The text that replaces a redacted span."""
        return self.replacement if self.replacement is not None else f"[REDACTED:{self.id}]"


class PolicyTest(_Model):
    """An inline test: ``text`` checked at ``stage`` must end with ``expect``."""

    text: str
    stage: Stage = Stage.INPUT
    expect: Action
    rules: tuple[str, ...] | None = Field(
        None, description="Rule ids that must fire (exactly this set, shadow findings included)."
    )
    name: str | None = None


class PolicyModel(_Model):
    """The schema of a policy file."""

    schema_: str | None = Field(None, alias="$schema", description="JSON Schema reference.")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    version: str = "1"
    description: str = ""
    extends: tuple[str, ...] = Field(
        (), description="Base policies (paths relative to this file, or shipped pack names)."
    )
    settings: Settings = Field(default_factory=Settings)
    rules: tuple[Rule, ...] = ()
    tests: tuple[PolicyTest, ...] = ()

    @field_validator("extends", mode="before")
    @classmethod
    def _extends_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _unique_ids(self) -> PolicyModel:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
        return self


@dataclass(frozen=True, slots=True)
class Policy:
    """A loaded, validated policy and where it came from.

    ``source`` is the text the digest covers: the file itself, followed by its bases when it
    extends others, so any change to what is in force changes the digest.
    """

    model: PolicyModel
    source: str
    path: str
    digest: str

    @property
    def name(self) -> str:
        """The policy's name."""
        return self.model.name

    @property
    def version(self) -> str:
        """The policy's version string."""
        return self.model.version

    @property
    def settings(self) -> Settings:
        """The policy-wide settings."""
        return self.model.settings

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every rule, enabled or not, bases first."""
        return self.model.rules

    @property
    def ref(self) -> PolicyRef:
        """Name, version and digest, as verdicts carry them."""
        return PolicyRef(self.model.name, self.model.version, self.digest)

    @classmethod
    def from_path(cls, path: str | Path) -> Policy:
        """Load a policy file; see `load_policy`."""
        return load_policy(path)

    @classmethod
    def from_content(
        cls, text: str, *, path: str = "<string>", base_dir: Path | None = None
    ) -> Policy:
        """Load a policy from YAML text; ``path`` is what error messages call it and
        ``base_dir`` (default: the working directory) is where relative ``extends`` resolve.
        When ``path`` is an existing file (an edit about to replace it), a base that leads
        back to it is an ``extends`` cycle."""
        seen = (str(Path(path).resolve()),) if Path(path).is_file() else ()
        return _load(text, path, base_dir=base_dir or Path.cwd(), seen=seen)


# --- loading ---------------------------------------------------------------------------------

SHIPPED_POLICIES = "policies"


def shipped_policy_dir() -> Path:
    """The folder of shipped policy packs: ``policies/`` in a checkout, the packaged copy in a
    wheel."""
    checkout = Path(__file__).resolve().parent.parent / SHIPPED_POLICIES
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
    return _load(text, str(resolved), base_dir=resolved.parent, seen=(str(resolved.resolve()),))


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def _load(text: str, path: str, *, base_dir: Path, seen: tuple[str, ...]) -> Policy:
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
            base = _load(base_text, str(base_path), base_dir=base_path.parent, seen=(*seen, key))
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


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of policy files (for editors and ``guardrails policy schema``)."""
    schema = PolicyModel.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "guardrails policy"
    return schema


def policy_json_schema_text() -> str:
    """`policy_json_schema` as stable, indented JSON."""
    return json.dumps(policy_json_schema(), indent=2, sort_keys=True) + "\n"


__all__ = [
    "VALIDATORS",
    "AuditSettings",
    "AuditStorage",
    "ClassifierMatch",
    "ClassifierSettings",
    "Mode",
    "OnError",
    "Policy",
    "PolicyModel",
    "PolicyTest",
    "Rule",
    "Settings",
    "default_policy_path",
    "load_policy",
    "policy_json_schema",
    "shipped_policy_dir",
]
