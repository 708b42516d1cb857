"""The tamper-evident audit log: durable group-commit writers, hash chains, verification.

Also: spill mode for store outages (`AuditStore(..., spill_dir=...)`), RFC 6962 Merkle trees
with Ed25519-signed checkpoints and offline-checkable proofs (`audit.checkpoint`), retention
purges that keep the log verifiable (`audit.retention`), and the queries behind the audit
CLI (`audit.query`). A library of its own (it never imports ``guardrails``). The schema is
owned by the Alembic migrations in ``migrations/``; `upgrade` applies them programmatically.
"""

from __future__ import annotations

from audit.checkpoint import (
    Checkpoint,
    check_proof_document,
    consistency_between,
    create_checkpoints,
    generate_signing_key,
    inclusion_proof_for,
    load_public_key,
    load_signing_key,
)
from audit.engine import default_audit_url
from audit.event import AuditEvent, new_event_id
from audit.exceptions import (
    AuditClosedError,
    AuditConfigError,
    AuditError,
    AuditEventError,
    AuditIntegrityError,
    AuditStoreError,
)
from audit.migrate import current_revision, downgrade, upgrade
from audit.query import Counts, EventFilter
from audit.retention import PurgeResult, parse_age, purge_bodies
from audit.store import AuditStore, StoredEvent
from audit.verify import ChainProblem, VerifyReport, verify_chain
from audit.writer import AuditWriter, Receipt

__all__ = [
    "AuditClosedError",
    "AuditConfigError",
    "AuditError",
    "AuditEvent",
    "AuditEventError",
    "AuditIntegrityError",
    "AuditStore",
    "AuditStoreError",
    "AuditWriter",
    "ChainProblem",
    "Checkpoint",
    "Counts",
    "EventFilter",
    "PurgeResult",
    "Receipt",
    "StoredEvent",
    "VerifyReport",
    "check_proof_document",
    "consistency_between",
    "create_checkpoints",
    "current_revision",
    "default_audit_url",
    "downgrade",
    "generate_signing_key",
    "inclusion_proof_for",
    "load_public_key",
    "load_signing_key",
    "new_event_id",
    "parse_age",
    "purge_bodies",
    "upgrade",
    "verify_chain",
]
