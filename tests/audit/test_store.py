"""Writing and reading the audit log on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, func, select

import audit
from audit import AuditEvent, AuditStore, verify_chain
from audit.exceptions import AuditClosedError, AuditEventError, AuditIntegrityError
from audit.schema import EVENTS, POLICIES


def _count(url: str, table=EVENTS) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar_one()
    finally:
        engine.dispose()


def test_round_trip_preserves_every_field(store, make_event):
    """What is written reads back field for field, with its chain position."""
    event = make_event(
        created_at=datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC),
        flagged=True,
        streamed=True,
        released_chars=42,
        error="classifier timeout",
        text_storage="redacted",
    )
    with store.writer() as writer:
        receipt = writer.write(event)
    (stored,) = store.events()
    for field in dataclasses.fields(AuditEvent):
        assert getattr(stored, field.name) == getattr(event, field.name), field.name
    assert stored.created_at.tzinfo is not None
    assert (stored.chain_id, stored.seq, stored.hash) == (receipt.chain_id, 1, receipt.hash)
    assert stored.prev_hash == "0" * 64
    assert receipt.event_id == event.event_id


def test_write_is_visible_to_another_connection_when_it_returns(store, backend_url, make_event):
    """write() returns only after the commit: a separate engine already sees the row."""
    with store.writer() as writer:
        for _ in range(3):
            writer.write(make_event())
            assert _count(backend_url) >= 1
        assert _count(backend_url) == 3


def test_policy_text_is_stored_once_per_digest(store, backend_url):
    """Recording the same policy twice keeps one row; the text reads back."""
    store.record_policy("d2", "strict", "2", "rules: [x]\n")
    store.record_policy("d2", "strict", "2", "rules: [x]\n")
    assert _count(backend_url, POLICIES) == 2  # the fixture's policy and this one
    assert store.get_policy_text("d2") == "rules: [x]\n"
    assert store.get_policy_text("missing") is None


def test_policy_digest_with_another_text_is_refused(store, policy_digest):
    """One digest cannot map to two texts."""
    with pytest.raises(AuditIntegrityError, match="different text"):
        store.record_policy(policy_digest, "default", "1.0", "something else")


def test_unrecorded_policy_fails_only_that_event(store, make_event):
    """An event naming an unknown policy digest fails alone; its batch-mates commit."""
    with store.writer() as writer:
        bad = writer.submit(make_event(policy_digest="nope"))
        good = writer.submit(make_event())
        with pytest.raises(AuditEventError, match="never recorded"):
            bad.result(timeout=30)
        assert good.result(timeout=30).seq == 1
        assert writer.write(make_event()).seq == 2
    assert verify_chain(store).ok


def test_event_filters(store, make_event):
    """events() filters by time, tenant, action and request id, newest first by default."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with store.writer() as writer:
        for i in range(6):
            writer.write(
                make_event(
                    created_at=t0 + timedelta(minutes=i),
                    tenant="acme" if i % 2 else "globex",
                    action="block" if i == 5 else "allow",
                    request_id=f"req-{i}",
                )
            )
    assert [e.request_id for e in store.events(limit=2)] == ["req-5", "req-4"]
    assert [e.request_id for e in store.events(newest_first=False, limit=1)] == ["req-0"]
    assert {e.request_id for e in store.events(tenant="acme")} == {"req-1", "req-3", "req-5"}
    assert [e.request_id for e in store.events(action="block")] == ["req-5"]
    window = store.events(since=t0 + timedelta(minutes=2), until=t0 + timedelta(minutes=4))
    assert [e.request_id for e in window] == ["req-3", "req-2"]
    assert [e.event_id for e in store.events(request_id="req-3")] == [window[0].event_id]


def test_concurrent_callers_through_one_writer(store, make_event):
    """16 threads x 50 events through one writer: exact count, one gapless chain, verified."""
    with store.writer() as writer:

        def work(n: int) -> None:
            for _ in range(50):
                writer.write(make_event(request_id=f"t{n}"))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    events = store.events(limit=10_000)
    assert len(events) == 800
    assert sorted(e.seq for e in events) == list(range(1, 801))
    report = verify_chain(store)
    assert (report.ok, report.events_checked, report.chains_checked) == (True, 800, 1)


def test_concurrent_writers_and_stores_on_one_database(backend_url, make_event, policy_digest):
    """Two stores (as two processes would), two writers each, 16 threads: all chains verify."""
    stores = [AuditStore(backend_url) for _ in range(2)]
    try:
        stores[0].record_policy(policy_digest, "default", "1.0", "rules: []\n")
        writers = [s.writer(max_batch=16) for s in stores for _ in range(2)]

        def work(n: int) -> None:
            for _ in range(50):
                writers[n % len(writers)].write(make_event())

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for s in stores:
            s.close()
    report = verify_chain(backend_url)
    assert (report.ok, report.events_checked, report.chains_checked) == (True, 800, 4)


def test_async_writes_share_commits(store, make_event):
    """write_async resolves after the commit; concurrent awaits get distinct seqs."""

    async def main(writer):
        return await asyncio.gather(*(writer.write_async(make_event()) for _ in range(20)))

    with store.writer() as writer:
        receipts = asyncio.run(main(writer))
    assert sorted(r.seq for r in receipts) == list(range(1, 21))
    assert len(store.events(limit=100)) == 20


def test_close_flushes_then_refuses(store, make_event):
    """close() commits everything submitted; later writes raise AuditClosedError."""
    writer = store.writer()
    futures = [writer.submit(make_event()) for _ in range(100)]
    writer.close()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(AuditClosedError):
        writer.write(make_event())
    assert len(store.events(limit=1000)) == 100


def test_each_writer_is_its_own_chain(store, make_event):
    """Two writers of one store get distinct chains, each starting at seq 1."""
    with store.writer() as a, store.writer() as b:
        ra, rb = a.write(make_event()), b.write(make_event())
    assert ra.chain_id != rb.chain_id
    assert (ra.seq, rb.seq) == (1, 1)


_CHILD = """
import sys
import audit
from audit import AuditEvent, AuditStore
with AuditStore(sys.argv[1]) as store, store.writer() as writer:
    for i in range(100):
        writer.write(AuditEvent(request_id=f"p{i}", policy_name="default", policy_version="1.0",
                                policy_digest=sys.argv[2], action="allow"))
"""


def test_processes_share_one_sqlite_file(sqlite_url, policy_digest):
    """Three processes writing one SQLite file at once: 300 events, three verified chains."""
    with AuditStore(sqlite_url) as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
    root = os.path.dirname(os.path.dirname(audit.__file__))
    env = {**os.environ, "PYTHONPATH": root}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, sqlite_url, policy_digest],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    report = verify_chain(sqlite_url)
    assert (report.ok, report.events_checked, report.chains_checked) == (True, 300, 3)
