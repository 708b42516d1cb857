"""What the console pages show, read from the audit store: filtered pages of events, one
event with its highlighted spans, chart series, chains and the policy versions seen.

Everything here is synchronous and read-only (the routes run it in the thread pool) and
takes the viewing `ConsoleUser`, so the tenant scope is applied in one place.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from audit import AuditError, EventFilter, StoredEvent, parse_age
from audit.checkpoint import load_checkpoints
from audit.query import iter_events, select_events
from audit.schema import CHAINS, EVENTS, POLICIES
from guardrails.console.auth import ConsoleUser

__all__ = [
    "FILTER_FIELDS",
    "ChainRow",
    "ChartData",
    "FilterForm",
    "PolicySeen",
    "Segment",
    "chain_rows",
    "chart_data",
    "event_for",
    "event_page",
    "highlight",
    "iter_visible",
    "parse_filter",
    "policies_seen",
    "policy_text_for",
]

FILTER_FIELDS = ("since", "until", "tenant", "user", "model", "action", "rule", "contains")
"""The query parameters of the event list (the filters of ``guardrails audit query``)."""


@dataclass(frozen=True, slots=True)
class FilterForm:
    """The filter as the user typed it (echoed into the form) and as a query."""

    values: dict[str, str]
    where: EventFilter
    error: str | None = None

    def query_string(self, **extra: str | int) -> str:
        """The URL query for this filter plus ``extra`` (e.g. a page number)."""
        from urllib.parse import urlencode

        items: dict[str, str | int] = {k: v for k, v in self.values.items() if v}
        items.update(extra)
        return urlencode(items)


def _when(text: str, name: str) -> datetime:
    """An ISO time (naive means UTC) or an age like 24h (that long ago)."""
    try:
        return datetime.now(UTC) - parse_age(text)
    except AuditError:
        pass
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{name} {text!r}: expected an ISO time (2026-01-31T12:00) or an age (30m, 24h, 7d)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_filter(params: Mapping[str, str], user: ConsoleUser) -> FilterForm:
    """The `EventFilter` for the list's query parameters, within ``user``'s tenant scope.

    A bad value does not raise: the form comes back with ``error`` set and a filter that
    matches nothing, so the page shows the message instead of every event.
    """
    values = {name: (params.get(name) or "").strip() for name in FILTER_FIELDS}
    if user.tenant is not None:
        if values["tenant"] and values["tenant"] != user.tenant:
            nothing = EventFilter(tenant=user.tenant, chain_id="")
            return FilterForm(values, nothing, f"tenant {values['tenant']!r} is not visible")
        values["tenant"] = user.tenant
    try:
        where = EventFilter(
            since=_when(values["since"], "since") if values["since"] else None,
            until=_when(values["until"], "until") if values["until"] else None,
            tenant=values["tenant"] or None,
            user=values["user"] or None,
            model=values["model"] or None,
            action=values["action"] or None,
            rule_id=values["rule"] or None,
            text=values["contains"] or None,
        )
    except (ValueError, AuditError) as exc:
        nothing = EventFilter(tenant=user.tenant, chain_id="")
        return FilterForm(values, nothing, str(exc))
    return FilterForm(values, where)


def event_page(
    engine: Engine, form: FilterForm, *, page: int, size: int
) -> tuple[list[StoredEvent], bool]:
    """Page ``page`` (from 1) of the filter's events, newest first, and whether more follow."""
    with engine.connect() as conn:
        events = list(iter_events(conn, form.where, limit=size + 1, offset=(page - 1) * size))
    return events[:size], len(events) > size


def iter_visible(engine: Engine, form: FilterForm) -> Iterator[StoredEvent]:
    """Every event of the filter, newest first (for exports; streamed from the store)."""
    with engine.connect() as conn:
        yield from iter_events(conn, form.where, limit=None)


def event_for(engine: Engine, event_id: str, user: ConsoleUser) -> StoredEvent | None:
    """The event ``event_id`` if it exists and ``user`` may see it (else None: a scoped
    user cannot tell another tenant's event from a missing one)."""
    if len(event_id) > 64:
        return None
    where = EventFilter(tenant=user.tenant) if user.tenant is not None else EventFilter()
    query = select_events(where, dialect=engine.dialect.name, limit=1).where(
        EVENTS.c.event_id == event_id
    )
    from audit.store import stored_event_from_row

    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else stored_event_from_row(row)


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of text and the rules whose spans cover it (empty: not part of a finding)."""

    text: str
    rules: tuple[str, ...] = ()


def _spans_of(finding: Mapping[str, Any]) -> list[tuple[int, int]]:
    raw = finding.get("spans")
    if raw is None and finding.get("span") is not None:
        raw = [finding["span"]]
    spans = []
    for span in raw or ():
        if isinstance(span, list | tuple) and len(span) == 2:
            try:
                spans.append((int(span[0]), int(span[1])))
            except (TypeError, ValueError):
                continue
    return spans


def highlight(text: str | None, findings: tuple[dict[str, Any], ...], stage: str) -> list[Segment]:
    """``text`` cut into segments at the spans of ``stage``'s findings (spans outside the
    text are ignored; overlapping spans give segments naming every rule)."""
    text = text or ""
    marks: list[tuple[int, int, str]] = []
    for finding in findings:
        if finding.get("stage", "input") != stage:
            continue
        for start, end in _spans_of(finding):
            if 0 <= start < end <= len(text):
                marks.append((start, end, str(finding.get("rule_id", "?"))))
    cuts = sorted({0, len(text), *(s for s, _, _ in marks), *(e for _, e, _ in marks)})
    segments = []
    for start, end in itertools.pairwise(cuts):
        rules = tuple(sorted({r for s, e, r in marks if s <= start and end <= e}))
        segments.append(Segment(text[start:end], rules))
    return segments


# --- charts ---------------------------------------------------------------------------


@dataclass(slots=True)
class ChartData:
    """The series behind the charts page, over the events a filter selects."""

    bucket: str  # "hour" or "day"
    buckets: list[str] = field(default_factory=list)
    by_action: dict[str, list[int]] = field(default_factory=dict)
    top_rules: list[tuple[str, int]] = field(default_factory=list)
    block_rate: dict[str, list[float | None]] = field(default_factory=dict)
    latency: dict[str, list[float | None]] = field(default_factory=dict)
    total: int = 0
    truncated: bool = False


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def chart_data(engine: Engine, form: FilterForm, *, max_events: int = 200_000) -> ChartData:
    """Events per hour (a range of two days or less) or per day, stacked by action; the top
    rules; block rate per policy version per bucket; latency p50/p90/p99 per bucket."""
    columns = (
        EVENTS.c.created_at,
        EVENTS.c.action,
        EVENTS.c.policy_name,
        EVENTS.c.policy_version,
        EVENTS.c.latency_ms,
        EVENTS.c.findings,
    )
    query = select_events(form.where, dialect=engine.dialect.name, limit=max_events + 1)
    query = query.with_only_columns(*columns)
    with engine.connect() as conn:
        rows = list(conn.execute(query))
    truncated = len(rows) > max_events
    rows = rows[:max_events]
    times = [r.created_at.astimezone(UTC) for r in rows]
    span = (max(times) - min(times)) if times else timedelta(0)
    hourly = span <= timedelta(days=2)
    fmt = "%Y-%m-%d %H:00" if hourly else "%Y-%m-%d"
    data = ChartData("hour" if hourly else "day", total=len(rows), truncated=truncated)
    if not rows:
        return data
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    start = min(times).replace(minute=0, second=0, microsecond=0)
    if not hourly:
        start = start.replace(hour=0)
    labels: list[str] = []
    cursor = start
    while cursor <= max(times):
        labels.append(cursor.strftime(fmt))
        cursor += step
    index = {label: i for i, label in enumerate(labels)}
    actions: dict[str, list[int]] = defaultdict(lambda: [0] * len(labels))
    blocks: dict[str, list[int]] = defaultdict(lambda: [0] * len(labels))
    calls: dict[str, list[int]] = defaultdict(lambda: [0] * len(labels))
    latencies: list[list[float]] = [[] for _ in labels]
    rules: Counter[str] = Counter()
    for row, when in zip(rows, times, strict=True):
        i = index[when.strftime(fmt)]
        actions[row.action][i] += 1
        version = f"{row.policy_name}@{row.policy_version}"
        calls[version][i] += 1
        if row.action == "block":
            blocks[version][i] += 1
        if row.latency_ms is not None:
            bisect.insort(latencies[i], float(row.latency_ms))
        for finding in row.findings or ():
            if isinstance(finding, dict) and finding.get("rule_id"):
                rules[str(finding["rule_id"])] += 1
    order = ["block", "redact", "flag", "allow"]
    data.buckets = labels
    data.by_action = {a: actions[a] for a in sorted(actions, key=lambda a: (a not in order, a))}
    data.top_rules = rules.most_common(10)
    data.block_rate = {
        version: [b / c if c else None for b, c in zip(blocks[version], n, strict=True)]
        for version, n in sorted(calls.items())
    }
    data.latency = {
        f"p{round(q * 100)}": [_percentile(values, q) for values in latencies]
        for q in (0.5, 0.9, 0.99)
    }
    return data


# --- chains and policies ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One writer chain: its head and its last signed checkpoint."""

    chain_id: str
    hostname: str
    pid: int
    created_at: datetime
    hash_algorithm: str
    head_seq: int
    head_hash: str
    checkpoint_size: int | None
    checkpoint_root: str | None
    checkpoint_at: datetime | None
    checkpoint_key: str | None


def chain_rows(engine: Engine) -> list[ChainRow]:
    """Every registered chain, by creation time."""
    with engine.connect() as conn:
        latest = {c.chain_id: c for c in load_checkpoints(conn)}  # by size: last is largest
        rows = list(conn.execute(select(CHAINS).order_by(CHAINS.c.created_at)))
    out = []
    for row in rows:
        checkpoint = latest.get(row.chain_id)
        out.append(
            ChainRow(
                chain_id=row.chain_id,
                hostname=row.hostname,
                pid=row.pid,
                created_at=row.created_at,
                hash_algorithm=row.hash_algorithm,
                head_seq=row.head_seq,
                head_hash=row.head_hash,
                checkpoint_size=checkpoint.tree_size if checkpoint else None,
                checkpoint_root=checkpoint.root_hash if checkpoint else None,
                checkpoint_at=checkpoint.created_at if checkpoint else None,
                checkpoint_key=checkpoint.key_id if checkpoint else None,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class PolicySeen:
    """A policy version that decided events visible to the user."""

    digest: str
    name: str
    version: str
    events: int
    first_event: datetime
    last_event: datetime


def policies_seen(engine: Engine, user: ConsoleUser) -> list[PolicySeen]:
    """The policy versions of the events ``user`` may see, newest use first."""
    c = EVENTS.c
    query = select(
        c.policy_digest,
        c.policy_name,
        c.policy_version,
        func.count(),
        func.min(c.created_at),
        func.max(c.created_at),
    ).group_by(c.policy_digest, c.policy_name, c.policy_version)
    if user.tenant is not None:
        query = query.where(c.tenant == user.tenant)
    with engine.connect() as conn:
        rows = list(conn.execute(query))

    def aware(value: Any) -> datetime:
        # min()/max() lose the column type on SQLite: read the stored text back as UTC
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        parsed = datetime.fromisoformat(str(value))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    seen = [
        PolicySeen(str(d), str(n), str(v), int(k), aware(lo), aware(hi))
        for d, n, v, k, lo, hi in rows
    ]
    return sorted(seen, key=lambda p: p.last_event, reverse=True)


def policy_text_for(engine: Engine, digest: str, user: ConsoleUser) -> tuple[str, str, str] | None:
    """``(name, version, text)`` of a stored policy the user has seen events of, or None."""
    if user.tenant is not None:
        visible = select(EVENTS.c.event_id).where(
            EVENTS.c.policy_digest == digest, EVENTS.c.tenant == user.tenant
        )
        with engine.connect() as conn:
            if conn.execute(visible.limit(1)).first() is None:
                return None
    with engine.connect() as conn:
        row = conn.execute(
            select(POLICIES.c.name, POLICIES.c.version, POLICIES.c.text).where(
                POLICIES.c.digest == digest
            )
        ).first()
    return None if row is None else (str(row.name), str(row.version), str(row.text))
