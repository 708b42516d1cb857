"""Two-phase stream records and the writer's per-write fallback (the stream contract)."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3

import pytest
from sqlalchemy import select

from audit import AuditEvent, AuditStore, EventFilter, upgrade, verify_chain
from audit.chain import content_json
from audit.engine import create_audit_engine
from audit.exceptions import AuditConfigError, AuditEventError, AuditStoreError
from audit.query import count_by, find_event, iter_events, listed_calls, unclosed_streams
from audit.schema import EVENTS


def test_phase_and_stream_end_round_trip_and_verify(store, make_event):
    """open/close events are stored with their phase and stream_end, and the chain verifies."""
    with store.writer() as writer:
        writer.write(make_event(request_id="s1", phase="open", streamed=True))
        writer.write(
            make_event(request_id="s1", phase="close", stream_end="complete", streamed=True)
        )
        writer.write(make_event(request_id="c1"))
    got = {(e.request_id, e.phase, e.stream_end) for e in store.events()}
    assert got == {("s1", "open", None), ("s1", "close", "complete"), ("c1", "call", None)}
    assert verify_chain(store).ok


def test_editing_phase_or_stream_end_is_detected(store, make_event):
    """Turning a close into a call, or changing how a stream ended, breaks the hash."""
    with store.writer() as writer:
        close = writer.write(make_event(phase="close", stream_end="error", streamed=True))
    with store.engine.begin() as conn:
        conn.execute(
            EVENTS.update().where(EVENTS.c.event_id == close.event_id).values(stream_end="complete")
        )
    report = verify_chain(store)
    assert not report.ok
    assert "hash mismatch" in report.problems[0].reason
    with store.engine.begin() as conn:
        conn.execute(
            EVENTS.update()
            .where(EVENTS.c.event_id == close.event_id)
            .values(stream_end=None, phase="call")
        )
    assert not verify_chain(store).ok


def test_call_events_hash_as_before_the_phase_fields(make_event):
    """A plain call's canonical encoding has no phase keys, so pre-0003 chains still verify."""
    encoded = content_json(make_event())
    assert '"phase"' not in encoded
    assert '"stream_end"' not in encoded
    assert '"phase":"open"' in content_json(make_event(phase="open"))


@pytest.mark.parametrize(
    ("phase", "stream_end"),
    [("middle", None), ("open", "complete"), ("call", "error"), ("close", "done")],
)
def test_bad_phase_or_stream_end_is_refused(make_event, phase, stream_end):
    """Only call/open/close, and a known stream_end only on a close, can be built."""
    with pytest.raises(AuditEventError):
        make_event(phase=phase, stream_end=stream_end)


def test_spill_fallback_needs_a_spill_folder(store, make_event):
    """fallback='spill' on a store without spill_dir is a config error before anything runs."""
    with store.writer() as writer, pytest.raises(AuditConfigError, match="spill_dir"):
        writer.write(make_event(), fallback="spill")


def test_fallback_is_per_write_during_an_outage(tmp_path, sqlite_url, make_event, policy_digest):
    """In one outage, 'spill' writes are acknowledged as spilled, 'raise' writes fail, and
    only the spilled ones land (once each) when the store is back."""
    spill = tmp_path / "spill"
    with AuditStore(sqlite_url + "?timeout=0.1", spill_dir=spill) as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        writer = store.writer(spill_retry_s=0.05)
        blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        refused = make_event()
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            spilled = writer.write(make_event(phase="open"), fallback="spill")
            with pytest.raises(AuditStoreError):
                writer.write(refused, fallback="raise")
            spilled2 = writer.write(make_event(phase="close", stream_end="complete"))
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        assert spilled.spilled
        assert spilled2.spilled
        writer.close()
        with store.engine.connect() as conn:
            ids = list(conn.execute(select(EVENTS.c.event_id)).scalars())
        assert sorted(ids) == sorted([spilled.event_id, spilled2.event_id])
        assert verify_chain(store).ok


async def _cancel_queued_write(writer, first: AuditEvent, second: AuditEvent) -> None:
    held = asyncio.create_task(writer.write_async(first, fallback="raise"))
    while not writer._queue.empty():  # the writer thread holds `first`, blocked on the lock
        await asyncio.sleep(0.01)
    queued = asyncio.create_task(writer.write_async(second, fallback="raise"))
    await asyncio.sleep(0)  # `second` is submitted and waits in the queue
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    return None if held.done() else held.cancel()


def test_cancelling_write_async_never_withdraws_the_event(
    tmp_path, sqlite_url, make_event, policy_digest
):
    """A task cancelled while its event still waits in the queue gets the event committed."""
    first, second = make_event(), make_event()
    with AuditStore(sqlite_url + "?timeout=60") as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
        with store.writer() as writer:
            blocker.execute("BEGIN EXCLUSIVE")
            try:
                asyncio.run(_cancel_queued_write(writer, first, second))
            finally:
                blocker.execute("COMMIT")
                blocker.close()
        stored = {e.event_id for e in store.events()}
    assert stored == {first.event_id, second.event_id}


def test_stored_event_has_the_phase_fields():
    """StoredEvent carries phase and stream_end like AuditEvent."""
    names = {f.name for f in dataclasses.fields(AuditEvent)}
    from audit import StoredEvent

    assert {"phase", "stream_end"} <= {f.name for f in dataclasses.fields(StoredEvent)}
    assert {"phase", "stream_end"} <= names


def _stream_log(store, make_event) -> dict[str, str]:
    """A closed stream, an unclosed one and a plain call; their request ids by kind."""
    with store.writer() as writer:
        writer.write(make_event(request_id="closed", phase="open", streamed=True, output=None))
        writer.write(make_event(request_id="crashed", phase="open", streamed=True, output=None))
        writer.write(make_event(request_id="plain"))
        writer.write(
            make_event(request_id="closed", phase="close", stream_end="client_closed", prompt=None)
        )
    return {"closed": "closed", "crashed": "crashed", "plain": "plain"}


def test_verify_reports_unclosed_streams_without_failing(store, make_event):
    """An open with no close is listed as unclosed by verify; the log still verifies."""
    _stream_log(store, make_event)
    report = verify_chain(store)
    assert report.ok
    assert [u.request_id for u in report.unclosed] == ["crashed"]


def test_query_lists_unclosed_streams_and_folds_stream_halves(store, make_event):
    """unclosed_streams finds the crashed stream only; listed_calls folds open+close into one
    row whose prompt comes from the opening, and marks the lone open as unclosed."""
    _stream_log(store, make_event)
    with store.engine.connect() as conn:
        assert [e.request_id for e in unclosed_streams(conn)] == ["crashed"]
        events = list(iter_events(conn, EventFilter(), newest_first=False))
        calls = listed_calls(conn, events)
        # a page holding only the crashed open, and one holding only the closed one's open
        lone = listed_calls(conn, [e for e in events if e.phase == "open"])
    assert len(events) == 4
    got = {c.event.request_id: (c.status, c.prompt) for c in calls}
    assert got == {
        "closed": ("client_closed", "Hello, wörld"),
        "crashed": ("unclosed", "Hello, wörld"),
        "plain": ("call", "Hello, wörld"),
    }
    assert {c.event.request_id: c.status for c in lone} == {
        "closed": "client_closed",
        "crashed": "unclosed",
    }


def test_readers_of_a_never_upgraded_database_say_run_db_upgrade(tmp_path, make_event):
    """query, stats, show, store.events (policy replay) and verify on a schema-less file, and
    on one stopped at 0002, fail with 'run guardrails db upgrade', not an SQL error."""
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    old = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(old, "0002")
    for url in (f"sqlite:///{empty}", old):
        engine = create_audit_engine(url)
        try:
            with engine.connect() as conn:
                for read in (
                    lambda: list(iter_events(conn, EventFilter())),
                    lambda: count_by(conn, EventFilter()),
                    lambda: unclosed_streams(conn),
                ):
                    with pytest.raises(AuditConfigError, match="guardrails db upgrade"):
                        read()
            with pytest.raises(AuditConfigError, match="guardrails db upgrade"):
                find_event(engine, "x")
        finally:
            engine.dispose()
        with AuditStore(url) as store, pytest.raises(AuditConfigError, match="db upgrade"):
            store.events()
        with pytest.raises(AuditConfigError, match="guardrails db upgrade"):
            verify_chain(url)


def test_cli_query_and_verify_show_unclosed_streams(
    tmp_path, sqlite_url, make_event, policy_digest, monkeypatch
):
    """`audit query` shows a closed stream as one row and the crashed one as unclosed;
    `audit verify` lists the unclosed stream and still exits 0."""
    from typer.testing import CliRunner

    from guardrails.cli import app

    monkeypatch.setenv("COLUMNS", "250")
    with AuditStore(sqlite_url) as store:
        store.record_policy(policy_digest, "default", "1.0", "rules: []\n")
        _stream_log(store, make_event)
    runner = CliRunner()
    query = runner.invoke(app, ["audit", "query", "--audit", sqlite_url, "--all"])
    assert query.exit_code == 0, query.output
    assert query.output.count("stream: client_closed") == 1
    assert query.output.count("stream: unclosed") == 1
    verify = runner.invoke(app, ["audit", "verify", "--audit", sqlite_url])
    assert verify.exit_code == 0, verify.output
    assert "1 unclosed stream(s)" in verify.output
    assert "request crashed" in verify.output


def test_a_chain_head_moved_behind_the_writers_back_fails_the_batch_and_keeps_nothing(
    store, make_event
):
    """If the stored head is not where the writer left it (someone else wrote or removed
    it), the batch fails with AuditStoreError and none of its rows is kept; the writer
    reloads the head and goes on."""
    from audit.schema import CHAINS

    with store.writer() as writer:
        writer.write(make_event())
        with store.engine.begin() as conn:
            conn.execute(CHAINS.update().values(head_seq=7))
        lost = make_event()
        with pytest.raises(AuditStoreError, match="no longer seq 1"):
            writer.write(lost)
        assert lost.event_id not in {e.event_id for e in store.events()}
