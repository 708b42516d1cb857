"""Fault injection on purged history: every header field of a purged row stays verifiable,
and purge records are chained (HMAC-keyed with the store's key), so a forged, edited,
inserted or deleted purge record is named by verify."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, insert, select, update

from audit import AuditStore, purge_bodies, verify_chain
from audit.schema import EVENTS, PURGES
from audit.verify import PURGE_LOG

KEY = b"k" * 32
OLD = datetime.now(UTC) - timedelta(days=400)


@pytest.fixture
def keyed(backend_url, policy_digest):
    """A keyed store on each backend with the test policy recorded."""
    with AuditStore(backend_url, hmac_key=KEY) as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        yield store


def _purged_log(store: AuditStore, make_event, old: int = 3, new: int = 2) -> list[str]:
    with store.writer() as writer:
        ids = [
            writer.write(make_event(created_at=OLD + timedelta(seconds=i))).event_id
            for i in range(old)
        ]
        ids += [writer.write(make_event()).event_id for _ in range(new)]
    result = purge_bodies(store, older_than=timedelta(days=200))
    assert result.events_purged == old
    return ids


def _edit(store: AuditStore, event_id: str, **values) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(EVENTS).where(EVENTS.c.event_id == event_id).values(**values))


def test_purged_rows_still_verify(keyed, make_event):
    """After a purge, the log is intact with the key (headers and the purge record check)."""
    _purged_log(keyed, make_event)
    report = verify_chain(keyed)
    assert (report.ok, report.events_checked) == (True, 5), report.first_problem


@pytest.mark.parametrize(
    "values",
    [{"action": "block"}, {"tenant": "evil"}, {"model": "x"}, {"created_at": OLD}],
    ids=["action", "tenant", "model", "created_at"],
)
def test_editing_a_purged_rows_header_is_detected(keyed, make_event, values):
    """Changing any header field of a body-less row breaks its hash."""
    ids = _purged_log(keyed, make_event)
    _edit(keyed, ids[1], **values)
    problem = verify_chain(keyed).first_problem
    assert problem is not None
    assert problem.event_id == ids[1]
    assert problem.reason.startswith("hash mismatch (row edited")


def test_swapping_a_purged_rows_body_digest_is_detected(keyed, make_event):
    """The body digest is inside the hash: replacing it is an edit."""
    ids = _purged_log(keyed, make_event)
    _edit(keyed, ids[0], body_digest="0" * 64)
    assert verify_chain(keyed).first_problem.event_id == ids[0]


def test_stripping_a_body_under_an_unauthenticated_purge_record_is_detected(keyed, make_event):
    """An attacker empties a fresh row's body and inserts a purge record covering it without
    the key (no hash, or a made-up one): the row is reported, and so is the record."""
    ids = _purged_log(keyed, make_event)
    with keyed.engine.begin() as conn:
        chain_id = conn.execute(
            select(EVENTS.c.chain_id).where(EVENTS.c.event_id == ids[-1])
        ).scalar_one()
        last_hash = conn.execute(
            select(PURGES.c.hash).order_by(PURGES.c.id.desc()).limit(1)
        ).scalar_one()
        conn.execute(
            insert(PURGES).values(
                purged_at=datetime.now(UTC),
                cutoff=datetime.now(UTC),
                events_purged=2,
                chains={chain_id: 5},
                prev_hash=last_hash,
                hash="ab" * 32,
            )
        )
    _edit(keyed, ids[-1], prompt=None, output=None, purged_at=datetime.now(UTC))
    report = verify_chain(keyed)
    assert not report.ok
    reasons = {p.chain_id: p.reason for p in report.problems}
    assert "purge record" in reasons[PURGE_LOG]
    assert "hash mismatch (forged or edited" in reasons[PURGE_LOG]
    assert "no recorded purge covers it" in reasons[chain_id]
    # the hash-less variant
    with keyed.engine.begin() as conn:
        conn.execute(update(PURGES).where(PURGES.c.hash == "ab" * 32).values(hash=None))
    reasons = {p.chain_id: p.reason for p in verify_chain(keyed).problems}
    assert "unauthenticated" in reasons[PURGE_LOG]
    assert "no recorded purge covers it" in reasons[chain_id]


def test_editing_or_deleting_a_purge_record_is_detected(keyed, make_event):
    """A purge record whose chains are widened, or the first of two deleted, is named."""
    _purged_log(keyed, make_event)
    with keyed.writer() as writer:
        writer.write(make_event(created_at=OLD))
    purge_bodies(keyed, older_than=timedelta(days=200))
    with keyed.engine.begin() as conn:
        first = conn.execute(select(PURGES).order_by(PURGES.c.id).limit(1)).one()
        widened = {k: v + 10 for k, v in dict(first.chains).items()}
        conn.execute(update(PURGES).where(PURGES.c.id == first.id).values(chains=widened))
    problem = next(p for p in verify_chain(keyed).problems if p.chain_id == PURGE_LOG)
    assert "hash mismatch" in problem.reason
    with keyed.engine.begin() as conn:
        conn.execute(delete(PURGES).where(PURGES.c.id == first.id))
    problem = next(p for p in verify_chain(keyed).problems if p.chain_id == PURGE_LOG)
    assert "does not link" in problem.reason


def test_a_purge_record_needs_the_chains_key(keyed, make_event):
    """A purge made without the key of a keyed log is rejected by verify with the key."""
    with keyed.writer() as writer:
        writer.write(make_event(created_at=OLD))
    purge_bodies(keyed.url, older_than=timedelta(days=200))  # by URL: no key
    problems = verify_chain(keyed).problems
    assert [p.chain_id for p in problems if p.chain_id == PURGE_LOG] == [PURGE_LOG]
