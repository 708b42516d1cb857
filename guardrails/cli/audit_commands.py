"""The ``guardrails db`` commands (audit schema migrations) and ``guardrails audit verify``.

The audit URL comes from ``--audit``, else ``$GUARDRAILS_AUDIT_URL``, else the local
``guardrails-audit.db``. Every audit failure becomes a one-line message and exit code 2;
a log that fails verification exits 1 and names its first bad row.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Annotated, NoReturn

import typer
from rich.markup import escape

from audit import (
    AuditError,
    VerifyReport,
    current_revision,
    default_audit_url,
    downgrade,
    upgrade,
    verify_chain,
)
from audit.engine import safe_url
from guardrails.cli.app import audit_app, db_app
from guardrails.cli.common import AuditOption, JsonOption, fail, out

HmacKeyEnvOption = Annotated[
    str | None,
    typer.Option(
        "--hmac-key-env",
        metavar="NAME",
        help="Environment variable holding the HMAC key the chains were written with.",
    ),
]


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
def db_current(audit: AuditOption = None) -> None:
    """Print the audit schema revision ('none' if never migrated)."""
    try:
        revision = current_revision(_url(audit))
    except AuditError as exc:
        _audit_failed(exc)
    out.print(revision or "none")


def _report_json(url: str, report: VerifyReport) -> str:
    return json.dumps(
        {
            "url": safe_url(url),
            "ok": report.ok,
            "events_checked": report.events_checked,
            "chains_checked": report.chains_checked,
            "problems": [asdict(problem) for problem in report.problems],
        },
        indent=2,
    )


def _print_report(url: str, report: VerifyReport) -> None:
    where = escape(safe_url(url))
    counts = f"{report.events_checked} events in {report.chains_checked} chains"
    first = report.first_problem
    if first is None:
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
    json_output: JsonOption = False,
) -> None:
    """Check every hash chain: exit 0 if intact, 1 naming the first bad row, 2 on errors."""
    key: bytes | None = None
    if hmac_key_env is not None:
        value = os.environ.get(hmac_key_env)
        if not value:
            fail(f"--hmac-key-env {escape(hmac_key_env)}: that environment variable is not set")
        key = value.encode()
    url = _url(audit)
    try:
        report = verify_chain(url, hmac_key=key)
    except AuditError as exc:
        _audit_failed(exc)
    if json_output:
        typer.echo(_report_json(url, report))
    else:
        _print_report(url, report)
    if not report.ok:
        raise typer.Exit(1)
