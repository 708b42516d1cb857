"""Retention purges: bodies go, the chain and its checkpoints still verify, purges are recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update

from audit import AuditStore, create_checkpoints, parse_age, purge_bodies, verify_chain
from audit.exceptions import AuditConfigError
from audit.schema import EVENTS, PURGES


def test_purge_keeps_the_log_verifiable(store, make_event):
    """Old bodies are emptied, new ones kept; chains and checkpoints still verify."""
    old = datetime.now(UTC) - timedelta(days=200)
    with store.writer() as writer:
        for i in range(3):
            writer.write(make_event(created_at=old + timedelta(seconds=i)))
        fresh = writer.write(make_event()).event_id
    key = Ed25519PrivateKey.generate()
    create_checkpoints(store, key)
    result = purge_bodies(store, older_than=parse_age("180d"))
    assert result.events_purged == 3
    assert list(result.chains.values()) == [3]
    events = {e.event_id: e for e in store.events(limit=10)}
    assert events[fresh].prompt == "Hello, wörld"
    assert sum(1 for e in events.values() if e.prompt is None and e.findings == ()) == 3
    report = verify_chain(store, public_keys=[key.public_key()])
    assert report.ok, report.first_problem
    with store.engine.connect() as conn:
        (recorded,) = conn.execute(select(PURGES.c.events_purged)).scalars()
    assert recorded == 3
    assert purge_bodies(store, older_than=timedelta(days=180)).events_purged == 0


def test_a_row_marked_purged_without_a_purge_fails_verify(store, make_event):
    """Hiding an edit behind a fake purged_at is reported."""
    with store.writer() as writer:
        event_id = writer.write(make_event()).event_id
    with store.engine.begin() as conn:
        conn.execute(
            update(EVENTS)
            .where(EVENTS.c.event_id == event_id)
            .values(prompt="edited", purged_at=datetime.now(UTC))
        )
    report = verify_chain(store)
    assert "no recorded purge covers it" in report.first_problem.reason


@pytest.mark.parametrize("text", ["180", "d", "-3d", "0d", "3y", ""])
def test_bad_ages_are_config_errors(text):
    """Ages need a positive number and a known unit."""
    with pytest.raises(AuditConfigError, match="bad age"):
        parse_age(text)


def test_ages_parse():
    """Units s, m, h, d, w."""
    assert parse_age("180d") == timedelta(days=180)
    assert parse_age("2w") == timedelta(weeks=2)
    assert parse_age("90m") == timedelta(minutes=90)


def test_purge_of_missing_file_is_a_config_error(tmp_path):
    """Purging a SQLite file that does not exist does not create it."""
    with pytest.raises(AuditConfigError, match="no audit database"):
        purge_bodies(f"sqlite:///{tmp_path / 'none.db'}", older_than=timedelta(days=1))
    assert not (tmp_path / "none.db").exists()


def test_purge_leaves_other_stores_alone(sqlite_url):
    """An empty store purges nothing and still records the purge."""
    with AuditStore(sqlite_url) as store:
        assert purge_bodies(store, older_than=timedelta(days=1)).events_purged == 0
        assert verify_chain(store).ok
