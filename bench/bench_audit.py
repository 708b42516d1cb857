"""Durable audit writes beside the raw limit of the same store, on SQLite and PostgreSQL.

For each backend and each caller count (8 and 32 by default), interleaved in one run
(raw, writer, raw, writer, ... ``--rounds`` times; medians reported): the raw limit, and the
group-commit writer. The raw limit is N threads, each with its own connection straight
through the driver (``sqlite3`` / ``psycopg``, not SQLAlchemy), inserting rows of the same
size into ``audit_events`` with one executemany of ``--raw-batch`` rows per transaction,
fsync on (SQLite WAL ``synchronous=FULL``; PostgreSQL ``synchronous_commit`` as the server
is configured, printed). The writer is N threads calling `AuditWriter.write` (each call
returns only once its event is durable, hashed and chained). The machine's load is
printed before and after, since shared machines drift. Then the naive writer (one commit
per event) once, and verify throughput on the writer's log.

Run: ``.venv/bin/python bench/bench_audit.py [--events 4000] [--callers 8 32] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit import AuditEvent, AuditStore, create_checkpoints, verify_chain
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


_COLUMNS = [c.name for c in EVENTS.columns if c.name != "purged_at"]
_JSON = {"findings", "timings_ms", "metadata"}


def _raw_params(row: dict[str, Any], sqlite: bool) -> tuple[Any, ...]:
    values: list[Any] = []
    for name in _COLUMNS:
        value = row[name]
        if name in _JSON:
            value = json.dumps(value)
        elif name == "created_at" and sqlite:
            value = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        values.append(value)
    return tuple(values)


def raw_limit(url: str, events: int, callers: int, batch: int) -> float:
    """Batched INSERTs straight through the driver: one connection per thread, ``batch``
    rows per transaction (one executemany), fsync on."""
    sqlite = url.startswith("sqlite")
    per = events // callers
    tag = secrets.token_hex(3)
    rows = [
        [_raw_params(_raw_row(i, f"raw{tag}{c:023d}"), sqlite) for i in range(per)]
        for c in range(callers)
    ]
    names = ", ".join(f'"{c}"' for c in _COLUMNS)
    if sqlite:
        marks = ", ".join("?" for _ in _COLUMNS)
    else:
        marks = ", ".join("%s::jsonb" if c in _JSON else "%s" for c in _COLUMNS)
    sql = f"INSERT INTO audit_events ({names}) VALUES ({marks})"

    def connect() -> Any:
        if sqlite:
            conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=60)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            return conn
        return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))

    def work(c: int) -> None:
        conn = connect()
        try:
            for k in range(0, per, batch):
                if sqlite:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(sql, rows[c][k : k + batch])
                    conn.execute("COMMIT")
                else:
                    with conn.cursor() as cur:
                        cur.executemany(sql, rows[c][k : k + batch])
                    conn.commit()
        finally:
            conn.close()

    return per * callers / _threads(callers, work)


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


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_backend(
    name: str, url: str, events: int, callers_list: list[int], rounds: int, batch: int
) -> None:
    print(f"[{name}] load before: {_load()}")
    with AuditStore(url, auto_upgrade=True) as store:
        store.record_policy(DIGEST, "default", "1.0", "rules: []\n")
        if name == "postgresql":
            with store.engine.connect() as conn:
                sync = conn.exec_driver_sql("SHOW synchronous_commit").scalar()
                fsync = conn.exec_driver_sql("SHOW fsync").scalar()
            print(f"  server: synchronous_commit={sync}, fsync={fsync}")
        for callers in callers_list:
            raws: list[float] = []
            groups: list[float] = []
            sizes: list[float] = []
            for _ in range(rounds):  # interleaved: raw and writer under the same load
                raws.append(raw_limit(url, events, callers, batch))
                rate, commits = writer_rate(store, events, callers, 512)
                groups.append(rate)
                sizes.append((events // callers * callers + 20) / max(commits, 1))
            raw, group = statistics.median(raws), statistics.median(groups)
            verdict = "meets" if group / raw >= GOAL_RATIO else "misses"
            each = ", ".join(f"{g / r:.2f}" for g, r in zip(groups, raws, strict=True))
            print(
                f"  {callers:>2} callers: raw {raw:8,.0f} ev/s ({batch} rows/tx) | writer "
                f"{group:7,.0f} ev/s, {statistics.median(sizes):5.1f} ev/commit | ratio "
                f"{group / raw:.2f} (rounds: {each}) -> goal >= {GOAL_RATIO}: {verdict}"
            )
        naive, _ = writer_rate(store, max(events // 8, 100), callers_list[0], 1)
        print(f"  naive (1 commit/event, {callers_list[0]} callers): {naive:8,.0f} ev/s")
        with store.engine.begin() as conn:  # drop the raw rows: they are not chained
            conn.execute(EVENTS.delete().where(EVENTS.c.chain_id.like("raw%")))
        create_checkpoints(store, Ed25519PrivateKey.generate())
        t0 = time.perf_counter()
        report = verify_chain(store)
        verify_s = time.perf_counter() - t0
    if not report.ok:
        raise SystemExit(f"{name}: verification failed after the run: {report.first_problem}")
    print(
        f"  verify: {report.events_checked / verify_s:9,.0f} events/s "
        f"({report.events_checked} events, {report.checkpoints_checked} checkpoints)"
    )
    print(f"[{name}] load after: {_load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=4000, help="events per run")
    parser.add_argument("--callers", type=int, nargs="+", default=[8, 32], help="threads")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--raw-batch", type=int, default=128, help="raw rows per transaction")
    parser.add_argument("--pg", default=PG_ADMIN, help="PostgreSQL server to use ('' skips)")
    parser.add_argument("--no-sqlite", action="store_true", help="skip SQLite")
    args = parser.parse_args()
    print(describe("sqlalchemy", "psycopg", "cryptography"))
    print(f"sqlite {sqlite3.sqlite_version}")
    print(
        f"workload: {args.events} events per run, callers {args.callers}, "
        f"{args.rounds} interleaved rounds"
    )
    run = (args.events, args.callers, args.rounds, args.raw_batch)
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
            bench_backend("sqlite", f"sqlite:///{tmp}/bench.db", *run)
    if args.pg:
        admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
        name = f"bench_audit_{secrets.token_hex(4)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = admin.url.set(database=name).render_as_string(hide_password=False)
            bench_backend("postgresql", url, *run)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
