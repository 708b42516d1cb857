"""Fault injection against the log with the attacker also rewriting chain heads and checkpoint
rows: whole-chain deletion, truncation, rewrites behind a checkpoint published outside the
database (C2SP signed notes), and forged notes. Each case counts what verify reports."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from audit import AuditStore, create_checkpoints, generate_signing_key, verify_chain
from audit.checkpoint import Checkpoint
from audit.exceptions import AuditConfigError
from audit.published import load_published, note_for, publish_checkpoints
from audit.schema import CHAINS, CHECKPOINTS, EVENTS, GENESIS_HASH


def _log(store: AuditStore, make_event, chains: int = 2, events: int = 6) -> list[str]:
    """Write ``chains`` chains of ``events`` events; return their chain ids."""
    ids = []
    for c in range(chains):
        with store.writer() as writer:
            for i in range(events):
                writer.write(make_event(request_id=f"c{c}-r{i}"))
            ids.append(writer.chain_id)
    return ids


def _publish(store: AuditStore, folder) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    made = create_checkpoints(store, key)
    assert publish_checkpoints(made, folder, key)
    return key


def _truncate_and_cover_up(store: AuditStore, chain_id: str, keep: int) -> None:
    """Delete the rows after ``keep``, rewrite the head to the new last row, drop checkpoints."""
    with store.engine.begin() as conn:
        conn.execute(delete(EVENTS).where(EVENTS.c.chain_id == chain_id, EVENTS.c.seq > keep))
        last = conn.execute(
            select(EVENTS.c.hash).where(EVENTS.c.chain_id == chain_id, EVENTS.c.seq == keep)
        ).scalar_one()
        conn.execute(
            update(CHAINS)
            .where(CHAINS.c.chain_id == chain_id)
            .values(head_seq=keep, head_hash=last)
        )
        conn.execute(delete(CHECKPOINTS))


def test_whole_chain_deleted_with_a_stored_checkpoint_is_named(store, make_event):
    """Deleting a chain's rows and chain row is caught through its checkpoint rows."""
    first, _ = _log(store, make_event)
    create_checkpoints(store, Ed25519PrivateKey.generate())
    with store.engine.begin() as conn:
        conn.execute(delete(EVENTS).where(EVENTS.c.chain_id == first))
        conn.execute(delete(CHAINS).where(CHAINS.c.chain_id == first))
    report = verify_chain(store)
    assert not report.ok
    assert [(p.chain_id, "whole chain deleted" in p.reason) for p in report.problems] == [
        (first, True)
    ]


def test_whole_chain_and_its_checkpoints_deleted_is_caught_by_the_published_log(
    tmp_path, store, make_event
):
    """Chain rows, chain row and checkpoint rows all deleted: the published note names it."""
    first, _second = _log(store, make_event)
    _publish(store, tmp_path / "pub")
    with store.engine.begin() as conn:
        conn.execute(delete(EVENTS).where(EVENTS.c.chain_id == first))
        conn.execute(delete(CHAINS).where(CHAINS.c.chain_id == first))
        conn.execute(delete(CHECKPOINTS))
    assert verify_chain(store).ok  # what the database alone can show: nothing
    report = verify_chain(store, published=tmp_path / "pub")
    assert not report.ok
    assert report.published_checked == 2
    assert [p.chain_id for p in report.problems] == [first]
    assert "whole chain deleted" in report.problems[0].reason


def test_truncation_with_head_rewritten_and_checkpoints_deleted_is_caught(
    tmp_path, store, make_event
):
    """Tail truncation + head rewrite + checkpoint rows deleted passes the in-database check
    (even with the trusted key) but not the published checkpoints."""
    first, _ = _log(store, make_event)
    key = _publish(store, tmp_path / "pub")
    _truncate_and_cover_up(store, first, keep=3)
    assert verify_chain(store, public_keys=[key.public_key()]).ok
    report = verify_chain(store, public_keys=[key.public_key()], published=tmp_path / "pub")
    assert not report.ok
    assert "truncated behind a published checkpoint" in report.problems[0].reason


def test_rewrite_behind_a_published_checkpoint_with_recomputed_hashes_is_caught(
    tmp_path, store, make_event, rehash
):
    """An attacker edits row 2 and recomputes every later hash and the head (no HMAC key):
    the chain walks clean, the published root no longer matches."""
    (first,) = _log(store, make_event, chains=1)
    _publish(store, tmp_path / "pub")
    with store.engine.begin() as conn:
        conn.execute(delete(CHECKPOINTS))
        rows = [
            dict(r._mapping)
            for r in conn.execute(
                select(EVENTS).where(EVENTS.c.chain_id == first).order_by(EVENTS.c.seq)
            )
        ]
        rows[1]["action"] = "block"
        prev = GENESIS_HASH
        for row in rows:
            body, digest = rehash(
                row, chain_id=first, seq=row["seq"], prev_hash=prev, hmac_key=None
            )
            conn.execute(
                update(EVENTS)
                .where(EVENTS.c.event_id == row["event_id"])
                .values(action=row["action"], prev_hash=prev, hash=digest, body_digest=body)
            )
            prev = digest
        conn.execute(update(CHAINS).where(CHAINS.c.chain_id == first).values(head_hash=prev))
    assert verify_chain(store).ok
    report = verify_chain(store, published=tmp_path / "pub")
    assert not report.ok
    assert "rewritten" in report.problems[0].reason


def test_growth_after_publication_still_verifies(tmp_path, store, make_event):
    """A chain that grew after its checkpoint was published extends it: verify is intact,
    and a second publication adds a note without touching the first."""
    _log(store, make_event, chains=1, events=3)
    key = _publish(store, tmp_path / "pub")
    _log(store, make_event, chains=1, events=5)
    report = verify_chain(store, published=tmp_path / "pub")
    assert (report.ok, report.published_checked) == (True, 1)
    publish_checkpoints(create_checkpoints(store, key), tmp_path / "pub", key)
    assert verify_chain(store, published=tmp_path / "pub").published_checked == 2


def test_notes_are_c2sp_checkpoints_and_forged_ones_are_refused(tmp_path, store, make_event):
    """A note reads origin / size / base64 root, blank line, em-dash signature line; a note
    re-signed by another key, or with its root changed, is a verify problem."""
    (chain,) = _log(store, make_event, chains=1, events=4)
    key = _publish(store, tmp_path / "pub")
    (path,) = (tmp_path / "pub" / chain).iterdir()
    lines = path.read_text().split("\n")
    assert lines[0] == f"guardrails.audit/{chain}"
    assert lines[1] == "4"
    assert len(base64.b64decode(lines[2])) == 32
    assert lines[3] == ""
    assert lines[4].startswith("\u2014 guardrails-audit-")
    (note,) = load_published(tmp_path / "pub")
    assert note.problem is None
    # root changed, signature kept
    forged = lines.copy()
    forged[2] = base64.b64encode(b"\x00" * 32).decode()
    path.write_text("\n".join(forged))
    report = verify_chain(store, published=tmp_path / "pub")
    assert not report.ok
    assert "bad signature" in report.problems[0].reason
    # a whole note signed by an attacker's key: not trusted when the real key is given
    fake = Checkpoint(chain, 4, "00" * 32, datetime.now(UTC), "x", "", "")
    path.write_text(note_for(fake, Ed25519PrivateKey.generate()))
    report = verify_chain(store, public_keys=[key.public_key()], published=tmp_path / "pub")
    assert not report.ok
    assert "no signature by a trusted key" in report.problems[0].reason


def test_published_folder_needs_a_key(tmp_path, store):
    """An empty folder with no .vkey and no --public-key is a config error, not a pass."""
    (tmp_path / "pub").mkdir()
    with pytest.raises(AuditConfigError, match="no key"):
        verify_chain(store, published=tmp_path / "pub")


def test_cli_checkpoint_publish_then_verify_checkpoints(
    tmp_path, sqlite_url, make_event, policy_digest
):
    """`audit checkpoint --publish DIR` then `audit verify --checkpoints DIR`: exit 0 while
    intact, exit 1 naming the chain after truncation with the head and checkpoints rewritten."""
    from guardrails.cli import app

    with AuditStore(sqlite_url) as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        (chain,) = _log(store, make_event, chains=1)
    runner = CliRunner()
    generate_signing_key(tmp_path / "k.pem")
    pub = tmp_path / "pub"
    result = runner.invoke(
        app,
        [
            "audit",
            "checkpoint",
            "--audit",
            sqlite_url,
            "--key",
            str(tmp_path / "k.pem"),
            "--publish",
            str(pub),
        ],
    )
    assert result.exit_code == 0, result.output
    args = ["audit", "verify", "--audit", sqlite_url, "--checkpoints", str(pub)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 published checkpoints" in result.output
    with AuditStore(sqlite_url) as store:
        _truncate_and_cover_up(store, chain, keep=2)
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert chain in result.output
