"""Durable audit writes beside the raw limit of the same store, on SQLite and PostgreSQL.

For each backend, in one run: the raw limit (8 threads, each its own connection, plain
batched INSERTs of rows of the same size into ``audit_events``, 32 rows per transaction,
fsync on: SQLite WAL synchronous=FULL, PostgreSQL synchronous_commit as configured), the
naive writer (one commit per event) and the group-commit writer, both with 8 caller
threads through `AuditWriter.write` (durable). Ratios are what to compare across machines.
Then verify throughput (events/s checked, hash chain plus a signed checkpoint) on the
group-commit log.

Run: ``.venv/bin/python bench/bench_audit.py [--events 8000] [--callers 8] [--pg URL]``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, insert, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit import AuditEvent, AuditStore, create_checkpoints, verify_chain
from audit.engine import IMMEDIATE, create_audit_engine
from audit.schema import EVENTS
from audit.writer import event_row
from bench.machine import describe

DIGEST = "sha256:" + "ef" * 32
GOAL_RATIO = 0.6
PG_ADMIN = os.environ.get("GUARDRAILS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1/test")


def _event(i: int) -> AuditEvent:
    return AuditEvent(
        request_id=f"req-{i}",
        policy_name="default",
        policy_version="1.0",
        policy_digest=DIGEST,
        action="allow",
        tenant="acme",
        user="alice",
        model="moe-small",
        prompt="Summarise the attached quarterly report in three bullet points. " * 3,
        output="- Revenue grew 4%\n- Costs were flat\n- Outlook unchanged",
        input_action="allow",
        output_action="allow",
        findings=({"rule_id": "pii.email", "category": "pii", "score": 0.12, "spans": []},),
        latency_ms=41.5,
        timings_ms={"normalize": 0.04, "input_rules": 0.31, "generate": 40.1},
        metadata={"client": "bench"},
    )


def _raw_row(i: int, chain: str) -> dict[str, Any]:
    # Same columns as the writer's rows, without hashing: the store's raw insert limit.
    event = dataclasses.replace(_event(i), event_id=secrets.token_hex(16))
    return event_row(event, chain_id=chain, seq=i + 1, prev_hash="0" * 64, hash_="1" * 64)


def _threads(callers: int, work: Callable[[int], None]) -> float:
    start = threading.Barrier(callers + 1)

    def body(c: int) -> None:
        start.wait()
        work(c)

    threads = [threading.Thread(target=body, args=(c,)) for c in range(callers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def raw_limit(url: str, events: int, callers: int) -> float:
    """Plain batched INSERTs, 32 rows per transaction, one connection per thread."""
    engine = create_audit_engine(url)
    per = events // callers
    rows = [[_raw_row(i, f"raw{c:029d}") for i in range(per)] for c in range(callers)]

    def work(c: int) -> None:
        with engine.connect() as conn:
            conn.execution_options(**{IMMEDIATE: True})
            for k in range(0, per, 32):
                with conn.begin():
                    conn.execute(insert(EVENTS), rows[c][k : k + 32])

    try:
        elapsed = _threads(callers, work)
    finally:
        engine.dispose()
    return per * callers / elapsed


def writer_rate(store: AuditStore, events: int, callers: int, max_batch: int) -> tuple[float, int]:
    """Durable writes through one writer from ``callers`` threads: (events/s, commits)."""
    writer = store.writer(max_batch=max_batch)
    for i in range(20):
        writer.write(_event(i))
    per = events // callers
    payloads = [[_event(c * per + i) for i in range(per)] for c in range(callers)]

    def work(c: int) -> None:
        for event in payloads[c]:
            writer.write(event)

    elapsed = _threads(callers, work)
    writer.close()
    return per * callers / elapsed, writer.commits


def bench_backend(name: str, url: str, events: int, callers: int) -> None:
    with AuditStore(url, auto_upgrade=True) as store:
        store.record_policy(DIGEST, "default", "1.0", "rules: []\n")
        raw = raw_limit(url, events, callers)
        naive, _ = writer_rate(store, events // 4, callers, 1)
        group, commits = writer_rate(store, events, callers, 512)
        with store.engine.begin() as conn:  # drop the raw rows: they are not chained
            conn.execute(EVENTS.delete().where(EVENTS.c.chain_id.like("raw%")))
        create_checkpoints(store, Ed25519PrivateKey.generate())
        t0 = time.perf_counter()
        report = verify_chain(store)
        verify_s = time.perf_counter() - t0
    if not report.ok:
        raise SystemExit(f"{name}: verification failed after the run: {report.first_problem}")
    print(f"[{name}]")
    print(f"  raw limit (32 rows/tx)   : {raw:9,.0f} events/s")
    print(f"  naive (1 commit/event)   : {naive:9,.0f} events/s  ({naive / raw:.2f} of raw)")
    print(
        f"  group commit (durable)   : {group:9,.0f} events/s  ({group / raw:.2f} of raw, "
        f"{(events + 20) / max(commits, 1):.1f} events/commit)"
    )
    verdict = "meets" if group / raw >= GOAL_RATIO else "misses"
    print(f"  goal >= {GOAL_RATIO} of raw       : {verdict}")
    print(
        f"  verify                   : {report.events_checked / verify_s:9,.0f} events/s "
        f"({report.events_checked} events, {report.checkpoints_checked} checkpoints)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=8000, help="events per run")
    parser.add_argument("--callers", type=int, default=8, help="concurrent threads")
    parser.add_argument("--pg", default=PG_ADMIN, help="PostgreSQL server to use ('' skips)")
    args = parser.parse_args()
    print(describe("sqlalchemy", "psycopg", "cryptography"))
    print(f"workload: {args.events} events per run (naive: a quarter), {args.callers} threads")
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        bench_backend("sqlite", f"sqlite:///{tmp}/bench.db", args.events, args.callers)
    if args.pg:
        admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
        name = f"bench_audit_{secrets.token_hex(4)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = admin.url.set(database=name).render_as_string(hide_password=False)
            bench_backend("postgresql", url, args.events, args.callers)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
