"""The ``guardrails db`` commands (audit schema migrations) and the ``guardrails audit`` ones.

The audit URL comes from ``--audit``, else ``$GUARDRAILS_AUDIT_URL``, else the local
``guardrails-audit.db``. Exit codes scripts can rely on: 0 done; 1 the log or a proof failed
verification (the first bad row or the reason is named); 2 bad input or an audit failure
(bad filter, unknown event id, bad URL, unreachable store), always as a one-line message.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select

from audit import (
    AuditError,
    AuditStore,
    Checkpoint,
    EventFilter,
    StoredEvent,
    VerifyReport,
    check_proof_document,
    consistency_between,
    create_checkpoints,
    current_revision,
    default_audit_url,
    downgrade,
    generate_signing_key,
    inclusion_proof_for,
    load_public_key,
    load_signing_key,
    parse_age,
    purge_bodies,
    upgrade,
    verify_chain,
)
from audit.checkpoint import chain_leaves, load_checkpoints
from audit.engine import create_audit_engine, safe_url
from audit.merkle import inclusion_proof
from audit.published import publish_checkpoints
from audit.query import ListedCall, count_by, find_event, iter_events, listed_calls
from audit.schema import EVENTS
from guardrails.cli.app import audit_app, db_app
from guardrails.cli.common import AuditOption, JsonOption, err, fail, out, progress_bar
from guardrails.cli.event_filter import with_event_filter

AUDIT_URL_ENV = "GUARDRAILS_AUDIT_URL"
HmacKeyEnvOption = Annotated[
    str | None,
    typer.Option(
        "--hmac-key-env",
        metavar="NAME",
        help="Environment variable holding the HMAC key the chains were written with.",
    ),
]


PublicKeyOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--public-key",
        metavar="PEM",
        help="Trusted checkpoint signer (Ed25519 public key PEM); repeatable.",
    ),
]
FormatOption = Annotated[str, typer.Option("--format", help="Output: table, json, jsonl or csv.")]
FORMATS = ("table", "json", "jsonl", "csv")


def _event_count(url: str) -> int | None:
    """How many events the log holds (for a progress bar); None when it cannot tell."""
    if not err.is_terminal:
        return None
    try:
        engine = create_audit_engine(url, must_exist=True)
    except AuditError:
        return None
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(EVENTS)).scalar() or 0)
    except Exception:  # the real command reports the store's problem
        return None
    finally:
        engine.dispose()


def _group_audit(ctx: typer.Context, audit: AuditOption = None) -> None:
    """``--audit`` given once on the group (``guardrails audit --audit URL query``) is every
    command's default; a command's own ``--audit`` still wins."""
    if audit is None:
        return
    before = os.environ.get(AUDIT_URL_ENV)
    os.environ[AUDIT_URL_ENV] = audit

    def restore() -> None:
        if before is None:
            os.environ.pop(AUDIT_URL_ENV, None)
        else:
            os.environ[AUDIT_URL_ENV] = before

    ctx.call_on_close(restore)


audit_app.callback()(_group_audit)
db_app.callback()(_group_audit)


def _public_keys(paths: list[Path] | None) -> list[Ed25519PublicKey]:
    return [load_public_key(path) for path in paths or ()]


def _url(audit: str | None) -> str:
    return audit or default_audit_url()


def _audit_failed(exc: AuditError) -> NoReturn:
    fail(escape(str(exc)))


@db_app.command("upgrade")
def db_upgrade(
    audit: AuditOption = None,
    revision: Annotated[str, typer.Option("--revision", help="Target revision.")] = "head",
) -> None:
    """Create or migrate the audit schema (to the latest revision by default)."""
    url = _url(audit)
    try:
        upgrade(url, revision)
        now = current_revision(url)
    except AuditError as exc:
        _audit_failed(exc)
    out.print(f"audit schema at {escape(safe_url(url))} is at revision {now}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[
        str, typer.Option("--revision", help="Target revision; 'base' drops every audit table.")
    ],
    audit: AuditOption = None,
) -> None:
    """Migrate the audit schema down to REVISION (data in dropped tables is lost)."""
    url = _url(audit)
    try:
        downgrade(url, revision)
        now = current_revision(url)
    except AuditError as exc:
        _audit_failed(exc)
    out.print(f"audit schema at {escape(safe_url(url))} is at revision {now or 'base (empty)'}")


@db_app.command("current")
def db_current(audit: AuditOption = None, json_output: JsonOption = False) -> None:
    """Print the audit schema revision ('none' if never migrated)."""
    try:
        revision = current_revision(_url(audit))
    except AuditError as exc:
        _audit_failed(exc)
    if json_output:
        typer.echo(json.dumps({"url": safe_url(_url(audit)), "revision": revision}))
        return
    out.print(revision or "none")


def _report_json(url: str, report: VerifyReport) -> str:
    return json.dumps(
        {
            "url": safe_url(url),
            "ok": report.ok,
            "events_checked": report.events_checked,
            "chains_checked": report.chains_checked,
            "checkpoints_checked": report.checkpoints_checked,
            "published_checked": report.published_checked,
            "problems": [asdict(problem) for problem in report.problems],
            "unclosed": [asdict(u) for u in report.unclosed],
        },
        indent=2,
    )


def _print_unclosed(report: VerifyReport) -> None:
    if report.unclosed:
        out.print(
            f"[bold yellow]{len(report.unclosed)} unclosed stream(s)[/] "
            "(opened, never closed: crashed mid-stream or still running)"
        )
        for u in report.unclosed[:20]:
            out.print(
                f"  unclosed: request {escape(u.request_id)} (event {u.event_id}, "
                f"chain {u.chain_id} seq {u.seq})"
            )


def _print_report(url: str, report: VerifyReport) -> None:
    _print_unclosed(report)
    where = escape(safe_url(url))
    counts = f"{report.events_checked} events in {report.chains_checked} chains"
    first = report.first_problem
    if first is None:
        if report.checkpoints_checked:
            counts += f", {report.checkpoints_checked} signed checkpoints"
        if report.published_checked:
            counts += f", {report.published_checked} published checkpoints"
        out.print(f"[bold green]intact:[/] {counts} verified ({where})")
        return
    row = f"event {first.event_id}" if first.event_id else "a missing row"
    out.print(f"[bold red]TAMPERED:[/] {counts} checked ({where})")
    out.print(
        f"first bad row: chain {first.chain_id} seq {first.seq} ({escape(row)}): "
        f"{escape(first.reason)}"
    )
    for problem in report.problems[1:]:
        out.print(f"  also: chain {problem.chain_id} seq {problem.seq}: {escape(problem.reason)}")


@audit_app.command("verify")
def audit_verify(
    audit: AuditOption = None,
    hmac_key_env: HmacKeyEnvOption = None,
    public_key: PublicKeyOption = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            metavar="DIR",
            help="Folder of checkpoints published by `audit checkpoint --publish`: the "
            "database must still extend every one (consistency proofs).",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Check every hash chain and signed checkpoint: exit 0 if intact, 1 naming the first
    bad row, 2 on errors."""
    key: bytes | None = None
    if hmac_key_env is not None:
        value = os.environ.get(hmac_key_env)
        if not value:
            fail(f"--hmac-key-env {escape(hmac_key_env)}: that environment variable is not set")
        key = value.encode()
    url = _url(audit)
    try:
        trusted = _public_keys(public_key)
        with progress_bar("verifying", _event_count(url)) as advance:
            report = verify_chain(
                url, hmac_key=key, public_keys=trusted, published=checkpoints, progress=advance
            )
    except AuditError as exc:
        _audit_failed(exc)
    if json_output:
        typer.echo(_report_json(url, report))
    else:
        _print_report(url, report)
    if not report.ok:
        raise typer.Exit(1)


# --- keys, checkpoints and proofs -------------------------------------------------------


@audit_app.command("keygen")
def audit_keygen(
    out_path: Annotated[Path, typer.Argument(metavar="KEY", help="Private key file to create.")],
) -> None:
    """Create an Ed25519 checkpoint signing key (KEY, mode 0600) and KEY.pub."""
    try:
        public = generate_signing_key(out_path)
    except AuditError as exc:
        _audit_failed(exc)
    out.print(f"signing key {escape(str(out_path))}, public key {escape(str(public))}")


@audit_app.command("checkpoint")
def audit_checkpoint(
    key: Annotated[Path, typer.Option("--key", metavar="PEM", help="Ed25519 signing key.")],
    audit: AuditOption = None,
    publish: Annotated[
        Path | None,
        typer.Option(
            "--publish",
            metavar="DIR",
            help="Also append each new checkpoint to DIR as a C2SP signed note (put DIR "
            "where the database's owner cannot rewrite it).",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Sign a checkpoint (tree size, Merkle root, time) of every chain that grew.

    Run it periodically (cron, a systemd timer) and publish the output somewhere the
    database's owner cannot rewrite.
    """
    try:
        signing_key = load_signing_key(key)
        made = create_checkpoints(_url(audit), signing_key)
        if publish is not None:
            publish_checkpoints(made, publish, signing_key)
    except AuditError as exc:
        _audit_failed(exc)
    if json_output:
        typer.echo(json.dumps([c.to_dict() for c in made], indent=2))
        return
    for c in made:
        out.print(f"chain {c.chain_id} size {c.tree_size} root {c.root_hash}")
    out.print(f"{len(made)} checkpoint(s) signed with key {made[0].key_id if made else '-'}")


@audit_app.command("prove")
def audit_prove(
    event_id: Annotated[str, typer.Argument(help="The event to prove.")],
    audit: AuditOption = None,
    tree_size: Annotated[
        int | None, typer.Option("--tree-size", help="Prove against this checkpoint size.")
    ] = None,
) -> None:
    """Print an inclusion proof (JSON) that `audit check-proof` verifies without the DB."""
    try:
        doc = inclusion_proof_for(_url(audit), event_id, tree_size=tree_size)
    except LookupError as exc:
        fail(escape(str(exc.args[0])))
    except AuditError as exc:
        _audit_failed(exc)
    typer.echo(json.dumps(doc, indent=2))


@audit_app.command("check-proof")
def audit_check_proof(
    proof_file: Annotated[Path, typer.Argument(metavar="FILE", help="Proof JSON ('-': stdin).")],
    public_key: PublicKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check an inclusion proof offline: exit 0 if it holds, 1 if not."""
    try:
        raw = sys.stdin.read() if str(proof_file) == "-" else proof_file.read_text()
        doc = json.loads(raw)
    except (OSError, ValueError) as exc:
        fail(f"cannot read proof {escape(str(proof_file))}: {escape(str(exc))}")
    if not isinstance(doc, dict):
        fail("a proof document is a JSON object")
    try:
        trusted = _public_keys(public_key)
    except AuditError as exc:
        _audit_failed(exc)
    ok, reason = check_proof_document(doc, trusted)
    if json_output:
        typer.echo(json.dumps({"valid": ok, "reason": reason, "trusted_key": bool(trusted)}))
        raise typer.Exit(0 if ok else 1)
    if not ok:
        out.print(f"[bold red]INVALID:[/] {escape(reason)}")
        raise typer.Exit(1)
    trust = "trusted key" if trusted else "the key in the checkpoint (pass --public-key to pin)"
    out.print(f"[bold green]valid:[/] {escape(reason)}; signature checked with {trust}")


@audit_app.command("consistency")
def audit_consistency(
    chain_id: Annotated[str, typer.Argument(help="The chain.")],
    old_size: Annotated[int, typer.Argument(help="Earlier checkpoint's tree size.")],
    new_size: Annotated[int, typer.Argument(help="Later checkpoint's tree size.")],
    audit: AuditOption = None,
) -> None:
    """Print a consistency proof that the later checkpoint extends the earlier one."""
    try:
        doc = consistency_between(_url(audit), chain_id, old_size, new_size)
    except LookupError as exc:
        fail(escape(str(exc.args[0])))
    except AuditError as exc:
        err.print(f"[bold red]INCONSISTENT:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    typer.echo(json.dumps(doc, indent=2))


# --- queries ------------------------------------------------------------------------------


def event_dict(event: StoredEvent) -> dict[str, Any]:
    """An event as JSON-ready data."""
    return event.to_document()


def _emit(events: Iterable[StoredEvent], fmt: str, calls: list[ListedCall] | None = None) -> int:
    count = 0
    if fmt == "jsonl":
        for event in events:
            typer.echo(json.dumps(event_dict(event), ensure_ascii=False))
            count += 1
    elif fmt == "json":
        docs = [event_dict(e) for e in events]
        typer.echo(json.dumps(docs, ensure_ascii=False, indent=2))
        count = len(docs)
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(StoredEvent.CSV_COLUMNS)
        for e in events:
            writer.writerow(e.csv_row())
            count += 1
        typer.echo(buffer.getvalue(), nl=False)
    else:
        table = Table(
            "time (UTC)", "event", "call", "tenant", "user", "model", "action", "rules", "prompt"
        )
        # A stream's open and close show as one row; an open with no close as "unclosed".
        if calls is None:
            calls = [ListedCall(e, None, e.phase) for e in events]
        for call in calls:
            e = call.event
            prompt = (call.prompt or "").replace("\n", " ")
            kind = "call" if call.status == "call" else f"stream: {call.status}"
            table.add_row(
                e.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                e.event_id[:12],
                kind,
                e.tenant or "",
                e.user or "",
                e.model or "",
                e.action,
                e.rule_ids,
                Text(prompt[:60] + ("…" if len(prompt) > 60 else "")),
            )
            count += 1
        out.print(table)
    return count


def _engine(audit: str | None) -> Any:
    try:
        return create_audit_engine(_url(audit), must_exist=True)
    except AuditError as exc:
        _audit_failed(exc)


@audit_app.command("query")
@with_event_filter
def audit_query(
    where: EventFilter,
    audit: AuditOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Events per page.")] = 50,
    page: Annotated[int, typer.Option("--page", min=1, help="Page number.")] = 1,
    oldest_first: Annotated[bool, typer.Option("--oldest-first")] = False,
    fmt: FormatOption = "table",
    json_output: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """Find events (last 24 h, newest first, a page at a time)."""
    if json_output:
        if fmt not in ("table", "json"):
            fail(f"--json and --format {escape(fmt)} disagree: give one of them")
        fmt = "json"
    if fmt not in FORMATS:
        fail(f"--format {escape(fmt)!r}: choose one of {', '.join(FORMATS)}")
    engine = _engine(audit)
    try:
        with engine.connect() as conn:
            events = list(
                iter_events(
                    conn,
                    where,
                    limit=limit,
                    offset=(page - 1) * limit,
                    newest_first=not oldest_first,
                )
            )
            calls = listed_calls(conn, events) if fmt == "table" else None
    except AuditError as exc:  # e.g. a schema never upgraded: "run guardrails db upgrade"
        _audit_failed(exc)
    except Exception as exc:  # SQLAlchemy errors: unreachable store
        fail(f"querying {escape(safe_url(engine.url))} failed: {escape(str(exc).splitlines()[0])}")
    finally:
        engine.dispose()
    shown = _emit(events, fmt, calls)
    if fmt == "table":
        more = f"; --page {page + 1} for more" if shown == limit else ""
        err.print(f"{shown} event(s), page {page}{more}")


def _highlighted(text: str | None, spans: list[tuple[int, int, str]]) -> Text:
    rich_text = Text(text or "")
    for start, end, label in spans:
        if 0 <= start < end <= len(rich_text):
            rich_text.stylize("bold black on yellow", start, end)
            rich_text.stylize(f"link rule:{label}", start, end)
    return rich_text


def _spans(event: StoredEvent, stage: str) -> list[tuple[int, int, str]]:
    found = []
    for finding in event.findings:
        if finding.get("stage", "input") != stage:
            continue
        for span in finding.get("spans") or ():
            if isinstance(span, list | tuple) and len(span) == 2:
                found.append((int(span[0]), int(span[1]), str(finding.get("rule_id", ""))))
    return found


@audit_app.command("show")
def audit_show(
    event_id: Annotated[str, typer.Argument(help="Event id.")],
    audit: AuditOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one whole event, with the findings' spans highlighted in the text."""
    engine = _engine(audit)
    try:
        event = find_event(engine, event_id)
    except AuditError as exc:  # e.g. a schema never upgraded: "run guardrails db upgrade"
        _audit_failed(exc)
    except Exception as exc:  # SQLAlchemy errors: unreachable store
        fail(f"reading {escape(safe_url(engine.url))} failed: {escape(str(exc).splitlines()[0])}")
    finally:
        engine.dispose()
    if event is None:
        fail(f"no event with id {escape(repr(event_id))} in {escape(safe_url(_url(audit)))}")
    if json_output:
        typer.echo(json.dumps(event_dict(event), ensure_ascii=False, indent=2))
        return
    doc = event_dict(event)
    for name in ("prompt", "output", "findings", "metadata", "timings_ms"):
        doc.pop(name)
    for key, value in doc.items():
        if value not in (None, "", {}, []):
            out.print(f"[bold]{key}:[/] {escape(str(value))}")
    out.print("[bold]prompt:[/]")
    out.print(_highlighted(event.prompt, _spans(event, "input")))
    out.print("[bold]output:[/]")
    out.print(_highlighted(event.output, _spans(event, "output")))
    for finding in event.findings:
        out.print(f"[bold]finding:[/] {escape(json.dumps(finding, ensure_ascii=False))}")
    if event.metadata:
        out.print(f"[bold]metadata:[/] {escape(json.dumps(event.metadata, ensure_ascii=False))}")


def _bar(value: int, top: int, width: int = 40) -> str:
    return "█" * max(1, round(width * value / top)) if top and value else ""


@audit_app.command("stats")
@with_event_filter
def audit_stats(
    where: EventFilter,
    audit: AuditOption = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", metavar="FILE.png", help="Also draw a chart.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Counts by action, rule and day, with a terminal chart."""
    engine = _engine(audit)
    try:
        with engine.connect() as conn:
            counts = count_by(conn, where)
    except AuditError as exc:  # e.g. a schema never upgraded: "run guardrails db upgrade"
        _audit_failed(exc)
    except Exception as exc:  # SQLAlchemy errors: unreachable store
        fail(f"querying {escape(safe_url(engine.url))} failed: {escape(str(exc).splitlines()[0])}")
    finally:
        engine.dispose()
    if json_output:
        typer.echo(json.dumps(asdict(counts), indent=2))
    else:
        out.print(f"[bold]{counts.total} events[/]")
        for title, group in (
            ("by action", counts.by_action),
            ("by rule", counts.by_rule),
            ("by day", counts.by_day),
        ):
            out.print(f"[bold]{title}[/]")
            top = max(group.values(), default=0)
            for name, n in group.items():
                out.print(f"  {escape(name):<24} {n:>8}  {_bar(n, top)}")
    if plot is not None:
        _plot(where, audit, plot)


def _plot(where: EventFilter, audit: str | None, path: Path) -> None:
    """Events per hour (a range of two days or less) or per day stacked by action, beside
    the top rules: the series of the console's charts page, drawn with matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("--plot needs matplotlib (pip install matplotlib)")
    from guardrails.console.charts import ACTION_COLORS
    from guardrails.console.data import FilterForm, chart_data

    engine = _engine(audit)
    try:
        data = chart_data(engine, FilterForm(values={}, where=where))
    finally:
        engine.dispose()
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]}
    )
    bottom = [0] * len(data.buckets)
    for action, counts in data.by_action.items():
        left.bar(
            range(len(counts)), counts, bottom=bottom, label=action, color=ACTION_COLORS.get(action)
        )
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    step = max(1, len(data.buckets) // 12)
    left.set_xticks(range(0, len(data.buckets), step))
    left.set_xticklabels(data.buckets[::step], rotation=45, ha="right", fontsize=8)
    left.set_title(f"events per {data.bucket} (UTC), by action")
    if data.by_action:
        left.legend(fontsize=8)
    rules = data.top_rules[::-1]
    right.barh([r for r, _ in rules], [n for _, n in rules])
    right.set_title("top rules (findings)")
    right.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    try:
        figure.savefig(path)
    except OSError as exc:
        fail(f"cannot write {escape(str(path))}: {escape(str(exc))}")
    finally:
        plt.close(figure)
    err.print(f"chart written to {escape(str(path))}")


@audit_app.command("tail")
def audit_tail(
    audit: AuditOption = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
    lines: Annotated[int, typer.Option("-n", min=0, help="Recent events to show first.")] = 10,
    interval: Annotated[float, typer.Option("--interval", min=0.05, help="Poll seconds.")] = 1.0,
    max_events: Annotated[
        int | None, typer.Option("--max-events", min=1, help="Stop after this many.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or line.")] = "line",
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per line (--format jsonl).")
    ] = False,
) -> None:
    """Print the latest events; with -f, follow new ones as they are committed."""
    if json_output:
        fmt = "jsonl"
    if fmt not in ("jsonl", "line"):
        fail(f"--format {escape(fmt)!r}: choose jsonl or line")
    engine = _engine(audit)
    printed = 0
    seen: set[str] = set()
    since: datetime | None = None

    def show(event: StoredEvent) -> None:
        if fmt == "jsonl":
            typer.echo(json.dumps(event_dict(event), ensure_ascii=False))
        else:
            stamp = event.created_at.astimezone(UTC).isoformat(timespec="milliseconds")
            typer.echo(
                f"{stamp} {event.event_id} {event.tenant or '-'} {event.user or '-'} "
                f"{event.action} {event.rule_ids or '-'}"
            )

    try:
        with engine.connect() as conn:
            recent = list(iter_events(conn, EventFilter(), limit=lines))[::-1]
        for event in recent:
            if max_events is not None and printed >= max_events:
                return
            show(event)
            printed += 1
            seen.add(event.event_id)
        since = recent[-1].created_at if recent else None
        while follow and (max_events is None or printed < max_events):
            time.sleep(interval)
            # Events commit in batches whose created_at may predate the newest one shown:
            # look back a little and skip what was already printed.
            window = EventFilter(since=since - timedelta(seconds=30) if since else None)
            with engine.connect() as conn:
                new = [
                    e
                    for e in iter_events(conn, window, limit=None, newest_first=False)
                    if e.event_id not in seen
                ]
            for event in new:
                show(event)
                printed += 1
                seen.add(event.event_id)
                since = max(since, event.created_at) if since else event.created_at
                if max_events is not None and printed >= max_events:
                    return
    except KeyboardInterrupt:
        return
    except AuditError as exc:  # e.g. a schema never upgraded: "run guardrails db upgrade"
        _audit_failed(exc)
    except Exception as exc:  # SQLAlchemy errors: unreachable store
        fail(f"reading {escape(safe_url(engine.url))} failed: {escape(str(exc).splitlines()[0])}")
    finally:
        engine.dispose()


@audit_app.command("export")
@with_event_filter
def audit_export(
    where: EventFilter,
    audit: AuditOption = None,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="File to write (default stdout).")
    ] = None,
) -> None:
    """Export events as JSONL, each with an inclusion proof against the latest signed
    checkpoint of its chain that covers it (``proof: null`` where none does yet)."""
    engine = _engine(audit)
    lines: list[str] = []
    try:
        with engine.connect() as conn:
            events = list(iter_events(conn, where, limit=None, newest_first=False))
            latest: dict[str, Checkpoint] = {}
            for signed in load_checkpoints(conn):
                latest[signed.chain_id] = signed  # ordered by size: the last is the largest
            leaves = {
                chain: chain_leaves(conn, chain, latest[chain].tree_size)
                for chain in {e.chain_id for e in events}
                if chain in latest
            }
    except AuditError as exc:  # e.g. a schema never upgraded: "run guardrails db upgrade"
        _audit_failed(exc)
    except Exception as exc:  # SQLAlchemy errors: unreachable store
        fail(f"reading {escape(safe_url(engine.url))} failed: {escape(str(exc).splitlines()[0])}")
    finally:
        engine.dispose()
    with progress_bar("exporting (proofs)", len(events)) as advance:
        for event in events:
            doc = event_dict(event)
            checkpoint = latest.get(event.chain_id)
            if checkpoint is not None and event.seq <= checkpoint.tree_size:
                path = inclusion_proof(event.seq - 1, leaves[event.chain_id])
                doc["proof"] = {
                    "leaf_index": event.seq - 1,
                    "tree_size": checkpoint.tree_size,
                    "proof": [p.hex() for p in path],
                    "checkpoint": checkpoint.to_dict(),
                }
            else:
                doc["proof"] = None
            lines.append(json.dumps(doc, ensure_ascii=False))
            advance(1)
    text = "".join(line + "\n" for line in lines)
    if output is None:
        typer.echo(text, nl=False)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {escape(str(output))}: {escape(str(exc))}")
        err.print(f"{len(lines)} event(s) written to {escape(str(output))}")


# --- retention and spill ----------------------------------------------------------------


@audit_app.command("purge")
def audit_purge(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age like 180d: bodies of older events go.")
    ],
    audit: AuditOption = None,
    hmac_key_env: HmacKeyEnvOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove old event bodies, keeping hashes and links so the log still verifies (give the
    chains' HMAC key: the purge record is authenticated with it)."""
    try:
        age = parse_age(older_than)
    except AuditError as exc:
        _audit_failed(exc)
    if not yes and not typer.confirm(f"Remove the bodies of events older than {older_than}?"):
        raise typer.Exit(1)
    try:
        key = os.environ.get(hmac_key_env, "").encode() or None if hmac_key_env else None
        if hmac_key_env and key is None:
            fail(f"--hmac-key-env {escape(hmac_key_env)}: that environment variable is not set")
        result = purge_bodies(_url(audit), older_than=age, hmac_key=key)
    except AuditError as exc:
        _audit_failed(exc)
    out.print(
        f"purged the bodies of {result.events_purged} event(s) created before "
        f"{result.cutoff.isoformat()} in {len(result.chains)} chain(s); recorded"
    )


@audit_app.command("replay-spill")
def audit_replay_spill(
    spill_dir: Annotated[Path, typer.Argument(help="The writers' spill folder.")],
    audit: AuditOption = None,
) -> None:
    """Replay spill files left by writers that stopped during an outage (exactly once)."""
    if not spill_dir.is_dir():
        fail(f"no spill folder at {escape(str(spill_dir))}")
    try:
        with AuditStore(_url(audit), spill_dir=spill_dir) as store:
            count = store.replay_spills()
    except AuditError as exc:
        _audit_failed(exc)
    out.print(f"replayed {count} spilled event(s)")


__all__ = [
    "AUDIT_URL_ENV",
    "FORMATS",
    "FormatOption",
    "HmacKeyEnvOption",
    "PublicKeyOption",
    "audit_check_proof",
    "audit_checkpoint",
    "audit_consistency",
    "audit_export",
    "audit_keygen",
    "audit_prove",
    "audit_purge",
    "audit_query",
    "audit_replay_spill",
    "audit_show",
    "audit_stats",
    "audit_tail",
    "audit_verify",
    "db_current",
    "db_downgrade",
    "db_upgrade",
    "event_dict",
]
