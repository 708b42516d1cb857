"""The built wheel works on its own: shipped policies and migrations travel inside it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, guardrails, audit
assert guardrails.__file__.startswith(sys.argv[1]), guardrails.__file__
from guardrails import Guard
from guardrails.policy import load_policy
from audit import verify_chain
policy = load_policy()
assert "_policies" in policy.path, policy.path
url = "sqlite:///" + sys.argv[2]
with Guard.from_policy(audit=url) as guard:
    assert guard.wrap(lambda p: "mail x@y.org")("hi") == "mail [EMAIL]"
report = verify_chain(url)
assert report.ok and report.events_checked == 1, report
print("ok")
"""


def test_wheel_ships_policies_and_migrations_and_runs(tmp_path):
    """A non-editable install (the wheel unpacked) loads the shipped policy and migrates."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "guardrails/_policies/default.yaml" in names
    assert "audit/_migrations/env.py" in names
    assert any(n.startswith("audit/_migrations/versions/") for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(site), str(tmp_path / "a.db")],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "ok"
