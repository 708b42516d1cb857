"""Fixtures every test tree shares: a throwaway database on the real PostgreSQL, and a TCP
forwarder tests cut to make a store refuse connections.

PostgreSQL tests never skip: if the server is unreachable they fail with a message saying
how to start it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from audit import upgrade

PG_ADMIN_URL = os.environ.get(
    "GUARDRAILS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    # pre-ping: a test may restart the server (tests/audit/test_faults.py), which kills
    # the pooled admin connection this fixture drops the database with at the end.
    admin = create_engine(
        PG_ADMIN_URL,
        isolation_level="AUTOCOMMIT",
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
    )
    name = f"gr_test_{secrets.token_hex(6)}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL is unreachable at {PG_ADMIN_URL}: {exc.orig}. Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
            "or point GUARDRAILS_TEST_PG_URL at a server.",
            pytrace=False,
        )
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url(pg_database_url: str) -> str:
    """The session PostgreSQL database, migrated to head and emptied for this test."""
    upgrade(pg_database_url)
    engine = create_engine(pg_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "TRUNCATE audit_events, audit_chains, audit_policies, "
                    "audit_checkpoints, audit_purges"
                )
            )
    finally:
        engine.dispose()
    return pg_database_url


class TcpProxy:
    """A TCP forwarder a test can cut and restore: a store that refuses connections.

    ``target_url`` is free for the test: the URL that reaches the target directly.
    """

    def __init__(self, target_port: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.target_url = ""
        self._target = target_port
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    @property
    def running(self) -> bool:
        """Whether it accepts connections now."""
        return self._listener is not None

    def start(self) -> None:
        """Accept and forward connections."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut every open one (an outage)."""
        assert self._listener is not None
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._listener = None
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
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                client.close()
                continue
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


@pytest.fixture(scope="session")
def tcp_proxy_cls() -> type[TcpProxy]:
    """`TcpProxy`, for test modules and fixtures (conftest modules are not importable by name)."""
    return TcpProxy
