"""``guardrails keys ...`` through the Typer app, and ``guardrails serve`` as a real process
with two uvicorn workers serving the example generator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from typer.testing import CliRunner

from audit import verify_chain
from guardrails.cli import app
from guardrails.proxy.keys import add_key


@pytest.fixture
def runner(monkeypatch, tmp_path):
    """A CLI runner in an empty directory with a cleaned environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("GUARDRAILS_AUDIT_URL", "GUARDRAILS_KEYS_FILE", "GUARDRAILS_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def test_keys_add_list_revoke(runner, tmp_path):
    """A key is printed once, stored only as a hash, listed, and revoked."""
    added = runner.invoke(app, ["keys", "add", "--tenant", "acme", "--admin"])
    assert added.exit_code == 0, added.output
    key = added.stdout.strip().splitlines()[-1]
    assert key.startswith("grk-")
    stored = (tmp_path / "guardrails-keys.json").read_text()
    assert key not in stored
    listed = runner.invoke(app, ["keys", "list", "--json"])
    rows = json.loads(listed.stdout)["keys"]
    assert rows[0]["tenant"] == "acme"
    assert rows[0]["admin"] is True
    assert "sha256" not in rows[0]
    revoked = runner.invoke(app, ["keys", "revoke", rows[0]["key_id"]])
    assert revoked.exit_code == 0
    rows = json.loads(runner.invoke(app, ["keys", "list", "--json"]).stdout)["keys"]
    assert rows[0]["revoked_at"] is not None


def test_keys_revoke_unknown_id(runner):
    """Revoking an id that is not in the file is a usage error (exit 2)."""
    result = runner.invoke(app, ["keys", "revoke", "deadbeef"])
    assert result.exit_code == 2
    assert "no key" in result.output


def test_keys_add_rejects_bad_policy(runner, tmp_path):
    """A key cannot name a policy that does not load."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nrules: [{id: a}]\n")
    result = runner.invoke(app, ["keys", "add", "--tenant", "t", "--policy", str(bad)])
    assert result.exit_code == 2


def test_serve_refuses_without_keys_file(runner):
    """serve without a keys file (and without --insecure-no-auth) exits 2 with a hint."""
    result = runner.invoke(app, ["serve", "--generator", "example"])
    assert result.exit_code == 2
    assert "keys add" in result.output


def test_serve_needs_one_source(runner):
    """serve with both --upstream and --generator is a usage error."""
    result = runner.invoke(
        app, ["serve", "--generator", "example", "--upstream", "http://x/v1", "--insecure-no-auth"]
    )
    assert result.exit_code == 2


#: Generous: only a server that never comes up waits this long.
SERVE_START_DEADLINE_S = 180.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_process_with_workers(tmp_path: Path):
    """A real `guardrails serve --workers 2` serves the example generator, guarded and audited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAILS_")}
    keys_file = tmp_path / "keys.json"
    key, _ = add_key(keys_file, tenant="t1")
    port = _free_port()
    audit_url = f"sqlite:///{tmp_path / 'audit.db'}"
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from guardrails.cli import main; main()",
            "serve",
            "--generator",
            "example",
            "--keys",
            str(keys_file),
            "--audit",
            audit_url,
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # Wait for the condition (the server answers), not for a time: two workers import
        # torch and load the classifier, which takes minutes on a machine whose cores are busy.
        deadline = time.monotonic() + SERVE_START_DEADLINE_S
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.2)
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=2) as c:
            raw = c.chat.completions.with_raw_response.create(
                model="example", messages=[{"role": "user", "content": "hello"}]
            )
            text = raw.parse().choices[0].message.content
            assert "jane.doe@example.com" not in text
            assert "[EMAIL]" in text
            assert raw.headers["x-guardrails-action"] == "redact"
            streamed = "".join(
                chunk.choices[0].delta.content or ""
                for chunk in c.chat.completions.create(
                    model="example", messages=[{"role": "user", "content": "refund?"}], stream=True
                )
                if chunk.choices
            )
            assert "billing@example.com" not in streamed
            assert "[EMAIL]" in streamed
    finally:
        process.terminate()
        try:
            process.wait(SERVE_START_DEADLINE_S)
        except subprocess.TimeoutExpired:  # never leave a server behind
            process.kill()
            process.wait()
        log.close()
    report = verify_chain(audit_url)
    assert report.ok
    assert report.events_checked >= 2
