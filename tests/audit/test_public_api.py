"""The audit package's public surface and its independence from guardrails."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import audit
from audit.chain import CONTENT_FIELDS


def test_all_is_sorted_and_pinned():
    """`audit.__all__` is sorted and holds exactly the documented public names."""
    assert audit.__all__ == sorted(audit.__all__)
    expected = {
        "AuditClosedError", "AuditConfigError", "AuditError", "AuditEvent", "AuditEventError",
        "AuditIntegrityError", "AuditStore", "AuditStoreError", "AuditWriter", "ChainProblem",
        "Checkpoint", "Counts", "EventFilter", "PurgeResult", "Receipt", "StoredEvent",
        "VerifyReport", "check_proof_document", "consistency_between", "create_checkpoints",
        "current_revision", "default_audit_url", "downgrade", "generate_signing_key",
        "inclusion_proof_for", "load_public_key", "load_signing_key", "new_event_id",
        "parse_age", "purge_bodies", "upgrade", "verify_chain",
    }  # fmt: skip
    assert set(audit.__all__) == expected
    for name in audit.__all__:
        assert hasattr(audit, name), name


def test_hash_covers_every_event_field():
    """Every AuditEvent field is in the hashed content, so none can be edited unseen."""
    assert set(CONTENT_FIELDS) == {f.name for f in dataclasses.fields(audit.AuditEvent)}


def test_audit_does_not_import_guardrails():
    """Importing every audit module in a fresh interpreter never loads guardrails."""
    code = (
        "import sys, audit, audit.chain, audit.engine, audit.migrate, audit.schema, "
        "audit.store, audit.verify, audit.writer, audit.exceptions\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'guardrails')\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=os.path.dirname(os.path.dirname(audit.__file__)),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_audit_url_reads_environment(monkeypatch):
    """default_audit_url honours $GUARDRAILS_AUDIT_URL and falls back to a local SQLite file."""
    monkeypatch.delenv("GUARDRAILS_AUDIT_URL", raising=False)
    assert audit.default_audit_url() == "sqlite:///guardrails-audit.db"
    monkeypatch.setenv("GUARDRAILS_AUDIT_URL", "postgresql+psycopg://db/audit")
    assert audit.default_audit_url() == "postgresql+psycopg://db/audit"
