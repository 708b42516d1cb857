"""``guardrails console``: the read-only audit console on its own, without the proxy.

The socket is bound before anything is printed, so the banner's URL is one that answers,
and a port in use is one line on stderr with exit code 2.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from guardrails.cli.app import app
from guardrails.cli.common import AuditOption, err, fail, setup_cli_logging

__all__ = ["bind_or_exit", "console"]


def bind_or_exit(host: str, port: int, what: str) -> socket.socket:
    """A listening socket on ``host:port``, or exit 2 with one clear line naming the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            fail(f"{what}: port {port} on {host} is already in use (choose another with --port)")
        fail(f"{what}: cannot listen on {host}:{port}: {exc.strerror or exc}")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@app.command("console")
def console(
    audit: AuditOption = None,
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            help="Keys file whose admin keys may log in "
            "(default: $GUARDRAILS_KEYS_FILE or ./guardrails-keys.json).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8090,
) -> None:
    """Serve the read-only audit console (log in with an admin API key)."""
    setup_cli_logging()
    from audit import default_audit_url
    from audit.engine import safe_url
    from guardrails.console import ConsoleSettings, create_console_app
    from guardrails.proxy.keys import KeyRing, KeysFileError

    url = audit or default_audit_url()
    keys_path = keys or Path(os.environ.get("GUARDRAILS_KEYS_FILE") or "guardrails-keys.json")
    if not keys_path.exists():
        fail(
            f"no keys file at {keys_path}: create an admin key with "
            "`guardrails keys add --tenant '*' --admin`"
        )
    try:
        ring = KeyRing(keys_path)
    except KeysFileError as exc:
        fail(str(exc))
    from guardrails.console.auth import may_use_console

    if not any(may_use_console(k) and k.active for k in ring.keys):
        fail(f"{keys_path} has no active admin key: add one with `guardrails keys add --admin`")

    def live_keys() -> KeyRing:
        try:
            ring.reload_if_changed()
        except KeysFileError as exc:  # the last good keys stay in force
            err.print(f"keys file rejected: {exc}")
        return ring

    import uvicorn

    sock = bind_or_exit(host, port, "guardrails console")
    bound_port = sock.getsockname()[1]
    app_ = create_console_app(ConsoleSettings(audit_url=url, keys=live_keys))
    err.print(
        f"guardrails console on http://{host}:{bound_port}/console/ "
        f"(audit {safe_url(url)}, keys {keys_path})"
    )
    server = uvicorn.Server(uvicorn.Config(app_, log_level="warning"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
