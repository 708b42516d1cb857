"""Faults that really happen: kill -9 of a writing process at random points (SQLite and
PostgreSQL), and a database-level PostgreSQL outage (connections to a test database of our
own blocked and the open ones terminated; the shared cluster is never stopped).

The writing process prints each event id only after ``write`` returned, so every printed id
is an answered call; afterwards the store must hold every one of them exactly once and
every chain must verify. Each test counts calls answered, events stored and duplicates.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from audit import AuditStore, upgrade, verify_chain
from audit.exceptions import AuditStoreError
from audit.schema import EVENTS

LOADER = r"""
import sys, threading
from audit import AuditEvent, AuditStore
from audit.exceptions import AuditError

url, spill, digest = sys.argv[1], sys.argv[2] or None, sys.argv[3]
store = AuditStore(url, spill_dir=spill)
store.record_policy(digest, "default", "1.0", "rules: []\n")
writer = store.writer(spill_retry_s=0.05)
lock = threading.Lock()

def load():
    while True:
        event = AuditEvent(request_id="r", policy_name="default", policy_version="1.0",
                           policy_digest=digest, action="allow", prompt="p" * 600)
        try:
            receipt = writer.write(event, timeout=5)
        except AuditError:
            continue
        with lock:
            sys.stdout.write(f"{receipt.event_id} {int(receipt.spilled)}\n")
            sys.stdout.flush()

for _ in range(4):
    threading.Thread(target=load, daemon=True).start()
threading.Event().wait()
"""


class Loader:
    """The writing subprocess and the acknowledgements it has printed so far."""

    def __init__(self, url: str, spill: Path | None, digest: str) -> None:
        self.acked: list[tuple[str, bool]] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOADER, url, str(spill or ""), digest],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.endswith("\n"):  # a torn last line is not a complete acknowledgement
                event_id, spilled = line.split()
                self.acked.append((event_id, spilled == "1"))

    def wait_for(self, count: int, *, spilled: bool = False, timeout: float = 120) -> None:
        """Wait until ``count`` (spilled) acknowledgements were printed."""
        deadline = time.monotonic() + timeout
        while sum(1 for _, s in self.acked if s or not spilled) < count:
            assert self.proc.poll() is None, "the loader died on its own"
            assert time.monotonic() < deadline, f"only {len(self.acked)} acks in {timeout}s"
            time.sleep(0.02)

    def kill(self) -> None:
        """kill -9, then collect everything it printed before dying."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def _check(url: str, acked: list[tuple[str, bool]]) -> tuple[int, int, int]:
    """Assert every answered call is stored exactly once and the log verifies; return
    (answered, stored, duplicates)."""
    with AuditStore(url) as store, store.engine.connect() as conn:
        stored = list(conn.execute(select(EVENTS.c.event_id)).scalars())
    ids = [event_id for event_id, _ in acked]
    duplicates = len(stored) - len(set(stored))
    assert duplicates == 0, "duplicate events"
    missing = set(ids) - set(stored)
    assert not missing, f"{len(missing)} acknowledged events missing"
    # A kill between a commit and its acknowledgement stores an unanswered event: at most
    # one batch per kill, never fewer stored than answered.
    assert len(stored) >= len(set(ids))
    report = verify_chain(url)
    assert report.ok, report.first_problem
    return len(set(ids)), len(stored), duplicates


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_kill_9_at_random_points(backend, request, policy_digest):
    """Repeated kill -9s (``GUARDRAILS_FAULT_KILLS``, default 2; set 20 for the issue's run)
    of a process writing with 4 threads, each after a random number of answered calls
    (mid-batch), on one store: every answered call is stored exactly once, and all the
    chains (one per killed writer) verify."""
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    rng = random.Random(os.environ.get("GUARDRAILS_FAULT_SEED", "11"))
    acked: list[tuple[str, bool]] = []
    kills = int(os.environ.get("GUARDRAILS_FAULT_KILLS", "2"))
    for _ in range(kills):
        loader = Loader(url, None, policy_digest)
        try:
            loader.wait_for(rng.randint(50, 300))
        finally:
            loader.kill()
        acked += loader.acked
    answered, stored, duplicates = _check(url, acked)
    assert answered >= 50 * kills
    assert duplicates == 0
    assert stored - answered <= kills * 512  # at most one unanswered batch per kill


@pytest.mark.postgres
def test_kill_9_while_spilling_during_postgres_outage(tmp_path, pg_proxy, policy_digest):
    """Cut PostgreSQL, let the loader spill, kill -9 it: the next store replays every ack once."""
    proxy, url = pg_proxy
    spill = tmp_path / "spill"
    loader = Loader(url, spill, policy_digest)
    try:
        loader.wait_for(200)
        proxy.stop()
        loader.wait_for(100, spilled=True)
    finally:
        loader.kill()
    proxy.start()
    assert list(spill.glob("*.spill")), "the killed loader left no spill file"
    with AuditStore(url, spill_dir=spill) as store:
        replayed = store.replay_spills()
    # Spilled events whose failed commit had in fact landed are skipped, not replayed, so
    # `replayed` may fall a little short of the spilled count; `_check` proves every
    # acknowledged event is stored exactly once.
    assert replayed >= 90
    assert list(spill.glob("*.spill")) == []
    _check(proxy.target_url, loader.acked)


class DatabaseOutage:
    """A PostgreSQL database of our own that we can make unreachable: new connections are
    refused (``ALLOW_CONNECTIONS false``) and open ones terminated, the cluster untouched."""

    def __init__(self, admin_url: str) -> None:
        self._admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.name = f"gr_outage_{secrets.token_hex(5)}"
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = self._admin.url.set(database=self.name).render_as_string(hide_password=False)
        upgrade(self.url)

    def block(self) -> None:
        """Refuse new connections to the database and terminate the open ones."""
        with self._admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": self.name},
            )

    def unblock(self) -> None:
        """Accept connections again."""
        with self._admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true'))

    def drop(self) -> None:
        """Remove the database."""
        self.unblock()
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self._admin.dispose()


@pytest.fixture
def outage_db(pg_database_url: str) -> Iterator[DatabaseOutage]:
    """A fresh, migrated PostgreSQL database whose connections a test can block."""
    database = DatabaseOutage(pg_database_url)
    try:
        yield database
    finally:
        database.drop()


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["fail_closed", "spill"])
def test_database_outage_mid_load_in_process(mode, tmp_path, outage_db, make_event, wait_until):
    """Block the database under 4 writing threads, then unblock it: fail_closed refuses
    calls during the outage, spill answers them from the spill file; either way every
    answered call is stored exactly once, with no duplicates, and the log verifies."""
    spill = tmp_path / "spill" if mode == "spill" else None
    digest = "sha256:" + "ab" * 32
    answered: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    with AuditStore(outage_db.url, spill_dir=spill) as store:
        store.record_policy(digest, "default", "1.0", "rules: []\n")
        writer = store.writer(spill_retry_s=0.05)

        def load() -> None:
            while not stop.is_set():
                event = make_event()
                try:
                    receipt = writer.write(event, timeout=60)
                except AuditStoreError:
                    with lock:
                        refused.append(event.event_id)
                    continue
                with lock:
                    answered.append(receipt.event_id)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: len(answered) >= 50, "50 answered calls before the outage")
            outage_db.block()
            if mode == "spill":
                wait_until(lambda: writer.spilled >= 50, "50 calls answered from the spill")
            else:
                wait_until(lambda: len(refused) >= 10, "10 refused calls in the outage")
            outage_db.unblock()
            healed = len(answered)
            wait_until(lambda: len(answered) >= healed + 50, "50 calls after the outage")
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        writer.close()
        assert writer.spill_backlog == 0
    answered_n, stored, duplicates = _check(outage_db.url, [(i, False) for i in answered])
    assert duplicates == 0
    if mode == "spill":
        assert refused == []
        assert stored == answered_n  # nothing lost, nothing extra
    else:
        assert refused


@pytest.mark.postgres
def test_kill_9_while_spilling_during_a_database_outage(tmp_path, outage_db, policy_digest):
    """Block the database, let the loader answer from its spill file, kill -9 it mid-batch,
    unblock: the next store replays the spill, and every answered call is stored once."""
    spill = tmp_path / "spill"
    loader = Loader(outage_db.url, spill, policy_digest)
    try:
        loader.wait_for(100)
        outage_db.block()
        loader.wait_for(100, spilled=True, timeout=120)
    finally:
        loader.kill()
    outage_db.unblock()
    assert list(spill.glob("*.spill")), "the killed loader left no spill file"
    with AuditStore(outage_db.url, spill_dir=spill) as store:
        store.replay_spills()
    assert list(spill.glob("*.spill")) == []
    answered, stored, duplicates = _check(outage_db.url, loader.acked)
    assert answered >= 200
    assert stored >= answered
    assert duplicates == 0
