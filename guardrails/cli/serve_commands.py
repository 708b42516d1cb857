"""``guardrails serve`` (the OpenAI-compatible guard proxy) and ``guardrails keys ...``.

FastAPI, uvicorn and aiohttp are imported inside the commands, so ``guardrails --help`` and
``import guardrails`` stay free of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from guardrails.cli.app import app
from guardrails.cli.common import (
    AuditOption,
    JsonOption,
    PolicyOption,
    err,
    fail,
    load_policy_or_exit,
    out,
    setup_cli_logging,
)
from guardrails.cli.serve_config import SERVE_CONTEXT, load_serve_config, uvicorn_log_config

keys_app = typer.Typer(help="Manage the proxy's client API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

KeysOption = Annotated[
    Path | None,
    typer.Option(
        "--keys",
        help="Keys file (default: $GUARDRAILS_KEYS_FILE or ./guardrails-keys.json).",
    ),
]


def _keys_path(keys: Path | None) -> Path:
    return keys or Path(os.environ.get("GUARDRAILS_KEYS_FILE") or "guardrails-keys.json")


@app.command("serve", context_settings=SERVE_CONTEXT)
def serve(
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            envvar="GUARDRAILS_CONFIG",
            is_eager=True,
            callback=load_serve_config,
            help="YAML file of serve options (option-name: value). Precedence: command line,"
            " then GUARDRAILS_<OPTION> environment variables, then this file, then defaults.",
        ),
    ] = None,
    policy: PolicyOption = None,
    upstream: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible upstream base URL, e.g. http://127.0.0.1:8000/v1."),
    ] = None,
    upstream_key_env: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Environment variable holding the upstream's API key."),
    ] = None,
    generator: Annotated[
        str | None,
        typer.Option(help="Serve an in-process generator instead: moe, example, module:fn."),
    ] = None,
    audit: AuditOption = None,
    keys: KeysOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (one audit chain each).")
    ] = 1,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Model a client may ask for (repeat; default: any)."),
    ] = None,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Largest request body.")] = 1_000_000,
    max_messages: Annotated[int, typer.Option(min=1, help="Most messages per chat.")] = 512,
    upstream_timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds before an upstream call is a 504.")
    ] = 60.0,
    reload_interval: Annotated[
        float, typer.Option(min=0.05, help="Seconds between checks of the policy and keys files.")
    ] = 2.0,
    insecure_no_auth: Annotated[
        bool,
        typer.Option("--insecure-no-auth", help="Serve without API keys (development only)."),
    ] = False,
    no_audit: Annotated[
        bool,
        typer.Option("--no-audit", help="Keep no audit log (benchmarks, development only)."),
    ] = False,
    header_timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds a client has to send request headers.")
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds a client has to send a request body (408).")
    ] = 30.0,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Open connections per worker; beyond: 503.")
    ] = 1024,
    keep_alive: Annotated[
        float, typer.Option(min=0.001, help="Seconds an idle keep-alive connection stays open.")
    ] = 5.0,
    limits: Annotated[
        Path | None,
        typer.Option(
            help="JSON file: tenant ('*': others) -> key_rpm, key_tpm, tenant_rpm, tenant_tpm,"
            " max_prompt_chars."
        ),
    ] = None,
    redis: Annotated[
        str | None,
        typer.Option(
            metavar="URL", help="Redis for rate-limit counters shared by workers and replicas."
        ),
    ] = None,
) -> None:
    """Run the OpenAI-compatible guard proxy in front of an upstream or a generator."""
    setup_cli_logging()
    from audit import default_audit_url
    from guardrails.proxy.config import CONFIG_ENV, ProxyConfig, ProxyConfigError

    if (upstream is None) == (generator is None):
        fail("give exactly one of --upstream URL and --generator NAME")
    upstream_key = None
    if upstream_key_env is not None:
        upstream_key = os.environ.get(upstream_key_env)
        if not upstream_key:
            fail(f"--upstream-key-env {upstream_key_env}: that environment variable is not set")
    loaded = load_policy_or_exit(policy)  # fail before any worker starts
    keys_file = None if insecure_no_auth else _keys_path(keys)
    if keys_file is not None and not keys_file.exists():
        fail(f"no keys file at {keys_file}: create a key with `guardrails keys add`")
    limits_table: dict[str, dict[str, int]] = {}
    if limits is not None:
        try:
            limits_table = json.loads(limits.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            fail(f"--limits {limits}: {exc}")
    try:
        config = ProxyConfig(
            policy=loaded.path,
            upstream=upstream,
            upstream_key=upstream_key,
            generator=generator,
            audit=None if no_audit else (audit or default_audit_url()),
            keys_file=str(keys_file) if keys_file is not None else None,
            allow_anonymous=insecure_no_auth,
            models=tuple(model or ()),
            max_body_bytes=max_body_bytes,
            max_messages=max_messages,
            upstream_timeout_s=upstream_timeout,
            reload_interval_s=reload_interval,
            header_timeout_s=header_timeout,
            body_timeout_s=body_timeout,
            max_connections=max_connections,
            keep_alive_s=keep_alive,
            limits=limits_table,
            redis_url=redis,
        )
    except ProxyConfigError as exc:
        fail(str(exc))
    import uvicorn

    from guardrails.cli.console_commands import bind_or_exit
    from guardrails.console.auth import console_secret
    from guardrails.proxy.metrics import multiprocess_dir_for_workers, remove_multiprocess_dir
    from guardrails.proxy.server import uvicorn_options

    os.environ[CONFIG_ENV] = config.to_env()
    console_secret()  # one console session secret for every worker (inherited from here)
    sock = bind_or_exit(host, port, "guardrails serve")  # the banner only after the bind
    metrics_dir = multiprocess_dir_for_workers() if workers > 1 else None
    err.print(
        f"guardrails proxy on http://{host}:{sock.getsockname()[1]} ({workers} worker(s)),"
        f" policy {loaded.ref.header()}, upstream {upstream or generator}"
    )
    try:
        uvicorn.run(
            "guardrails.proxy.app:create_app_from_env",
            factory=True,
            fd=sock.fileno(),
            workers=workers,
            log_level=os.environ.get("GUARDRAILS_LOG_LEVEL", "warning").lower(),
            log_config=uvicorn_log_config(os.environ.get("GUARDRAILS_LOG_LEVEL", "warning")),
            access_log=False,
            **uvicorn_options(config),
        )
    finally:
        sock.close()
        if metrics_dir is not None:
            remove_multiprocess_dir(metrics_dir)


@keys_app.command("add")
def keys_add(
    tenant: Annotated[
        str, typer.Option(help="Tenant the key's calls are audited under ('*': all).")
    ],
    policy: Annotated[
        str | None, typer.Option(help="Policy for this key's calls (default: the server's).")
    ] = None,
    admin: Annotated[
        bool,
        typer.Option(help="An admin key: operator for tenant '*', else tenant admin."),
    ] = False,
    role: Annotated[
        str | None,
        typer.Option(help="client, tenant_admin (its tenant only) or operator (tenant '*')."),
    ] = None,
    keys: KeysOption = None,
) -> None:
    """Create a key. It is printed once; the file keeps only its hash."""
    from guardrails.proxy.keys import KeysFileError, add_key

    if policy is not None:
        load_policy_or_exit(policy)
    path = _keys_path(keys)
    try:
        key, record = add_key(path, tenant=tenant, policy=policy, admin=admin, role=role)
    except KeysFileError as exc:
        fail(str(exc))
    err.print(f"key {record.key_id} for tenant {tenant!r} added to {path}; it is shown only now:")
    typer.echo(key)


@keys_app.command("list")
def keys_list(keys: KeysOption = None, as_json: JsonOption = False) -> None:
    """List keys (ids, tenants, policies; never the keys)."""
    from dataclasses import asdict

    from guardrails.proxy.keys import KeysFileError, read_keys

    path = _keys_path(keys)
    try:
        records = read_keys(path)
    except KeysFileError as exc:
        fail(str(exc))
    if as_json:
        rows = [{k: v for k, v in asdict(r).items() if k != "sha256"} for r in records]
        out.print_json(json.dumps({"keys": rows}))
        return
    if not records:
        err.print(f"no keys in {path}")
    for r in records:
        state = "revoked " + (r.revoked_at or "") if not r.active else "active"
        role = f" {r.role_of}" if r.role_of != "client" else ""
        out.print(f"{r.key_id}  tenant={r.tenant}  policy={r.policy or '(server)'}{role}  {state}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The id shown by `keys list`.")],
    keys: KeysOption = None,
) -> None:
    """Revoke a key; a running proxy refuses it within its reload interval."""
    from guardrails.proxy.keys import KeysFileError, revoke_key

    path = _keys_path(keys)
    try:
        record = revoke_key(path, key_id)
    except KeysFileError as exc:
        fail(str(exc))
    out.print(f"revoked {record.key_id} (tenant {record.tenant})")


__all__ = [
    "KeysOption",
    "keys_add",
    "keys_app",
    "keys_list",
    "keys_revoke",
    "serve",
]
