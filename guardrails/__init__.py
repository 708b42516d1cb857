"""guardrails: a safety and audit layer for language model generation.

Put any ``generate()`` behind a policy of rules and a classifier, and record every call in a
tamper-evident audit log::

    from guardrails import Guard

    guard = Guard.from_policy("policies/default.yaml", audit="sqlite:///audit.db")

    @guard
    def generate(prompt: str) -> str: ...

Importing this package never imports torch; the classifier and the MoE generator load it
when first used.
"""

from guardrails.decision import Action, Finding, PolicyRef, Severity, Span, Stage, Verdict
from guardrails.exceptions import (
    AuditUnavailable,
    Blocked,
    GeneratorError,
    GuardInputError,
    GuardrailsError,
    PolicyError,
    PolicyProblem,
)
from guardrails.guard import (
    AsyncGuardedStream,
    CallContext,
    CallOutcome,
    Guard,
    GuardedStream,
    guard_context,
)
from guardrails.policy import Policy, load_policy, policy_json_schema
from guardrails.streaming import StreamChecker, StreamStep

__version__ = "0.1.0"

__all__ = [
    "Action",
    "AsyncGuardedStream",
    "AuditUnavailable",
    "Blocked",
    "CallContext",
    "CallOutcome",
    "Finding",
    "GeneratorError",
    "Guard",
    "GuardInputError",
    "GuardedStream",
    "GuardrailsError",
    "Policy",
    "PolicyError",
    "PolicyProblem",
    "PolicyRef",
    "Severity",
    "Span",
    "Stage",
    "StreamChecker",
    "StreamStep",
    "Verdict",
    "__version__",
    "guard_context",
    "load_policy",
    "policy_json_schema",
]
