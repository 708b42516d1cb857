"""``guardrails console``: banner after the bind (with the real port), a port in use is one
line and exit 2, and the served console answers."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request

import pytest
from typer.testing import CliRunner

from guardrails.cli import app
from guardrails.proxy.keys import add_key

_ENTRY = "from guardrails.cli import main; main()"


def _env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAILS_")}
    env["GUARDRAILS_AUDIT_URL"] = f"sqlite:///{tmp_path / 'a.db'}"
    return env


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys.json"
    add_key(path, tenant="*", admin=True)
    return path


def test_port_in_use_is_one_line_and_exit_2(tmp_path, keys_file):
    """A taken port: exit code 2 and a single line that names the port."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        result = CliRunner().invoke(
            app, ["console", "--keys", str(keys_file), "--port", str(port)], env=_env(tmp_path)
        )
    finally:
        taken.close()
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert f"port {port}" in lines[0]
    assert "already in use" in lines[0]


def test_banner_names_the_bound_port_and_it_answers(tmp_path, keys_file):
    """With --port 0 the banner shows the port the kernel chose, which serves the login."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _ENTRY, "console", "--keys", str(keys_file), "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_env(tmp_path),
    )
    try:
        assert proc.stderr is not None
        banner = ""
        for line in proc.stderr:
            if "guardrails console on" in line:
                banner = line
                break
        match = re.search(r"http://127\.0\.0\.1:(\d+)/console/", banner)
        assert match, banner
        url = f"http://127.0.0.1:{match.group(1)}/console/login"
        with urllib.request.urlopen(url, timeout=60) as response:
            assert response.status == 200
            assert b"Admin API key" in response.read()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if proc.stderr is not None:
            proc.stderr.close()


def test_console_refuses_a_missing_keys_file(tmp_path):
    """No keys file: exit 2 with the path and how to create one."""
    missing = tmp_path / "nope.json"
    result = CliRunner().invoke(
        app, ["console", "--keys", str(missing), "--port", "0"], env=_env(tmp_path)
    )
    assert result.exit_code == 2
    assert str(missing) in result.output.replace("\n", "")
    assert "guardrails keys add" in result.output
