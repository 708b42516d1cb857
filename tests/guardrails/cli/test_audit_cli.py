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
    """upgrade creates the schema at head (0004), current reports it, downgrade base empties it."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    result = runner.invoke(app, ["db", "upgrade", "--audit", url])
    assert result.exit_code == 0, result.output
    assert "revision 0004" in result.output
    assert runner.invoke(app, ["db", "current", "--audit", url]).output.strip() == "0004"
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


@pytest.fixture
def log_url(tmp_path) -> str:
    """A SQLite log with three events (one blocked with a finding) and a signing key."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with AuditStore(url, auto_upgrade=True) as store:
        store.record_policy(DIGEST, "default", "1", "rules: []\n")
        with store.writer() as writer:
            for i, action in enumerate(["allow", "block", "allow"]):
                findings = (
                    ({"rule_id": "pii.email", "stage": "input", "spans": [[6, 11]]},)
                    if action == "block"
                    else ()
                )
                writer.write(
                    AuditEvent(
                        request_id=f"r{i}",
                        policy_name="default",
                        policy_version="1",
                        policy_digest=DIGEST,
                        action=action,
                        tenant="acme" if i else "globex",
                        prompt=f"mail: a@b.c #{i}",
                        findings=findings,
                    )
                )
    return url


def _ids(runner, url: str, *args: str) -> list[str]:
    result = runner.invoke(app, ["audit", "query", "--audit", url, "--format", "jsonl", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line)["event_id"] for line in result.output.splitlines()]


def test_query_filters_and_formats(runner, log_url):
    """Filters narrow the result; JSON, JSONL and CSV carry the same events."""
    assert len(_ids(runner, log_url)) == 3
    assert len(_ids(runner, log_url, "--tenant", "acme")) == 2
    assert len(_ids(runner, log_url, "--rule", "pii.email", "--action", "block")) == 1
    assert _ids(runner, log_url, "--until", "1d") == []
    as_json = runner.invoke(app, ["audit", "query", "--audit", log_url, "--format", "json"])
    assert len(json.loads(as_json.output)) == 3
    as_csv = runner.invoke(app, ["audit", "query", "--audit", log_url, "--format", "csv"])
    assert as_csv.output.splitlines()[0].startswith("event_id,created_at")
    assert len(as_csv.output.splitlines()) == 4
    table = runner.invoke(app, ["audit", "query", "--audit", log_url, "--limit", "2"])
    assert table.exit_code == 0
    assert "--page 2 for more" in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday-ish"], "expected an ISO time"),
        (["--stage", "middle"], "not one of input, output"),
        (["--format", "xml"], "choose one of"),
        (["--since", "1h", "--until", "2h"], "is not before"),
    ],
)
def test_bad_query_filters_exit_2_with_a_message(runner, log_url, args, message):
    """Bad filters are one-line errors with exit code 2, never tracebacks."""
    result = runner.invoke(app, ["audit", "query", "--audit", log_url, *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_show_event_and_unknown_id(runner, log_url):
    """show prints the whole event; an unknown id exits 2 naming it."""
    (blocked,) = _ids(runner, log_url, "--action", "block")
    shown = runner.invoke(app, ["audit", "show", blocked, "--audit", log_url])
    assert shown.exit_code == 0
    assert "pii.email" in shown.output
    assert blocked in shown.output
    missing = runner.invoke(app, ["audit", "show", "nope", "--audit", log_url])
    assert missing.exit_code == 2
    assert "no event with id 'nope'" in missing.output


def test_checkpoint_prove_check_proof_and_verify(runner, log_url, tmp_path):
    """keygen, checkpoint, prove, then check-proof offline; a forged proof exits 1."""
    key = tmp_path / "audit.key"
    assert runner.invoke(app, ["audit", "keygen", str(key)]).exit_code == 0
    signed = runner.invoke(app, ["audit", "checkpoint", "--key", str(key), "--audit", log_url])
    assert "1 checkpoint(s) signed" in signed.output
    event_id = _ids(runner, log_url)[0]
    proof = runner.invoke(app, ["audit", "prove", event_id, "--audit", log_url])
    assert proof.exit_code == 0, proof.output
    path = tmp_path / "proof.json"
    path.write_text(proof.output)
    pub = f"{key}.pub"
    ok = runner.invoke(app, ["audit", "check-proof", str(path), "--public-key", pub])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(proof.output)
    doc["event_hash"] = "11" * 32
    path.write_text(json.dumps(doc))
    bad = runner.invoke(app, ["audit", "check-proof", str(path), "--public-key", pub])
    assert bad.exit_code == 1
    assert "INVALID" in bad.output
    verified = runner.invoke(app, ["audit", "verify", "--audit", log_url, "--public-key", pub])
    assert verified.exit_code == 0
    assert "1 signed checkpoints" in verified.output
    unknown = runner.invoke(app, ["audit", "prove", "nope", "--audit", log_url])
    assert unknown.exit_code == 2


def test_stats_json_and_plot(runner, log_url, tmp_path):
    """stats counts by action and rule, and writes a PNG with --plot."""
    plot = tmp_path / "s.png"
    result = runner.invoke(
        app, ["audit", "stats", "--audit", log_url, "--json", "--plot", str(plot)]
    )
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output[: result.output.rindex("}") + 1])
    assert counts["by_action"] == {"allow": 2, "block": 1}
    assert counts["by_rule"] == {"pii.email": 1}
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_tail_follow_stops_after_max_events(runner, log_url):
    """tail -f prints the last event, follows to one more, then stops at --max-events."""
    follow = ["-f", "--interval", "0.05", "--max-events", "2", "--format", "jsonl"]
    result = runner.invoke(app, ["audit", "tail", "--audit", log_url, "-n", "1", *follow])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 2


def test_export_with_proofs_and_purge(runner, log_url, tmp_path):
    """export carries a checkable proof per event; purge keeps the log verifiable."""
    key = tmp_path / "k"
    runner.invoke(app, ["audit", "keygen", str(key)])
    runner.invoke(app, ["audit", "checkpoint", "--key", str(key), "--audit", log_url])
    exported = runner.invoke(app, ["audit", "export", "--audit", log_url])
    docs = [json.loads(line) for line in exported.output.splitlines()]
    assert len(docs) == 3
    assert all(doc["proof"]["tree_size"] == 3 for doc in docs)
    purged = runner.invoke(
        app, ["audit", "purge", "--older-than", "1s", "--yes", "--audit", log_url]
    )
    assert purged.exit_code == 0, purged.output
    bad_age = runner.invoke(app, ["audit", "purge", "--older-than", "soon", "--yes"])
    assert bad_age.exit_code == 2
    assert runner.invoke(app, ["audit", "verify", "--audit", log_url]).exit_code == 0


def test_query_against_missing_database_exits_2(runner, tmp_path):
    """Querying a SQLite file that does not exist is an error, and creates nothing."""
    url = f"sqlite:///{tmp_path / 'none.db'}"
    result = runner.invoke(app, ["audit", "query", "--audit", url])
    assert result.exit_code == 2
    assert "no audit database" in result.output
    assert not (tmp_path / "none.db").exists()
