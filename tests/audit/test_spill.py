"""Spill mode: acknowledged during an outage, replayed exactly once with the chain intact."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import func, select

from audit import AuditStore, verify_chain
from audit.exceptions import AuditEventError, AuditStoreError
from audit.schema import EVENTS


def _stored_ids(store: AuditStore) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(EVENTS.c.event_id)).scalars())


def test_sqlite_outage_spills_then_replays_in_order(
    tmp_path, sqlite_url, make_event, policy_digest, wait_until
):
    """Writes during a lock outage are acknowledged as spilled and land later, chain intact."""
    spill = tmp_path / "spill"
    with AuditStore(sqlite_url + "?timeout=0.2", spill_dir=spill) as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        writer = store.writer(spill_retry_s=0.05)
        assert writer.write(make_event()).spilled is False
        blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            spilled = [writer.write(make_event()) for _ in range(3)]
            assert [(r.seq, r.spilled) for r in spilled] == [(2, True), (3, True), (4, True)]
            assert writer.spill_backlog == 3
            assert len(list(spill.glob("*.spill"))) == 1
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        wait_until(lambda: writer.spill_backlog == 0, "the idle retry to replay the backlog")
        after = writer.write(make_event())
        assert (after.seq, after.spilled) == (5, False)
        writer.close()
        stored = _stored_ids(store)
        assert len(stored) == 5
        assert {r.event_id for r in spilled} | {after.event_id} <= set(stored)
        report = verify_chain(store)
    assert (report.ok, report.events_checked) == (True, 5)
    assert list(spill.glob("*.spill")) == []


def test_spill_left_by_closed_writer_is_replayed_once(
    tmp_path, sqlite_url, make_event, policy_digest
):
    """A writer closed during an outage keeps its spill file; the next store replays it once."""
    spill = tmp_path / "spill"
    with AuditStore(sqlite_url + "?timeout=0.2", spill_dir=spill) as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            with store.writer() as writer:
                receipts = [writer.write(make_event()) for _ in range(4)]
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        assert all(r.spilled for r in receipts)
        assert len(list(spill.glob("*.spill"))) == 1
    with AuditStore(sqlite_url, spill_dir=spill) as store:
        assert store.replay_spills() == 4
        assert store.replay_spills() == 0  # exactly once
        assert sorted(_stored_ids(store)) == sorted(r.event_id for r in receipts)
        assert verify_chain(store).ok
    assert list(spill.glob("*.spill")) == []


def test_replay_skips_rows_already_committed(tmp_path, sqlite_url, make_event, policy_digest):
    """Replaying a spill file whose rows are partly committed inserts only the rest."""
    spill = tmp_path / "spill"
    with AuditStore(sqlite_url + "?timeout=0.2", spill_dir=spill) as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            with store.writer() as writer:
                [writer.write(make_event()) for _ in range(3)]
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        (path,) = spill.glob("*.spill")
        kept = path.read_text()
        assert store.replay_spills() == 3
        path.write_text(kept)  # as if the process died between the commit and the unlink
        assert store.replay_spills() == 0
        with store.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(EVENTS)).scalar() == 3
        assert verify_chain(store).ok


def test_torn_last_line_is_ignored(tmp_path, sqlite_url, make_event, policy_digest):
    """A half-written last line (never acknowledged) does not stop the replay of the rest."""
    spill = tmp_path / "spill"
    with AuditStore(sqlite_url + "?timeout=0.2", spill_dir=spill) as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            with store.writer() as writer:
                [writer.write(make_event()) for _ in range(2)]
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        (path,) = spill.glob("*.spill")
        with path.open("a") as handle:
            handle.write('{"event_id": "torn')
        assert store.replay_spills() == 2
        assert verify_chain(store).ok


def test_unknown_policy_is_refused_not_spilled(tmp_path, sqlite_url, make_event):
    """During an outage an event whose policy was never recorded fails instead of spilling."""
    with AuditStore(sqlite_url + "?timeout=0.2", spill_dir=tmp_path / "s") as store:
        blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            with store.writer() as writer, pytest.raises(AuditEventError, match="record_policy"):
                writer.write(make_event())
        finally:
            blocker.execute("COMMIT")
            blocker.close()


def test_unwritable_spill_dir_fails_at_writer_creation(tmp_path, sqlite_url):
    """A spill folder that cannot be created is reported when the writer is made."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with (
        AuditStore(sqlite_url, spill_dir=blocker / "sub") as store,
        pytest.raises(AuditStoreError, match="spill file"),
    ):
        store.writer()


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["fail_closed", "spill"])
def test_postgres_outage_under_load(
    mode, tmp_path, pg_proxy, make_event, policy_digest, wait_until
):
    """Cut PostgreSQL under 4 writing threads: no acknowledged event lost, none twice
    (each phase lasts until enough calls were answered in it, not for a fixed time)."""
    proxy, url = pg_proxy
    acked: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    spill = tmp_path / "spill" if mode == "spill" else None
    with AuditStore(url, spill_dir=spill) as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        writer = store.writer(spill_retry_s=0.05)

        def load() -> None:
            while not stop.is_set():
                event = make_event()
                try:
                    receipt = writer.write(event, timeout=60)
                except AuditStoreError:
                    with lock:
                        failures.append(event.event_id)
                    continue
                with lock:
                    acked.append(receipt.event_id)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: len(acked) >= 20, "20 writes before the outage")
            proxy.stop()
            before = len(acked)
            if mode == "spill":
                wait_until(lambda: writer.spilled >= 20, "20 spilled writes in the outage")
            else:
                wait_until(lambda: len(failures) >= 5, "5 refused writes in the outage")
            during = len(acked) - before
            proxy.start()
            healed = len(acked)
            wait_until(lambda: len(acked) >= healed + 20, "20 writes after the outage")
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        writer.close()
        assert writer.spill_backlog == 0
    with AuditStore(proxy.target_url) as direct:
        stored = _stored_ids(direct)
        report = verify_chain(direct)
    assert len(stored) == len(set(stored))  # no duplicates
    assert set(acked) <= set(stored)  # nothing acknowledged is missing
    assert report.ok, report.first_problem
    if mode == "spill":
        assert failures == []
        assert during > 0
        assert writer.spilled > 0
        assert set(stored) == set(acked)
    else:
        assert failures  # refused while the store was down: fail closed


def test_unreadable_orphan_does_not_stop_the_writer(
    tmp_path, sqlite_url, make_event, policy_digest, wait_until
):
    """A corrupt orphan spill file is quarantined (kept, byte for byte) and never kills a
    writer."""
    spill = tmp_path / "spill"
    spill.mkdir()
    (spill / "bad.spill").write_text("not json\n")
    with AuditStore(sqlite_url, spill_dir=spill) as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        with store.writer() as writer:
            assert writer.write(make_event()).spilled is False
            wait_until(lambda: (spill / "bad.spill.quarantined").exists(), "the quarantine")
            assert writer.write(make_event()).seq == 2
        assert (spill / "bad.spill.quarantined").read_text() == "not json\n"
        assert store.replay_spills() == 0
