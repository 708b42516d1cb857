"""Query latency of the audit CLI's common filters on a large PostgreSQL audit table.

Fills a fresh database (migrated to head, so with the query indexes) with ``--events``
synthetic events generated server-side (50 tenants, 1,000 users, 4 models, 5% blocked,
10% with a finding, spread over 30 days), then times each common query as the CLI runs it
(`audit.query.select_events`, first page of 50, newest first): the median of 5 runs.
These rows are not chained (this measures queries, not verification).

Run: ``.venv/bin/python bench/bench_audit_query.py [--events 300000] [--pg URL]``
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit import EventFilter, upgrade
from audit.query import count_by, select_events
from bench.machine import describe

PG_ADMIN = os.environ.get("GUARDRAILS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1/test")
GOAL_MS = 100.0

FILL = """
INSERT INTO audit_policies VALUES ('d', 'default', '1', 'rules: []', now());
INSERT INTO audit_chains VALUES ('c', now(), 'bench', 0, 'sha256', :n, repeat('0', 64));
INSERT INTO audit_events
SELECT md5(i::text), 'c', i, repeat('0', 64), md5((i + 1)::text),
       now() - make_interval(secs => (:n - i) * (30 * 86400.0 / :n)),
       'req-' || i, 'tenant-' || (i % 50), 'user-' || (i % 1000), 'model-' || (i % 4),
       'Summarise the attached report, case ' || i || ' in three bullet points please.',
       'Revenue grew; costs flat; outlook unchanged for case ' || i,
       'full', 'allow', 'allow',
       CASE WHEN i % 20 = 0 THEN 'block' ELSE 'allow' END,
       CASE WHEN i % 10 = 0
            THEN jsonb_build_array(jsonb_build_object('rule_id', 'rule-' || (i % 7),
                                                      'stage', 'input', 'score', 0.9))
            ELSE '[]'::jsonb END,
       false, 40.5, '{"generate": 40.1}'::jsonb, NULL, false, NULL,
       'default', '1', 'd', '{"client": "bench"}'::jsonb, NULL
FROM generate_series(1, :n) AS i;
ANALYZE audit_events;
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--pg", default=PG_ADMIN)
    args = parser.parse_args()
    print(describe("sqlalchemy", "psycopg"))
    admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
    name = f"bench_query_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        engine = create_engine(url)
        t0 = time.perf_counter()
        with engine.begin() as conn:
            for statement in FILL.split(";\n"):
                if statement.strip():
                    conn.execute(text(statement), {"n": args.events})
        filled = time.perf_counter() - t0
        print(f"table: {args.events:,} events over 30 days, filled in {filled:.0f} s")
        now = datetime.now(UTC)
        day = now - timedelta(hours=24)
        cases = {
            "last 24 h (default page)": EventFilter(since=day),
            "tenant, last 24 h": EventFilter(since=day, tenant="tenant-7"),
            "user, all time": EventFilter(user="user-123"),
            "action=block, last 24 h": EventFilter(since=day, action="block"),
            "model + action, 7 days": EventFilter(
                since=now - timedelta(days=7), model="model-0", action="block"
            ),
            "rule id, last 24 h": EventFilter(since=day, rule_id="rule-3"),
            "text contains, last 24 h": EventFilter(since=day, text="case 12345 "),
            "policy digest, 7 days": EventFilter(since=now - timedelta(days=7), policy_digest="d"),
        }
        with engine.connect() as conn:
            worst = 0.0
            for label, where in cases.items():
                query = select_events(where, dialect="postgresql", limit=50)
                times = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    rows = conn.execute(query).all()
                    times.append((time.perf_counter() - t0) * 1000)
                median = statistics.median(times)
                worst = max(worst, median)
                print(f"  {label:<28} {median:8.1f} ms  ({len(rows)} rows)")
            t0 = time.perf_counter()
            count_by(conn, EventFilter(since=day))
            print(f"  {'stats, last 24 h':<28} {(time.perf_counter() - t0) * 1000:8.1f} ms")
        verdict = "meets" if worst <= GOAL_MS else "misses"
        print(f"worst page query {worst:.1f} ms: {verdict} the {GOAL_MS:.0f} ms goal")
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
