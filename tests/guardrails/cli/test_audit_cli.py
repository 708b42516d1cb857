"""`guardrails db ...` and `guardrails audit verify`, through the real Typer app."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from audit import AuditEvent, AuditStore
from audit.schema import EVENTS
from guardrails.cli import app

DIGEST = "sha256:" + "cd" * 32


@pytest.fixture
def runner(monkeypatch) -> CliRunner:
    """A runner with no audit URL or key inherited from the environment."""
    monkeypatch.delenv("GUARDRAILS_AUDIT_URL", raising=False)
    monkeypatch.delenv("AUDIT_KEY", raising=False)
    return CliRunner()


def _write_log(url: str, *, hmac_key: bytes | None = None, events: int = 3) -> str:
    """Write a small log; return its chain id."""
    with AuditStore(url, hmac_key=hmac_key, auto_upgrade=True) as store:
        store.record_policy(DIGEST, "default", "1", "rules: []\n")
        with store.writer() as writer:
            receipts = [
                writer.write(
                    AuditEvent(
                        request_id=f"r{i}",
                        policy_name="default",
                        policy_version="1",
                        policy_digest=DIGEST,
                        action="allow",
                        prompt="hi",
                    )
                )
                for i in range(events)
            ]
    return receipts[0].chain_id


def _tamper(url: str, chain_id: str, seq: int) -> None:
    with AuditStore(url) as store, store.engine.begin() as conn:
        conn.execute(
            update(EVENTS)
            .where(EVENTS.c.chain_id == chain_id, EVENTS.c.seq == seq)
            .values(prompt="edited")
        )


def test_db_upgrade_current_downgrade(runner, tmp_path):
    """upgrade creates the schema at head (0002), current reports it, downgrade base empties it."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    result = runner.invoke(app, ["db", "upgrade", "--audit", url])
    assert result.exit_code == 0, result.output
    assert "revision 0002" in result.output
    assert runner.invoke(app, ["db", "current", "--audit", url]).output.strip() == "0002"
    result = runner.invoke(app, ["db", "downgrade", "--audit", url, "--revision", "base"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["db", "current", "--audit", url]).output.strip() == "none"


def test_db_upgrade_uses_the_environment_default(runner, tmp_path, monkeypatch):
    """Without --audit, $GUARDRAILS_AUDIT_URL names the database."""
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("GUARDRAILS_AUDIT_URL", url)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    assert (tmp_path / "env.db").exists()


def test_db_upgrade_defaults_to_local_sqlite_file(runner, tmp_path, monkeypatch):
    """With no option and no environment, the schema lands in ./guardrails-audit.db."""
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    assert (tmp_path / "guardrails-audit.db").exists()


def test_db_downgrade_requires_a_revision(runner, tmp_path):
    """downgrade without --revision is a usage error (exit 2)."""
    result = runner.invoke(app, ["db", "downgrade", "--audit", f"sqlite:///{tmp_path}/x.db"])
    assert result.exit_code == 2


def test_verify_intact_log(runner, tmp_path):
    """An intact log exits 0 and says so, for people and for scripts."""
    url = f"sqlite:///{tmp_path / 'v.db'}"
    _write_log(url)
    result = runner.invoke(app, ["audit", "verify", "--audit", url])
    assert result.exit_code == 0, result.output
    assert "intact" in result.output
    assert "3 events in 1 chains" in result.output
    doc = json.loads(runner.invoke(app, ["audit", "verify", "--audit", url, "--json"]).stdout)
    assert (doc["ok"], doc["events_checked"], doc["problems"]) == (True, 3, [])


def test_verify_tampered_log_names_the_row(runner, tmp_path):
    """An edited row exits 1 and names chain, seq and reason; --json carries the same."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    chain_id = _write_log(url)
    _tamper(url, chain_id, 2)
    result = runner.invoke(app, ["audit", "verify", "--audit", url])
    assert result.exit_code == 1
    assert f"chain {chain_id} seq 2" in result.output
    assert "hash mismatch (row edited)" in result.output
    result = runner.invoke(app, ["audit", "verify", "--audit", url, "--json"])
    assert result.exit_code == 1
    (problem,) = json.loads(result.stdout)["problems"]
    assert (problem["chain_id"], problem["seq"]) == (chain_id, 2)


def test_verify_with_hmac_key_from_environment(runner, tmp_path, monkeypatch):
    """The key comes from the named variable: right key 0, wrong key 1, unset variable 2."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    _write_log(url, hmac_key=b"s3cret")
    args = ["audit", "verify", "--audit", url, "--hmac-key-env", "AUDIT_KEY"]
    unset = runner.invoke(app, args)
    assert unset.exit_code == 2
    assert "AUDIT_KEY" in unset.output
    monkeypatch.setenv("AUDIT_KEY", "s3cret")
    assert runner.invoke(app, args).exit_code == 0
    monkeypatch.setenv("AUDIT_KEY", "wrong")
    wrong = runner.invoke(app, args)
    assert wrong.exit_code == 1
    assert "wrong HMAC key" in wrong.output


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "bad audit database URL"),
        ("sqlite://", "in-memory SQLite"),
        ("nosuch://host/db", "unusable audit database URL"),
        ("sqlite:///{tmp}/missing.db", "no audit database at"),
        ("postgresql+psycopg://postgres@127.0.0.1:1/none", "failed"),
    ],
)
def test_verify_errors_are_messages_not_tracebacks(runner, tmp_path, url, message):
    """Bad, missing or unreachable stores exit 2 with a one-line message."""
    result = runner.invoke(app, ["audit", "verify", "--audit", url.format(tmp=tmp_path)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_verify_refuses_a_database_without_the_schema(runner, tmp_path):
    """A database that was never migrated exits 2 and says to run db upgrade."""
    (tmp_path / "empty.db").write_bytes(b"")
    result = runner.invoke(app, ["audit", "verify", "--audit", f"sqlite:///{tmp_path}/empty.db"])
    assert result.exit_code == 2
    assert "guardrails db upgrade" in result.output
