"""Durable audit writes on SQLite: group commit vs. one commit per event, side by side.

Eight caller threads each write events through `AuditWriter.write`, which returns only
after the commit holding the event (WAL, synchronous=FULL). The group-commit writer shares
each commit among every event queued at that moment; the naive writer is the same code with
``max_batch=1``, i.e. one transaction and one fsync per event. Both runs use a fresh
SQLite file and the same events; the ratio is what to compare across machines.

Run: ``.venv/bin/python bench/bench_audit.py [--events 4000] [--callers 8]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit import AuditEvent, AuditStore, verify_chain

DIGEST = "sha256:" + "ef" * 32
GOAL = 5_000.0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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


def run(max_batch: int, events: int, callers: int, workdir: Path) -> tuple[float, int, float]:
    """Durable writes with ``callers`` threads; returns (events/s, commits, CPU µs/event)."""
    url = f"sqlite:///{workdir / f'bench-{max_batch}.db'}"
    per_caller = events // callers
    with AuditStore(url, auto_upgrade=True) as store:
        store.record_policy(DIGEST, "default", "1.0", "rules: []\n")
        writer = store.writer(max_batch=max_batch)
        for i in range(50):  # warm-up: connections, statement cache
            writer.write(_event(i))
        payloads = [[_event(c * per_caller + i) for i in range(per_caller)] for c in range(callers)]
        start = threading.Barrier(callers + 1)

        def caller(batch: list[AuditEvent]) -> None:
            start.wait()
            for event in batch:
                writer.write(event)

        threads = [threading.Thread(target=caller, args=(p,)) for p in payloads]
        for t in threads:
            t.start()
        start.wait()
        t0, cpu0 = time.perf_counter(), time.process_time()
        for t in threads:
            t.join()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        writer.close()
        report = verify_chain(store)
        if not report.ok or report.events_checked != per_caller * callers + 50:
            raise SystemExit(f"verification failed after the run: {report}")
        commits = writer.commits
    done = per_caller * callers
    return done / elapsed, commits, cpu / done * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=4000, help="events per run")
    parser.add_argument("--callers", type=int, default=8, help="concurrent caller threads")
    args = parser.parse_args()

    print(f"machine : {_cpu_model()}, {os.cpu_count()} logical cores, {platform.system()}")
    print(f"python  : {platform.python_version()} ({platform.python_implementation()})")
    print(f"sqlalchemy {sqlalchemy.__version__}, sqlite {sqlite3.sqlite_version}")
    print(f"load    : {os.getloadavg()[0]:.2f} (1-min average; other work shares this machine)")
    print(f"workload: {args.events} durable writes, {args.callers} callers, WAL synchronous=FULL")
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        naive, naive_commits, naive_cpu = run(1, args.events, args.callers, Path(tmp))
        group, group_commits, group_cpu = run(512, args.events, args.callers, Path(tmp))
    print(
        f"naive (1 commit/event)   : {naive:9,.0f} events/s  ({naive_commits} commits, "
        f"{naive_cpu:.0f} µs CPU/event)"
    )
    print(
        f"group commit             : {group:9,.0f} events/s  ({group_commits} commits, "
        f"{(args.events + 50) / max(group_commits, 1):.1f} events/commit, "
        f"{group_cpu:.0f} µs CPU/event)"
    )
    print(f"ratio group/naive        : {group / naive:9.2f}x")
    verdict = "meets" if group >= GOAL else f"misses by {GOAL - group:,.0f} events/s"
    print(f"goal {GOAL:,.0f} events/s       : {verdict}")


if __name__ == "__main__":
    main()
