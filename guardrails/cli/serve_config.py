"""Where ``guardrails serve`` options come from: the command line, ``GUARDRAILS_*``
environment variables, a YAML ``--config`` file, then the built-in defaults (in that order
of precedence: the first that sets an option wins).

Every ``serve`` option ``--some-option`` reads ``GUARDRAILS_SOME_OPTION`` (click's
automatic environment variables with the prefix ``GUARDRAILS``); the config file maps the
same names (``some-option`` or ``some_option``) to values. Also: uvicorn's own log lines in
the structured format of `guardrails.logs` (`uvicorn_log_config`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import typer

__all__ = [
    "ENV_PREFIX",
    "SERVE_CONTEXT",
    "load_serve_config",
    "structured_formatter",
    "uvicorn_log_config",
]

ENV_PREFIX = "GUARDRAILS"
SERVE_CONTEXT: dict[str, Any] = {"auto_envvar_prefix": ENV_PREFIX, "show_default": True}
"""Context settings of the ``serve`` command: automatic ``GUARDRAILS_*`` variables."""


def load_serve_config(ctx: typer.Context, value: Path | None) -> Path | None:
    """The ``--config FILE`` callback: the file's values become the command's defaults
    (so the command line and the environment still win). Unknown keys and unreadable
    files exit 2 naming the file and the key."""
    if value is None or ctx.resilient_parsing:
        return value
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe", pure=True).load(value.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {value}: {exc}") from None
    except YAMLError as exc:
        raise typer.BadParameter(f"{value} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{value}: expected a mapping of option names to values")
    known = {p.name for p in ctx.command.params if p.name and p.name != "config"}
    defaults: dict[str, Any] = {}
    for key, item in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            choices = ", ".join(sorted(k.replace("_", "-") for k in known))
            raise typer.BadParameter(f"{value}: unknown option {key!r} (known: {choices})")
        defaults[name] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def structured_formatter() -> logging.Formatter:
    """A stdlib formatter that renders records as `guardrails.logs` does (JSON lines, or
    the console renderer when ``GUARDRAILS_LOG_FORMAT=console`` / stderr is a terminal)."""
    import structlog

    fmt = os.environ.get("GUARDRAILS_LOG_FORMAT", "").lower()
    as_json = fmt == "json" or (fmt != "console" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )

    def component(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        event.setdefault("component", event.pop("logger", "uvicorn"))
        return event

    return structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            component,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
    )


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's ``log_config``: its lines in the structured format; its access log off
    (the proxy logs one ``http_request`` line per request, with the request id)."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": "guardrails.cli.serve_config.structured_formatter"}},
        "handlers": {
            "structured": {
                "class": "logging.StreamHandler",
                "formatter": "structured",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["structured"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
        },
    }
