"""The README is the truth: .ci/run runs exactly its test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    """The command after 'Run the whole test suite' in the README is the last line of .ci/run."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("Run the whole test suite", 1)[1]
    command = re.search(r"```sh\n(.+?)\n```", section, re.S).group(1).strip()
    ci_lines = [
        ln for ln in (ROOT / ".ci/run").read_text().splitlines() if ln and not ln.startswith("#")
    ]
    assert ci_lines[-1] == command
    assert "pytest" in command
