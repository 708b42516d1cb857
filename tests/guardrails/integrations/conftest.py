"""A small policy (redact e-mail addresses, block one injection phrase) behind an audited
guard, for the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from audit import AuditStore
from guardrails import Guard

POLICY = """\
name: integration
version: "1"
settings:
  stream_holdback_chars: 24
rules:
  - id: pii.email
    pattern: '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}'
    normalization: [nfkc]  # the default leetspeak folding would read "@" as "a"
    action: redact
    replacement: "[EMAIL]"
  - id: injection.ignore
    pattern: '(?i)ignore (?:all )?previous instructions'
    action: block
"""


@pytest.fixture
def audit_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def policy_path(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


@pytest.fixture
def guard(policy_path, audit_url) -> Iterator[Guard]:
    with Guard.from_policy(policy_path, audit=audit_url) as g:
        yield g


def _audited(url: str) -> list:
    with AuditStore(url) as store:
        return store.events(limit=1000, newest_first=False)


@pytest.fixture
def audited():
    """Every stored event of a log, oldest first."""
    return _audited
