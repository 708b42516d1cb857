"""Import hygiene: every module imports alone, torch stays out, the public API is pinned."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import audit
import guardrails

MODULES = sorted(
    name
    for package in (guardrails, audit)
    for name in [package.__name__]
    + [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    if "._" not in name
)


def test_every_module_imports_in_a_fresh_interpreter():
    """Every module imports in a fresh interpreter, each reported on its own line on failure.

    One interpreter for all of them keeps this fast; a module that only imports after some
    other module has run would still pass here, which the per-package tests catch.
    """
    code = (
        "import importlib, sys, traceback\n"
        "bad = []\n"
        f"for name in {MODULES!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        bad.append(name + ': ' + traceback.format_exc(limit=1))\n"
        "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(MODULES) > 20


def test_import_guardrails_does_not_import_torch():
    """`import guardrails` (and the CLI app) never import torch."""
    code = "import sys, guardrails, guardrails.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_audit_does_not_import_guardrails():
    """The audit package is a library of its own."""
    code = "import sys, audit, audit.writer, audit.verify; sys.exit('guardrails' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_public_api_is_pinned():
    """guardrails.__all__ is sorted and holds exactly the promised names."""
    assert guardrails.__all__ == sorted(guardrails.__all__)
    assert set(guardrails.__all__) == {
        "Action", "AsyncGuardedStream", "AuditUnavailable", "Blocked", "CallContext",
        "CallOutcome", "Finding", "GeneratorError", "Guard", "GuardInputError", "GuardedStream",
        "GuardrailsError", "Policy", "PolicyError", "PolicyProblem",
        "PolicyRef", "Severity", "Span", "Stage", "StreamChecker", "StreamStep", "Verdict",
        "__version__", "guard_context", "load_policy", "policy_json_schema",
    }  # fmt: skip
