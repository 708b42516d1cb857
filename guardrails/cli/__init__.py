"""The ``guardrails`` command line: one Typer app, with one module per command group.

Command modules attach their commands to the apps in `guardrails.cli.app` when imported
here. They import heavy dependencies (torch) inside the commands, so ``guardrails --help``
stays fast.
"""

from __future__ import annotations

# --- command modules: importing one registers its commands (one line each; keep sorted) ---
from guardrails.cli import audit_commands as _audit_commands  # noqa: F401
from guardrails.cli import check_commands as _check_commands  # noqa: F401
from guardrails.cli import classifier_commands as _classifier_commands  # noqa: F401
from guardrails.cli import console_commands as _console_commands  # noqa: F401
from guardrails.cli import generator_commands as _generator_commands  # noqa: F401
from guardrails.cli import policy_commands as _policy_commands  # noqa: F401
from guardrails.cli import privacy_commands as _privacy_commands  # noqa: F401
from guardrails.cli import serve_commands as _serve_commands  # noqa: F401
from guardrails.cli.app import app, main

__all__ = ["app", "main"]
