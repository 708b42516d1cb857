"""Every error the guardrails library raises, in one tree.

```
GuardrailsError                    (this module unless another is named)
├── PolicyError                    a policy file does not load; lists every problem at file:line
├── GuardInputError                (also TypeError) a prompt or output that is not text / not UTF-8
├── Blocked                        a guarded call was stopped; carries the verdict and request id
│   └── AuditUnavailable           stopped because the audit store could not record the call
├── GeneratorError                 the wrapped generator failed; the failure is audited first
├── GeneratorSpecError             (also ValueError; guardrails.generators.loading) a --generator
│                                  spec that names nothing callable
├── MoEError                       (also ValueError; guardrails.generators.moe.errors) the MoE
│   │                              generator refused or failed
│   ├── CheckpointError            a checkpoint file or tensor is missing, unknown or misshapen
│   └── GenerationError            a prompt or sampling option the generator cannot honour
├── ClassifierError                (also RuntimeError; guardrails.classifier.errors) the
│                                  classifier could not load or score
├── PrivacyError                   (also ValueError; guardrails.privacy.errors) private training
│   │                              refused its input or could not meet the privacy target
│   └── TrainingDivergedError      training produced an unusable model; nothing was written
├── KeysFileError                  (also ValueError; guardrails.proxy.keys) the proxy's keys file
│                                  cannot be read or is malformed
├── ProxyConfigError               (also ValueError; guardrails.proxy.config) a proxy setting
│                                  that cannot serve
├── ProxyHTTPError                 (guardrails.proxy.errors) the proxy answers a request with an
│                                  OpenAI-style error body and this status
└── UpstreamError                  (guardrails.proxy.upstream) the upstream failed; carries the
                                   status the proxy answers with
```

Not an error: `guardrails.pipeline.ClientClosed` is a `BaseException`, like the cancellation
it stands for, thrown into a call's steps when the caller went away, so that no ``except
Exception`` mistakes it for a failure.

The audit package has its own tree (`audit.exceptions`, rooted at `audit.AuditError`), since
it never imports guardrails; the guard turns its store errors into `AuditUnavailable` when the
policy says ``on_error: block``. A test (``tests/test_api_surface.py``) holds every exception
class of the package to this drawing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from guardrails.decision import Verdict


class GuardrailsError(Exception):
    """Base class of every error raised by guardrails."""


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    """One thing wrong with a policy file, located as precisely as the YAML allows."""

    file: str
    line: int | None
    column: int | None
    rule_id: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        rule = f" rule '{self.rule_id}':" if self.rule_id else ""
        return f"{where}:{rule} {self.message}"


class PolicyError(GuardrailsError):
    """A policy failed to load. ``problems`` holds every problem found, not just the first."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"policy has {count} error{'s' if count != 1 else ''}:\n{lines}")


class GuardInputError(GuardrailsError, TypeError):
    """The text handed to the guard is not text: wrong type or undecodable bytes."""


class Blocked(GuardrailsError):  # noqa: N818 - the name the API promises: `except Blocked`
    """A guarded call was blocked. ``verdict`` says by which rules; ``request_id`` finds the
    audit event."""

    def __init__(self, verdict: Verdict, request_id: str, *, released: str = "") -> None:
        self.verdict = verdict
        self.request_id = request_id
        #: For a stream: the text that had already been released before the block.
        self.released = released
        rules = ", ".join(verdict.rule_ids) or "policy"
        super().__init__(f"{verdict.stage.value} blocked by {rules} (request {request_id})")


class AuditUnavailable(Blocked):
    """The call was refused because its audit event could not be committed."""


class GeneratorError(GuardrailsError):
    """The wrapped generator raised; the original exception is the ``__cause__``."""


__all__ = [
    "AuditUnavailable",
    "Blocked",
    "GeneratorError",
    "GuardInputError",
    "GuardrailsError",
    "PolicyError",
    "PolicyProblem",
]
