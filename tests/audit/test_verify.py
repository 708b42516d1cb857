"""Tamper evidence: verify_chain names the first bad row for every kind of tampering."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, insert, select, update

from audit import AuditStore, verify_chain
from audit.chain import CONTENT_FIELDS, chain_hash, content_json_from_mapping
from audit.schema import EVENTS


@pytest.fixture
def chain(store, make_event):
    """Five events in one chain; returns (store, chain_id, {seq: event_id})."""
    with store.writer() as writer:
        receipts = [writer.write(make_event(request_id=f"r{i}")) for i in range(5)]
    return store, receipts[0].chain_id, {r.seq: r.event_id for r in receipts}


def _execute(store: AuditStore, *statements) -> None:
    with store.engine.begin() as conn:
        for statement in statements:
            conn.execute(statement)


def _at(chain_id: str, seq: int):
    return (EVENTS.c.chain_id == chain_id) & (EVENTS.c.seq == seq)


def test_intact_log_verifies(chain):
    """An untouched log verifies, counting every event and chain."""
    store, _, _ = chain
    report = verify_chain(store)
    assert (report.ok, report.events_checked, report.chains_checked) == (True, 5, 1)
    assert report.first_problem is None


def test_edited_row_is_named(chain):
    """Editing a field of row 3 is reported at seq 3 as a hash mismatch."""
    store, chain_id, ids = chain
    _execute(store, update(EVENTS).where(_at(chain_id, 3)).values(output="nothing to see"))
    problem = verify_chain(store).first_problem
    assert problem is not None
    assert (problem.chain_id, problem.seq, problem.event_id) == (chain_id, 3, ids[3])
    assert problem.reason == "hash mismatch (row edited)"


def test_edited_json_field_is_named(chain):
    """Editing inside a JSON column (findings) is detected too."""
    store, chain_id, ids = chain
    _execute(store, update(EVENTS).where(_at(chain_id, 2)).values(findings=[]))
    problem = verify_chain(store).first_problem
    assert problem is not None
    assert (problem.seq, problem.event_id) == (2, ids[2])


def test_deleted_middle_row_is_named(chain):
    """Deleting row 3 is reported as a gap at seq 3."""
    store, chain_id, _ = chain
    _execute(store, delete(EVENTS).where(_at(chain_id, 3)))
    report = verify_chain(store)
    assert not report.ok
    assert report.first_problem == report.problems[0]
    assert (report.problems[0].seq, report.problems[0].event_id) == (3, None)
    assert report.problems[0].reason == "sequence gap: seq 3 missing (row deleted)"


def test_deleted_last_rows_are_detected(chain):
    """Deleting the last two rows is caught by the chain head."""
    store, chain_id, _ = chain
    _execute(store, delete(EVENTS).where(EVENTS.c.chain_id == chain_id, EVENTS.c.seq >= 4))
    problem = verify_chain(store).first_problem
    assert problem is not None
    assert problem.seq == 4
    assert problem.reason.startswith("chain head mismatch (last rows deleted)")


def test_forged_row_with_a_valid_hash_is_detected(chain, make_event):
    """A row appended with a correctly recomputed hash is still caught (beyond the head)."""
    store, chain_id, _ = chain
    with store.engine.connect() as conn:
        last = conn.execute(select(EVENTS).where(_at(chain_id, 5))).one()._mapping
    forged = dict(last)
    forged.update(event_id="f" * 32, seq=6, prev_hash=last["hash"], prompt="forged")
    content = content_json_from_mapping({k: forged[k] for k in CONTENT_FIELDS})
    forged["hash"] = chain_hash(
        content, chain_id=chain_id, seq=6, prev_hash=last["hash"], hmac_key=None
    )
    _execute(store, insert(EVENTS).values(forged))
    problem = verify_chain(store).first_problem
    assert problem is not None
    assert (problem.seq, problem.event_id) == (6, "f" * 32)
    assert problem.reason.startswith("unexpected row (inserted)")


def test_row_in_unregistered_chain_is_detected(chain):
    """A row claiming a chain no writer registered is reported as inserted."""
    store, chain_id, _ = chain
    with store.engine.connect() as conn:
        row = dict(conn.execute(select(EVENTS).where(_at(chain_id, 1))).one()._mapping)
    row.update(event_id="9" * 32, chain_id="c" * 32)
    _execute(store, insert(EVENTS).values(row))
    report = verify_chain(store)
    assert [(p.chain_id, p.event_id) for p in report.problems] == [("c" * 32, "9" * 32)]
    assert report.problems[0].reason.startswith("unexpected row (inserted)")


def test_swapped_rows_are_detected(chain):
    """Swapping the seq of rows 2 and 4 is reported at seq 2 as a broken link."""
    store, chain_id, ids = chain
    _execute(
        store,
        update(EVENTS).where(_at(chain_id, 2)).values(seq=-1),
        update(EVENTS).where(_at(chain_id, 4)).values(seq=2),
        update(EVENTS).where(_at(chain_id, -1)).values(seq=4),
    )
    problem = verify_chain(store).first_problem
    assert problem is not None
    assert (problem.seq, problem.event_id) == (2, ids[4])
    assert problem.reason == "prev_hash does not link (rows reordered)"


def test_problem_in_one_chain_leaves_others_clean(store, make_event):
    """Only the tampered chain is reported when several chains exist."""
    with store.writer() as a, store.writer() as b:
        a.write(make_event())
        rb = b.write(make_event())
    _execute(store, update(EVENTS).where(_at(rb.chain_id, 1)).values(tenant="evil"))
    report = verify_chain(store)
    assert report.chains_checked == 2
    assert [p.chain_id for p in report.problems] == [rb.chain_id]


def test_hmac_key_is_required_and_checked(backend_url, make_event, policy_digest):
    """A keyed chain verifies with its key, fails with a wrong key and without one."""
    with AuditStore(backend_url, hmac_key=b"right") as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        with store.writer() as writer:
            first = writer.write(make_event())
            writer.write(make_event())
        assert verify_chain(store).ok  # the store's own key
    assert verify_chain(backend_url, hmac_key=b"right").ok
    wrong = verify_chain(backend_url, hmac_key=b"wrong").first_problem
    assert wrong is not None
    assert (wrong.seq, wrong.event_id) == (1, first.event_id)
    assert wrong.reason == "hash mismatch (row edited or wrong HMAC key)"
    missing = verify_chain(backend_url).first_problem
    assert missing is not None
    assert "needs the HMAC key" in missing.reason


def test_awkward_values_still_verify_after_the_round_trip(store, make_event):
    """Numbers JSONB rewrites, unicode, empty and nested values hash the same when read back."""
    awkward = {
        "big": 1e20,
        "huge": 1.5e300,
        "one": 1.0,
        "tiny": 1e-7,
        "neg_zero": -0.0,
        "int64": 2**60,
        "text": "naïve ☃ 𝄞 \u200b",
        "nested": {"list": [1, 2.5, None, True, {"": []}]},
    }
    with store.writer() as writer:
        writer.write(make_event(metadata=awkward, timings_ms={"a": 0.1, "b": 3.0}, findings=()))
        writer.write(make_event(latency_ms=None, prompt=None, output="", tenant=None))
    report = verify_chain(store)
    assert report.ok, report.problems
    assert report.events_checked == 2
