"""What the command modules share: consoles, option types and error reporting."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
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
        fail(str(exc) + _pack_hint(path))


def _pack_hint(path: str | None) -> str:
    """For a name that is neither a file nor a shipped pack: the packs, and the closest."""
    import difflib
    from pathlib import Path

    from guardrails.policy import shipped_policy_dir

    if path is None or Path(path).exists() or "/" in path or path.endswith((".yaml", ".yml")):
        return ""
    packs = sorted(p.stem for p in shipped_policy_dir().glob("*.yaml"))
    close = difflib.get_close_matches(path, packs, n=1)
    hint = f"\ndid you mean {close[0]!r}?" if close else ""
    return f"{hint}\nshipped packs: {', '.join(packs)}"


def read_text_argument(text: str) -> str:
    """The TEXT argument, or standard input when it is ``-`` (must be UTF-8)."""
    if text != "-":
        return text
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"standard input is not valid UTF-8 (byte {exc.start}: {exc.reason})")


@contextlib.contextmanager
def progress_bar(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for long work (only when stderr is a terminal, so scripts
    and logs stay clean); yields ``advance(n)``."""
    if not err.is_terminal:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def cwd_importable() -> None:
    """Let ``--generator module:function`` find modules in the current folder, as uvicorn
    and gunicorn do (also for worker processes started later, through ``PYTHONPATH``)."""
    import os

    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if cwd not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([cwd, *paths])


def setup_cli_logging() -> None:
    """Console logs for people at a terminal, JSON otherwise (see `configure_logging`)."""
    configure_logging()


__all__ = [
    "AuditOption",
    "JsonOption",
    "PolicyOption",
    "cwd_importable",
    "err",
    "fail",
    "load_policy_or_exit",
    "out",
    "progress_bar",
    "read_text_argument",
    "setup_cli_logging",
]
