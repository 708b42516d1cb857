"""The audit event filter options, defined once for every command that selects events.

``@with_event_filter`` adds ``--since --until --all --tenant --user --model --stage
--action --rule --policy-digest --contains`` to a command and hands it one
`audit.EventFilter` as its ``where`` argument (last 24 hours unless ``--since`` or
``--all``). Bad values exit 2 naming the option.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from audit import AuditError, EventFilter, parse_age
from guardrails.cli.common import fail

__all__ = [
    "FILTER_OPTIONS",
    "parse_when",
    "typing_hints",
    "with_event_filter",
]

F = TypeVar("F", bound=Callable[..., Any])

FILTER_OPTIONS: dict[str, tuple[Any, Any]] = {
    "since": (
        Annotated[
            str | None, typer.Option("--since", help="ISO time or age (24h, 7d); default 24h.")
        ],
        None,
    ),
    "until": (Annotated[str | None, typer.Option("--until", help="ISO time or age.")], None),
    "all_time": (Annotated[bool, typer.Option("--all", help="No default time range.")], False),
    "tenant": (Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")], None),
    "user": (Annotated[str | None, typer.Option("--user", help="Only this user.")], None),
    "model": (Annotated[str | None, typer.Option("--model", help="Only this model.")], None),
    "stage": (Annotated[str | None, typer.Option("--stage", help="input or output.")], None),
    "action": (
        Annotated[str | None, typer.Option("--action", help="allow, flag, redact, block...")],
        None,
    ),
    "rule": (
        Annotated[str | None, typer.Option("--rule", help="Events with a finding of this rule.")],
        None,
    ),
    "policy_digest": (
        Annotated[str | None, typer.Option("--policy-digest", help="Only this policy version.")],
        None,
    ),
    "contains": (
        Annotated[
            str | None, typer.Option("--contains", help="Text in prompt or output (any case).")
        ],
        None,
    ),
}
"""Parameter name -> (annotation, default) of each filter option, in help order."""


def parse_when(text: str | None, name: str) -> datetime | None:
    """An ISO time (naive means UTC) or an age like 24h (that long ago); exit 2 otherwise."""
    if text is None:
        return None
    try:
        return datetime.now(UTC) - parse_age(text)
    except AuditError:
        pass
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(
            f"{name} {escape(repr(text))}: expected an ISO time (2026-01-31, "
            "2026-01-31T12:00Z) or an age (30m, 24h, 7d)"
        )
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _event_filter(values: dict[str, Any]) -> EventFilter:
    start = parse_when(values["since"], "--since")
    if start is None and not values["all_time"]:
        start = datetime.now(UTC) - timedelta(hours=24)
    try:
        return EventFilter(
            since=start,
            until=parse_when(values["until"], "--until"),
            tenant=values["tenant"],
            user=values["user"],
            model=values["model"],
            stage=values["stage"],
            action=values["action"],
            rule_id=values["rule"],
            policy_digest=values["policy_digest"],
            text=values["contains"],
        )
    except AuditError as exc:
        fail(escape(str(exc)))


def with_event_filter(command: F) -> F:
    """Give ``command`` (which takes ``where: EventFilter``) the filter options instead."""
    signature = inspect.signature(command)
    hints = typing_hints(command)
    kept = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
        for p in signature.parameters.values()
        if p.name != "where"
    ]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint)
        for name, (hint, default) in FILTER_OPTIONS.items()
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in FILTER_OPTIONS}
        return command(*args, where=_event_filter(values), **kwargs)

    hints.pop("where", None)
    wrapper.__annotations__ = {**hints, **{n: h for n, (h, _) in FILTER_OPTIONS.items()}}
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*kept, *added]
    )
    del wrapper.__wrapped__  # typer must see the new signature, not the command's
    return wrapper  # type: ignore[return-value]


def typing_hints(command: Callable[..., Any]) -> dict[str, Any]:
    """``command``'s resolved annotations (with their ``Annotated`` metadata)."""
    import typing

    return dict(typing.get_type_hints(command, include_extras=True))
