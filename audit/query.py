"""Queries behind the audit CLI: filtered, paged event lookups and aggregate counts.

Every filter maps to an indexed column (``created_at`` plus tenant, user, model, action or
policy digest), except ``rule_id`` (a JSON containment test on the findings) and ``text``
(a case-insensitive substring of prompt or output), which narrow what the time range and
the indexed filters already selected.

A stream is stored as two events sharing a ``request_id`` (``phase`` ``open`` then
``close``). `listed_calls` folds each such pair into one `ListedCall` for display, and marks
an ``open`` with no ``close`` as ``unclosed`` (its process died mid-stream, or the stream is
still running); `unclosed_streams` lists those.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    and_,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB

from audit.exceptions import AuditConfigError
from audit.migrate import require_schema
from audit.schema import EVENTS
from audit.store import StoredEvent, stored_event_from_row

__all__ = [
    "STAGES",
    "Counts",
    "EventFilter",
    "ListedCall",
    "count_by",
    "find_event",
    "iter_events",
    "listed_calls",
    "require_schema",
    "select_events",
    "unclosed_streams",
]

STAGES = ("input", "output")
_PHASES = ("call", "open", "close")


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    """Which events to select; every field given must match (None: no constraint).

    ``stage`` keeps events whose ``input_action`` (``input``) or ``output_action``
    (``output``) equals ``action`` when both are given, else events with a finding of
    that stage. ``text`` is a case-insensitive substring of the prompt or the output.
    """

    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None
    user: str | None = None
    model: str | None = None
    stage: str | None = None
    action: str | None = None
    rule_id: str | None = None
    policy_digest: str | None = None
    text: str | None = None
    chain_id: str | None = None
    phase: str | None = None
    unclosed: bool = False
    """Only stream openings that have no closing event (crashed or still running)."""

    def __post_init__(self) -> None:
        """Reject what cannot match anything sensible, naming the field.

        Raises:
            AuditConfigError: naive datetimes, an empty range, or an unknown stage.
        """
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise AuditConfigError(f"{name}: {value!r} has no timezone")
        if self.since and self.until and self.since >= self.until:
            raise AuditConfigError(f"since ({self.since}) is not before until ({self.until})")
        if self.stage is not None and self.stage not in STAGES:
            raise AuditConfigError(f"stage: {self.stage!r} is not one of {', '.join(STAGES)}")
        if self.phase is not None and self.phase not in _PHASES:
            raise AuditConfigError(f"phase: {self.phase!r} is not one of {', '.join(_PHASES)}")


def _has_finding(dialect: str, key: str, value: str) -> ColumnElement[bool]:
    """The findings JSON array holds an object with ``key == value``."""
    if dialect == "postgresql":
        return cast(EVENTS.c.findings, JSONB).contains([{key: value}])
    each = func.json_each(EVENTS.c.findings).table_valued("value").alias("finding")
    return exists(
        select(literal(1))
        .select_from(each)
        .where(func.json_extract(each.c.value, f"$.{key}") == value)
    )


def _unclosed() -> ColumnElement[bool]:
    """An ``open`` event with no ``close`` event of the same request."""
    closing = EVENTS.alias("closing")
    return and_(
        EVENTS.c.phase == "open",
        ~exists(
            select(literal(1))
            .select_from(closing)
            .where(closing.c.request_id == EVENTS.c.request_id, closing.c.phase == "close")
        ),
    )


def _conditions(where: EventFilter, dialect: str) -> list[ColumnElement[bool]]:
    c = EVENTS.c
    out: list[ColumnElement[bool]] = []
    if where.since is not None:
        out.append(c.created_at >= where.since)
    if where.until is not None:
        out.append(c.created_at < where.until)
    if where.unclosed:
        out.append(_unclosed())
    for name in ("tenant", "user", "model", "policy_digest", "chain_id", "phase"):
        value = getattr(where, name)
        if value is not None:
            out.append(c[name] == value)
    if where.stage is not None:
        column = c.input_action if where.stage == "input" else c.output_action
        if where.action is not None:
            out.append(column == where.action)
        else:
            out.append(_has_finding(dialect, "stage", where.stage))
    elif where.action is not None:
        out.append(c.action == where.action)
    if where.rule_id is not None:
        out.append(_has_finding(dialect, "rule_id", where.rule_id))
    if where.text is not None:
        pattern = "%" + where.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern += "%"
        out.append(
            or_(
                c.prompt.ilike(pattern, escape="\\"),
                c.output.ilike(pattern, escape="\\"),
            )
        )
    return out


def select_events(
    where: EventFilter,
    *,
    dialect: str,
    limit: int | None = 50,
    offset: int = 0,
    newest_first: bool = True,
) -> Select[Any]:
    """The SELECT for ``where``, ordered by time (then chain position) and paged."""
    query = select(EVENTS).where(and_(true(), *_conditions(where, dialect)))
    order = (EVENTS.c.created_at, EVENTS.c.chain_id, EVENTS.c.seq)
    query = query.order_by(*(col.desc() for col in order) if newest_first else order)
    if limit is not None:
        query = query.limit(limit)
    return query.offset(offset) if offset else query


def iter_events(
    conn: Connection,
    where: EventFilter,
    *,
    limit: int | None = 50,
    offset: int = 0,
    newest_first: bool = True,
) -> Iterator[StoredEvent]:
    """Stream the events matching ``where`` (server-side batches on PostgreSQL).

    Raises:
        AuditConfigError: the database has no audit schema at the current revision.
    """
    require_schema(conn)
    query = select_events(
        where, dialect=conn.dialect.name, limit=limit, offset=offset, newest_first=newest_first
    )
    for row in conn.execution_options(yield_per=1000).execute(query):
        yield stored_event_from_row(row)


def find_event(engine: Engine, event_id: str) -> StoredEvent | None:
    """The event with this id, or None.

    Raises:
        AuditConfigError: the database has no audit schema at the current revision.
    """
    with engine.connect() as conn:
        require_schema(conn)
        row = conn.execute(select(EVENTS).where(EVENTS.c.event_id == event_id)).first()
    return None if row is None else stored_event_from_row(row)


@dataclass(frozen=True, slots=True)
class Counts:
    """Aggregate counts over the events a filter selects."""

    total: int
    by_action: dict[str, int]
    by_rule: dict[str, int]
    by_day: dict[str, int]


def count_by(conn: Connection, where: EventFilter) -> Counts:
    """Counts by final action and by UTC day (in SQL), and by rule id (over the findings).

    Raises:
        AuditConfigError: the database has no audit schema at the current revision.
    """
    require_schema(conn)
    conditions = and_(true(), *_conditions(where, conn.dialect.name))
    by_action = {
        str(action): int(n)
        for action, n in conn.execute(
            select(EVENTS.c.action, func.count()).where(conditions).group_by(EVENTS.c.action)
        )
    }
    if conn.dialect.name == "postgresql":
        day = func.to_char(func.timezone("UTC", EVENTS.c.created_at), "YYYY-MM-DD")
    else:
        day = func.substr(EVENTS.c.created_at, 1, 10)
    by_day = {
        str(d): int(n)
        for d, n in conn.execute(
            select(day.label("day"), func.count()).where(conditions).group_by(day).order_by(day)
        )
    }
    rules: Counter[str] = Counter()
    for findings in (
        conn.execution_options(yield_per=5000)
        .execute(select(EVENTS.c.findings).where(conditions))
        .scalars()
    ):
        for finding in findings or ():
            if isinstance(finding, dict) and finding.get("rule_id"):
                rules[str(finding["rule_id"])] += 1
    return Counts(sum(by_action.values()), by_action, dict(rules.most_common()), by_day)


def unclosed_streams(conn: Connection, where: EventFilter | None = None) -> list[StoredEvent]:
    """Stream openings with no closing event, oldest first (crashed mid-stream, or running).

    Raises:
        AuditConfigError: the database has no audit schema at the current revision.
    """
    chosen = dataclasses.replace(where or EventFilter(), unclosed=True)
    return list(iter_events(conn, chosen, limit=None, newest_first=False))


@dataclass(frozen=True, slots=True)
class ListedCall:
    """One call as a listing shows it: a plain call, or a stream's two halves folded.

    ``status`` is ``call``; for a stream, its ``stream_end`` (``complete``, ``blocked``,
    ``client_closed``, ``error``) when closed, ``unclosed`` when the opening has no closing
    event. ``event`` is the closing (or the lone opening); ``opening`` is the stream's
    ``open`` event when the listing holds it.
    """

    event: StoredEvent
    opening: StoredEvent | None
    status: str

    @property
    def prompt(self) -> str | None:
        """The prompt as stored (a stream records it on its opening)."""
        return self.opening.prompt if self.opening is not None else self.event.prompt


def listed_calls(
    conn: Connection, events: Sequence[StoredEvent] | Iterable[StoredEvent]
) -> list[ListedCall]:
    """Fold the stream halves in ``events`` into one `ListedCall` each, keeping their order
    (a stream sits where its first listed half was); look up whether each opening listed
    without its closing has one in the store.
    """
    listed = list(events)
    opens = {e.request_id: e for e in listed if e.phase == "open"}
    closes = {e.request_id: e for e in listed if e.phase == "close"}
    lone_opens = [rid for rid in opens if rid not in closes]
    closed_elsewhere: dict[str, StoredEvent] = {}
    if lone_opens:
        for i in range(0, len(lone_opens), 500):
            chunk = lone_opens[i : i + 500]
            rows = conn.execute(
                select(EVENTS).where(EVENTS.c.phase == "close", EVENTS.c.request_id.in_(chunk))
            )
            for row in rows:
                closed_elsewhere[row.request_id] = stored_event_from_row(row)
    out: list[ListedCall] = []
    done: set[str] = set()
    for e in listed:
        if e.phase == "call":
            out.append(ListedCall(e, None, "call"))
            continue
        if e.request_id in done:
            continue
        done.add(e.request_id)
        opening = opens.get(e.request_id)
        closing = closes.get(e.request_id) or closed_elsewhere.get(e.request_id)
        if closing is None:
            out.append(ListedCall(e, opening, "unclosed"))
        else:
            out.append(ListedCall(closing, opening, closing.stream_end or "close"))
    return out
