"""Queries behind the audit CLI: filtered, paged event lookups and aggregate counts.

Every filter maps to an indexed column (``created_at`` plus tenant, user, model, action or
policy digest), except ``rule_id`` (a JSON containment test on the findings) and ``text``
(a case-insensitive substring of prompt or output), which narrow what the time range and
the indexed filters already selected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
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
from audit.schema import EVENTS
from audit.store import StoredEvent, stored_event_from_row

__all__ = ["Counts", "EventFilter", "count_by", "find_event", "iter_events", "select_events"]

STAGES = ("input", "output")


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


def _conditions(where: EventFilter, dialect: str) -> list[ColumnElement[bool]]:
    c = EVENTS.c
    out: list[ColumnElement[bool]] = []
    if where.since is not None:
        out.append(c.created_at >= where.since)
    if where.until is not None:
        out.append(c.created_at < where.until)
    for name in ("tenant", "user", "model", "policy_digest", "chain_id"):
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
    """Stream the events matching ``where`` (server-side batches on PostgreSQL)."""
    query = select_events(
        where, dialect=conn.dialect.name, limit=limit, offset=offset, newest_first=newest_first
    )
    for row in conn.execution_options(yield_per=1000).execute(query):
        yield stored_event_from_row(row)


def find_event(engine: Engine, event_id: str) -> StoredEvent | None:
    """The event with this id, or None."""
    with engine.connect() as conn:
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
    """Counts by final action and by UTC day (in SQL), and by rule id (over the findings)."""
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
