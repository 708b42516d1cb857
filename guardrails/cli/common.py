"""What the command modules share: consoles, option types and error reporting."""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from guardrails.exceptions import PolicyError
from guardrails.logs import configure_logging
from guardrails.policy import Policy, load_policy

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

PolicyOption = Annotated[
    str | None,
    typer.Option("--policy", "-p", help="Policy file or shipped pack name (default: default)."),
]
AuditOption = Annotated[
    str | None,
    typer.Option("--audit", help="Audit database URL (default: $GUARDRAILS_AUDIT_URL or SQLite)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` as an error and exit with ``code`` (2: usage or input error)."""
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def load_policy_or_exit(path: str | None) -> Policy:
    """Load a policy, turning `PolicyError` into a readable message and exit code 2."""
    try:
        return load_policy(path)
    except PolicyError as exc:
        fail(str(exc))


def read_text_argument(text: str) -> str:
    """The TEXT argument, or standard input when it is ``-`` (must be UTF-8)."""
    if text != "-":
        return text
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"standard input is not valid UTF-8 (byte {exc.start}: {exc.reason})")


def setup_cli_logging() -> None:
    """Console logs for people at a terminal, JSON otherwise (see `configure_logging`)."""
    configure_logging()


__all__ = [
    "AuditOption",
    "JsonOption",
    "PolicyOption",
    "err",
    "fail",
    "load_policy_or_exit",
    "out",
    "read_text_argument",
    "setup_cli_logging",
]
