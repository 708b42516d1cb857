"""The queries behind the CLI: every filter on both backends, counts, and bad filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from audit import EventFilter
from audit.exceptions import AuditConfigError
from audit.query import count_by, find_event, iter_events


@pytest.fixture
def seeded(store, make_event):
    """Four events with distinct tenants, users, actions, findings and texts."""
    base = datetime.now(UTC) - timedelta(hours=1)
    specs = [
        {"tenant": "acme", "user": "alice", "action": "allow", "prompt": "Hello"},
        {
            "tenant": "acme",
            "user": "bob",
            "action": "block",
            "input_action": "block",
            "prompt": "my SSN 100%_x",
            "findings": ({"rule_id": "pii.ssn", "stage": "input"},),
        },
        {
            "tenant": "globex",
            "user": "carol",
            "model": "other",
            "action": "redact",
            "output_action": "redact",
            "output": "mail me at a@b.c",
            "findings": ({"rule_id": "pii.email", "stage": "output"},),
        },
        {"tenant": "globex", "user": "dave", "action": "allow", "created_at": base},
    ]
    ids = []
    with store.writer() as writer:
        for spec in specs:
            spec.setdefault("findings", ())
            ids.append(writer.write(make_event(**spec)).event_id)
    return store, ids


CASES = [
    ({"tenant": "acme"}, {0, 1}),
    ({"user": "carol"}, {2}),
    ({"model": "other"}, {2}),
    ({"action": "block"}, {1}),
    ({"rule_id": "pii.email"}, {2}),
    ({"stage": "input"}, {1}),
    ({"stage": "output", "action": "redact"}, {2}),
    ({"text": "ssn 100%_"}, {1}),
    ({"text": "A@B"}, {2}),
    ({"text": "%"}, {1}),
    ({"since": datetime.now(UTC) - timedelta(minutes=30)}, {0, 1, 2}),
    ({"until": datetime.now(UTC) - timedelta(minutes=30)}, {3}),
    ({"tenant": "acme", "action": "allow"}, {0}),
    ({"tenant": "nobody"}, set()),
]


def test_filters_select_exactly(seeded):
    """Each filter in CASES (and each combination there) selects exactly its events."""
    store, ids = seeded
    with store.engine.connect() as conn:
        for filters, expected in CASES:
            got = {e.event_id for e in iter_events(conn, EventFilter(**filters), limit=None)}
            assert got == {ids[i] for i in expected}, filters


def test_newest_first_and_paging(seeded):
    """Newest first by default; limit and offset page through."""
    store, ids = seeded
    with store.engine.connect() as conn:
        page1 = [e.event_id for e in iter_events(conn, EventFilter(), limit=2)]
        page2 = [e.event_id for e in iter_events(conn, EventFilter(), limit=2, offset=2)]
    assert page1 == [ids[2], ids[1]]
    assert page2 == [ids[0], ids[3]]


def test_counts(seeded):
    """Counts by action, rule and day add up."""
    store, _ = seeded
    with store.engine.connect() as conn:
        counts = count_by(conn, EventFilter())
    assert counts.total == 4
    assert counts.by_action == {"allow": 2, "block": 1, "redact": 1}
    assert counts.by_rule == {"pii.ssn": 1, "pii.email": 1}
    assert sum(counts.by_day.values()) == 4
    assert all(len(day) == 10 for day in counts.by_day)


def test_find_event(seeded):
    """An event is found by id; an unknown id is None."""
    store, ids = seeded
    assert find_event(store.engine, ids[1]).action == "block"
    assert find_event(store.engine, "nope") is None


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"since": datetime(2020, 1, 1)}, "no timezone"),
        ({"stage": "middle"}, "not one of"),
        (
            {"since": datetime(2021, 1, 1, tzinfo=UTC), "until": datetime(2020, 1, 1, tzinfo=UTC)},
            "not before",
        ),
    ],
)
def test_bad_filters_are_config_errors(filters, message):
    """Filters that cannot mean anything are refused with the field named."""
    with pytest.raises(AuditConfigError, match=message):
        EventFilter(**filters)
