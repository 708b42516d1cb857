"""The policy model: the pydantic schema of a policy file, its settings, and the loaded `Policy`.

`PolicyModel` is what a policy file validates into; `Policy` is a validated model with the
text and digest of what is in force. `policy_json_schema` exports the JSON Schema editors use.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from guardrails.decision import Action, PolicyRef, Severity, Stage
from guardrails.normalize import ALL_STEPS, Step
from guardrails.validators import VALIDATORS

if TYPE_CHECKING:
    ValidatorName = str
else:  # every registered validator (guardrails.validators), so the JSON Schema lists them
    ValidatorName = Literal[tuple(sorted(VALIDATORS))]


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
    min_signal_chars: int | None = Field(
        None,
        ge=0,
        description=(
            "A text with fewer signal characters (letters and digits; a CJK character counts"
            " 3) is never blocked by the classifier alone: its block findings become flags."
            " None: the model's own minimum."
        ),
    )


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
    check_timeout_ms: float | None = Field(
        1000.0,
        gt=0,
        description=(
            "Deadline for a whole check (all rules, then the classifier); running past it"
            " follows on_error (rule id check_timeout). null: no deadline."
        ),
    )
    stream_holdback_chars: int = Field(
        24,
        ge=0,
        description="Characters a stream always holds back beyond partial matches.",
    )
    anchor_window_chars: int = Field(
        400,
        ge=16,
        description=(
            "Ignored since the engine derives sound windows from each pattern; kept so"
            " existing policies still load."
        ),
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
            "Documentation only: literals every match contains. The engine derives the"
            " literals and windows it skips text with from the pattern itself, so a wrong"
            " declaration can never make a rule miss a match."
        ),
    )
    validator: ValidatorName | None = Field(
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
        from guardrails.policy.loading import load_policy

        return load_policy(path)

    @classmethod
    def from_content(
        cls, text: str, *, path: str = "<string>", base_dir: Path | None = None
    ) -> Policy:
        """Load a policy from YAML text; ``path`` is what error messages call it and
        ``base_dir`` (default: the working directory) is where relative ``extends`` resolve.
        When ``path`` is an existing file (an edit about to replace it), a base that leads
        back to it is an ``extends`` cycle."""
        from guardrails.policy.loading import load_from_text

        seen = (str(Path(path).resolve()),) if Path(path).is_file() else ()
        return load_from_text(text, path, base_dir=base_dir or Path.cwd(), seen=seen)


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
    "AuditOutage",
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
    "RuleId",
    "Settings",
    "policy_json_schema",
    "policy_json_schema_text",
]
