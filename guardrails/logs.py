"""Operational logging through structlog: JSON in production, readable in development.

Event names are stable snake_case strings (``guard_blocked``, ``audit_write_failed``...) and
the request id is bound through contextvars, so every line of one call can be found together.
Nothing an auditor needs lives only here: that goes to the audit log.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging(*, json: bool | None = None, level: str | int | None = None) -> None:
    """Configure structlog for the process.

    Args:
        json: JSON lines (production) or coloured console output (development). ``None``
            reads ``GUARDRAILS_LOG_FORMAT`` (``json``/``console``), else JSON unless stderr
            is a terminal.
        level: minimum level; ``None`` reads ``GUARDRAILS_LOG_LEVEL`` (default ``warning``,
            so a library embedded in an app stays quiet).
    """
    if json is None:
        fmt = os.environ.get("GUARDRAILS_LOG_FORMAT", "").lower()
        json = fmt == "json" or (fmt != "console" and not sys.stderr.isatty())
    if level is None:
        level = os.environ.get("GUARDRAILS_LOG_LEVEL", "warning")
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def _stderr_logger(*args: object) -> structlog.PrintLogger:
    # Resolve sys.stderr per logger, not once at configuration: tests and apps swap it.
    return structlog.PrintLogger(file=sys.stderr)


def get_logger(name: str = "guardrails") -> structlog.typing.FilteringBoundLogger:
    """A logger whose events carry ``component=name``.

    If the application has not configured structlog, the defaults of `configure_logging`
    apply (warnings and errors only), so an embedded guard does not chatter on stdout.
    """
    if not structlog.is_configured():
        configure_logging()
    # A lazy proxy (not .bind(), which would freeze today's configuration into the logger):
    # it follows later `configure_logging` calls and test captures.
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(component=name)
    return logger


__all__ = [
    "configure_logging",
    "get_logger",
]
