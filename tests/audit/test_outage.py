"""Store outages: writers fail fast with AuditStoreError and heal when the store is back."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
from urllib.parse import urlsplit

import pytest

from audit import AuditStore, verify_chain
from audit.exceptions import AuditStoreError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TcpProxy:
    """A TCP forwarder we can cut and restore, standing in for a PostgreSQL outage."""

    def __init__(self, target_port: int) -> None:
        self.port = _free_port()
        self._target = target_port
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        assert self._listener is not None
        # shutdown wakes the thread blocked in accept(); close alone would not
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass


def test_unreachable_postgres_fails_fast(make_event):
    """A writer whose PostgreSQL is on a closed port raises AuditStoreError in seconds."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/test"
    with AuditStore(url) as store, store.writer() as writer:
        started = time.monotonic()
        with pytest.raises(AuditStoreError, match=r"failed \(batch rolled back"):
            writer.write(make_event(), timeout=20)
        assert time.monotonic() - started < 10


def test_sqlite_lock_outage_then_recovery(tmp_path, sqlite_url, make_event, policy_digest):
    """A locked SQLite file fails the batch; the chain head holds; the next write succeeds."""
    with AuditStore(sqlite_url + "?timeout=0.2") as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        with store.writer() as writer:
            assert writer.write(make_event()).seq == 1
            blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
            try:
                blocker.execute("BEGIN EXCLUSIVE")
                started = time.monotonic()
                with pytest.raises(AuditStoreError, match="database is locked"):
                    writer.write(make_event(), timeout=20)
                assert time.monotonic() - started < 10
                blocker.execute("COMMIT")
            finally:
                blocker.close()
            assert writer.write(make_event()).seq == 2  # the failed batch did not advance
        report = verify_chain(store)
    assert (report.ok, report.events_checked) == (True, 2)


@pytest.mark.postgres
def test_postgres_outage_then_recovery(pg_url, make_event, policy_digest):
    """Cutting the connection to PostgreSQL fails writes; restoring it heals the writer."""
    target = urlsplit(pg_url.replace("postgresql+psycopg", "postgresql"))
    proxy = TcpProxy(target.port or 5432)
    proxy.start()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}{target.path}"
    try:
        with AuditStore(url) as store:
            store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
            with store.writer() as writer:
                assert writer.write(make_event()).seq == 1
                proxy.stop()
                started = time.monotonic()
                with pytest.raises(AuditStoreError):
                    writer.write(make_event(), timeout=20)
                assert time.monotonic() - started < 10
                proxy.start()
                assert writer.write(make_event()).seq == 2
    finally:
        proxy.stop()
    report = verify_chain(pg_url)
    assert (report.ok, report.events_checked) == (True, 2)


def test_full_queue_pushes_back_and_drops_nothing(tmp_path, sqlite_url, make_event, policy_digest):
    """While the store is stuck, a full queue makes submit wait (then fail); nothing is lost."""
    with AuditStore(sqlite_url + "?timeout=5") as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            writer = store.writer(max_queue=1)
            first = writer.submit(make_event())  # taken by the writer, stuck on the lock
            deadline = time.monotonic() + 5
            while not first.running() and time.monotonic() < deadline:
                time.sleep(0.01)
            second = writer.submit(make_event())  # fills the queue
            with pytest.raises(AuditStoreError, match="queue stayed full"):
                writer.submit(make_event(), timeout=0.05)
            blocker.execute("COMMIT")
        finally:
            blocker.close()
        assert [first.result(timeout=30).seq, second.result(timeout=30).seq] == [1, 2]
        writer.close()
        assert verify_chain(store).events_checked == 2
