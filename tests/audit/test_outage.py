"""Store outages: writers fail fast with AuditStoreError and heal when the store is back."""

from __future__ import annotations

import socket
import sqlite3

import pytest

from audit import AuditStore, verify_chain
from audit.exceptions import AuditStoreError


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_postgres_fails_fast(make_event):
    """A writer whose PostgreSQL is on a closed port raises the store's own failure (the
    driver fails fast), not the caller's timeout."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    with (
        AuditStore(url) as store,
        store.writer() as writer,
        pytest.raises(AuditStoreError, match=r"failed \(batch rolled back"),
    ):
        writer.write(make_event(), timeout=600)


def test_sqlite_lock_outage_then_recovery(tmp_path, sqlite_url, make_event, policy_digest):
    """A locked SQLite file fails the batch; the chain head holds; the next write succeeds."""
    with AuditStore(sqlite_url + "?timeout=0.2") as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        with store.writer() as writer:
            assert writer.write(make_event()).seq == 1
            blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
            try:
                blocker.execute("BEGIN EXCLUSIVE")
                with pytest.raises(AuditStoreError, match="database is locked"):
                    writer.write(make_event(), timeout=600)  # the busy timeout, not ours
                blocker.execute("COMMIT")
            finally:
                blocker.close()
            assert writer.write(make_event()).seq == 2  # the failed batch did not advance
        report = verify_chain(store)
    assert (report.ok, report.events_checked) == (True, 2)


@pytest.mark.postgres
def test_postgres_outage_then_recovery(pg_proxy, make_event, policy_digest):
    """Cutting the connection to PostgreSQL fails writes; restoring it heals the writer."""
    proxy, url = pg_proxy
    pg_url = proxy.target_url
    try:
        with AuditStore(url) as store:
            store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
            with store.writer() as writer:
                assert writer.write(make_event()).seq == 1
                proxy.stop()
                with pytest.raises(AuditStoreError, match=r"failed \(batch rolled back"):
                    writer.write(make_event(), timeout=600)  # the store's error, not a timeout
                proxy.start()
                assert writer.write(make_event()).seq == 2
    finally:
        proxy.stop()
    report = verify_chain(pg_url)
    assert (report.ok, report.events_checked) == (True, 2)


def test_full_queue_pushes_back_and_drops_nothing(
    tmp_path, sqlite_url, make_event, policy_digest, wait_until
):
    """While the store is stuck, a full queue makes submit wait (then fail); nothing is lost."""
    with AuditStore(sqlite_url + "?timeout=600") as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            writer = store.writer(max_queue=1)
            first = writer.submit(make_event())  # taken by the writer, stuck on the lock
            wait_until(first.running, "the writer to take the first event")
            second = writer.submit(make_event())  # fills the queue
            with pytest.raises(AuditStoreError, match="queue stayed full"):
                writer.submit(make_event(), timeout=0.05)
            blocker.execute("COMMIT")
        finally:
            blocker.close()
        assert [first.result(timeout=30).seq, second.result(timeout=30).seq] == [1, 2]
        writer.close()
        assert verify_chain(store).events_checked == 2
