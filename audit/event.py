"""The audit event: one guarded call, as the audit log records it.

This is the value the guard hands to a writer. The writer adds the chain position (chain id,
sequence number, previous hash, hash) when it commits; nothing else about the event changes
after it is built.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from audit.exceptions import AuditEventError

__all__ = ["PHASES", "STREAM_ENDS", "AuditEvent", "new_event_id"]

PHASES: tuple[str, ...] = ("call", "open", "close")
"""``call``: a whole call in one event; ``open`` / ``close``: the two halves of a stream."""

STREAM_ENDS: tuple[str, ...] = ("complete", "blocked", "client_closed", "error")
"""How a stream ended (``stream_end`` of its ``close`` event)."""


def new_event_id() -> str:
    """A fresh, globally unique event id (UUID4 hex)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """Everything an auditor needs about one guarded call.

    ``prompt`` and ``output`` hold the text as the policy's ``audit.store`` setting says:
    the full text, the redacted text, or a SHA-256 digest (``text_storage`` names which).
    ``findings`` are JSON-ready dicts (see ``guardrails.decision.Finding.to_dict``) tagged
    with their ``stage``. ``released_chars`` is, for a stream, how many characters of the
    output reached the caller (``None`` for non-streaming calls).
    """

    request_id: str
    policy_name: str
    policy_version: str
    policy_digest: str
    action: str
    event_id: str = field(default_factory=new_event_id)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    tenant: str | None = None
    user: str | None = None
    model: str | None = None
    prompt: str | None = None
    output: str | None = None
    text_storage: str = "full"
    input_action: str | None = None
    output_action: str | None = None
    findings: tuple[dict[str, Any], ...] = ()
    flagged: bool = False
    latency_ms: float | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    streamed: bool = False
    released_chars: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    phase: str = "call"
    stream_end: str | None = None

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise AuditEventError(f"phase: {self.phase!r} is not one of {', '.join(PHASES)}")
        if self.stream_end is not None:
            if self.phase != "close":
                raise AuditEventError(
                    f"stream_end: set to {self.stream_end!r} on a {self.phase!r} event "
                    "(only a 'close' event says how its stream ended)"
                )
            if self.stream_end not in STREAM_ENDS:
                raise AuditEventError(
                    f"stream_end: {self.stream_end!r} is not one of {', '.join(STREAM_ENDS)}"
                )
