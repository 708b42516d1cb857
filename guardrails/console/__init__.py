"""The read-only audit console: server-rendered pages over the audit log for reviewers.

The proxy serves it at ``/console``; ``guardrails console --audit URL --keys FILE`` runs it
alone. Pages: the event list (the filters of ``audit query``, paging, CSV/JSONL export), one
event with its findings highlighted, the chains with a background verify, charts, and the
policy versions seen with a semantic diff. An admin API key logs in; a key bound to one
tenant sees only that tenant.
"""

from __future__ import annotations

from guardrails.console.app import (
    CONSOLE_PREFIX,
    ConsoleSettings,
    create_console_app,
    create_console_router,
)

__all__ = ["CONSOLE_PREFIX", "ConsoleSettings", "create_console_app", "create_console_router"]
