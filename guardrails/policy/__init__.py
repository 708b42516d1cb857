"""Policies: YAML files validated into a typed model, with errors that point at file and line.

One module per idea:

- `guardrails.policy.model`: the pydantic model of a policy file, its settings, the loaded
  `Policy` and the JSON Schema (`policy_json_schema`).
- `guardrails.policy.loading`: reading files, layering ``extends`` bases, validating
  (`load_policy`); a policy never half-loads.
- `guardrails.policy.edit`: round-trip edits that keep comments and formatting.
- `guardrails.policy.diff`: semantic diffs between two policy versions.
- `guardrails.policy.lint`: checks that a policy is likely to do what its author meant.
- `guardrails.policy.suite`: inline and separate test suites.
- `guardrails.policy.replay`: a candidate policy over traffic stored in the audit log.

This package re-exports the model and loading; the other modules are imported by name.
"""

from __future__ import annotations

from guardrails.policy.loading import (
    SHIPPED_POLICIES,
    default_policy_path,
    load_from_text,
    load_policy,
    resolve_policy_path,
    shipped_policy_dir,
)
from guardrails.policy.model import (
    AuditOutage,
    AuditSettings,
    AuditStorage,
    ClassifierMatch,
    ClassifierSettings,
    Mode,
    OnError,
    Policy,
    PolicyModel,
    PolicyTest,
    Rule,
    RuleId,
    Settings,
    policy_json_schema,
    policy_json_schema_text,
)
from guardrails.validators import VALIDATORS

__all__ = [
    "SHIPPED_POLICIES",
    "VALIDATORS",
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
    "default_policy_path",
    "load_from_text",
    "load_policy",
    "policy_json_schema",
    "policy_json_schema_text",
    "resolve_policy_path",
    "shipped_policy_dir",
]
