"""The root Typer app and the registration of every command group.

Exit codes across the CLI: 0 success, 1 a negative result (blocked, verification failed,
policy tests failed), 2 usage or input errors.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="guardrails",
    help="Safety and audit middleware for language model generation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
policy_app = typer.Typer(help="Validate, test and export policies.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the audit database schema.", no_args_is_help=True)
audit_app = typer.Typer(help="Verify and query the audit log.", no_args_is_help=True)
train_app = typer.Typer(help="Train the bundled models.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(train_app, name="train")


def main() -> None:
    """Console-script entry point."""
    from guardrails.cli.common import cwd_importable

    cwd_importable()  # --generator module:function finds modules here
    app()


__all__ = [
    "app",
    "audit_app",
    "db_app",
    "main",
    "policy_app",
    "train_app",
]
