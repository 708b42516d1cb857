"""Fault injection on spill files and on the writer thread: only a torn final line may be
dropped, anything else quarantines the file and loses nothing; rows must link; a failing
writer thread is logged and keeps serving."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest
from sqlalchemy import func, select

from audit import AuditStore, verify_chain
from audit.exceptions import AuditStoreError
from audit.schema import EVENTS
from audit.spill import SpillFile


def _spilled(tmp_path, sqlite_url, make_event, policy_digest, n: int = 3):
    """Write ``n`` events during a lock outage; return (store url, spill dir, spill path)."""
    spill = tmp_path / "spill"
    with AuditStore(sqlite_url + "?timeout=0.1", spill_dir=spill) as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            with store.writer() as writer:
                assert all(writer.write(make_event()).spilled for _ in range(n))
        finally:
            blocker.execute("COMMIT")
            blocker.close()
    (path,) = spill.glob("*.spill")
    return spill, path


def _count(store: AuditStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(EVENTS)).scalar_one())


def test_damaged_middle_line_quarantines_the_file_and_loses_nothing(
    tmp_path, sqlite_url, make_event, policy_digest
):
    """Line 3 of 4 damaged: no row is inserted, the file is kept byte for byte under a
    quarantine name, and the error names the file and the line (it used to store 1 of 3)."""
    spill, path = _spilled(tmp_path, sqlite_url, make_event, policy_digest)
    lines = path.read_text().split("\n")
    lines[2] = "#" + lines[2][1:]  # no longer JSON
    damaged = "\n".join(lines)
    path.write_text(damaged)
    with AuditStore(sqlite_url, spill_dir=spill) as store:
        with pytest.raises(AuditStoreError, match=r"line 3 is damaged.*quarantined"):
            store.replay_spills()
        assert _count(store) == 0
        assert store.replay_spills() == 0  # quarantined: not retried in a loop
    assert not path.exists()
    assert path.with_name(path.name + ".quarantined").read_text() == damaged


def test_torn_final_line_alone_is_dropped(tmp_path, sqlite_url, make_event, policy_digest):
    """An unterminated final fragment (a crash mid-append) is dropped and every row before it
    lands; a complete final row missing only its newline is kept."""
    spill, path = _spilled(tmp_path, sqlite_url, make_event, policy_digest, n=3)
    text = path.read_text()
    path.write_text(text + '{"event_id": "to')
    kept = tmp_path / "kept.spill"
    with AuditStore(sqlite_url, spill_dir=spill) as store:
        kept.write_text(text)  # a copy to replay again below, minus its last newline
        assert store.replay_spills() == 3
        assert _count(store) == 3
        assert verify_chain(store).ok
    # the same three rows, the last one complete but unterminated: kept (already stored)
    other = tmp_path / "other"
    other.mkdir()
    target = other / "x.spill"
    target.write_text(kept.read_text()[:-1])
    with AuditStore(sqlite_url, spill_dir=other) as store:
        assert store.replay_spills() == 0  # all three are already there: nothing twice
        assert _count(store) == 3
    assert not target.exists()


def test_rows_that_do_not_link_quarantine_the_file(tmp_path, sqlite_url, make_event, policy_digest):
    """A spilled row whose prev_hash was changed (a row removed or swapped) is refused."""
    spill, path = _spilled(tmp_path, sqlite_url, make_event, policy_digest)
    lines = path.read_text().split("\n")
    row = json.loads(lines[2])
    row["prev_hash"] = "0" * 64
    lines[2] = json.dumps(row)
    path.write_text("\n".join(lines))
    with AuditStore(sqlite_url, spill_dir=spill) as store:
        with pytest.raises(AuditStoreError, match="does not link"):
            store.replay_spills()
        assert _count(store) == 0
    assert path.with_name(path.name + ".quarantined").exists()


def test_a_removed_spill_row_is_a_gap_not_a_silent_loss(
    tmp_path, sqlite_url, make_event, policy_digest
):
    """Deleting the middle row of a spill file quarantines it (the next row cannot link)."""
    spill, path = _spilled(tmp_path, sqlite_url, make_event, policy_digest)
    lines = path.read_text().split("\n")
    del lines[2]
    path.write_text("\n".join(lines))
    with AuditStore(sqlite_url, spill_dir=spill) as store:
        with pytest.raises(AuditStoreError, match="does not link"):
            store.replay_spills()
        assert _count(store) == 0


def test_spill_clear_failure_is_logged_and_the_writer_keeps_going(
    tmp_path, sqlite_url, make_event, policy_digest, monkeypatch, caplog, wait_until
):
    """spill.clear() raising after a replay (it used to kill the thread silently) is logged;
    every event is stored exactly once and later writes still commit."""
    spill = tmp_path / "spill"

    def broken_clear(self: SpillFile) -> None:
        self.rows.clear()
        raise OSError("disk on fire")

    monkeypatch.setattr(SpillFile, "clear", broken_clear)
    caplog.set_level(logging.INFO, logger="audit")
    with AuditStore(sqlite_url + "?timeout=0.1", spill_dir=spill) as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        writer = store.writer(spill_retry_s=0.02)
        blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        spilled = [writer.write(make_event()) for _ in range(2)]
        blocker.execute("COMMIT")
        blocker.close()
        wait_until(lambda: writer.spill_backlog == 0, "the replay")
        after = writer.write(make_event())
        writer.close()
        assert all(r.spilled for r in spilled)
        assert after.seq == 3
        assert not after.spilled
        assert _count(store) == 3
        assert verify_chain(store).ok
    assert any(r.message == "audit_spill_clear_failed" for r in caplog.records)


def test_unexpected_writer_error_fails_its_batch_is_logged_and_the_thread_survives(
    store, make_event, monkeypatch, caplog
):
    """A bug in one batch fails that batch's callers with AuditStoreError, is logged, and the
    next write on the same writer commits."""
    caplog.set_level(logging.INFO, logger="audit")
    with store.writer() as writer:
        original = writer._commit
        calls = {"n": 0}

        def flaky(batch):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("injected")
            return original(batch)

        monkeypatch.setattr(writer, "_commit", flaky)  # a bug outside the batch's own try
        with pytest.raises(AuditStoreError, match="injected"):
            writer.write(make_event())
        assert writer.write(make_event()).seq == 1
    assert any(r.message == "audit_writer_step_failed" for r in caplog.records)
    assert [e.seq for e in store.events()] == [1]
