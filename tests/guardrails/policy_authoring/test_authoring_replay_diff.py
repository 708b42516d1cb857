"""Replay over a real (SQLite) audit log, and semantic diffs of files and stored digests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from audit import AuditStore
from guardrails.cli import app
from guardrails.exceptions import PolicyError
from guardrails.guard import Guard
from guardrails.policy import load_policy
from guardrails.policy.diff import diff_policies, load_policy_version, policy_from_source
from guardrails.policy.replay import parse_since, replay
from guardrails.testing import FakeGenerator

BASELINE = """\
name: shop
settings:
  audit: {{store: {store}}}
rules:
  - {{id: pii.email, pattern: '[a-z]+@[a-z]+\\.[a-z]+', action: redact, normalization: [nfkc]}}
  - {{id: codename, keywords: [bluebird], action: block}}
"""

CANDIDATE = """\
name: shop
version: "2"
settings:
  audit: {store: full}
rules:
  - {id: pii.email, pattern: '[a-z]+@[a-z]+\\.[a-z]+', action: redact, normalization: [nfkc]}
  - {id: greeting, keywords: [hello], action: block, applies_to: [input]}
"""

PROMPTS = ["hello there", "mail ann@example.org please", "status of bluebird?", "what time is it"]


def _record(tmp_path, url: str, store: str) -> str:
    """Run the prompts through a guard on the baseline policy; return the policy digest."""
    path = tmp_path / f"baseline-{store}.yaml"
    path.write_text(BASELINE.format(store=store), encoding="utf-8")
    with Guard.from_policy(path, audit=url, on_block="refuse") as guard:
        answer = guard.wrap(FakeGenerator(["fine"]))
        for prompt in PROMPTS:
            answer(prompt)
        return guard.policy.digest


@pytest.fixture
def candidate(tmp_path):
    """The candidate: the codename rule dropped, a greeting rule added."""
    path = tmp_path / "candidate.yaml"
    path.write_text(CANDIDATE, encoding="utf-8")
    return path


def test_replay_full_text_reports_newly_blocked_and_allowed(tmp_path, candidate):
    """Over fully stored traffic the candidate newly blocks the greeting and newly allows
    the codename prompt, per rule, with examples."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    _record(tmp_path, url, "full")
    with AuditStore(url) as store:
        report = replay(load_policy(candidate), store, since=parse_since("1d"))
    assert report.events_read == 4
    assert report.newly_blocked_count == 1
    assert report.newly_blocked[0].text == "hello there"
    assert report.newly_allowed_count == 1
    assert report.newly_allowed[0].rules_before == ("codename",)
    assert report.unknown_output == 1  # the codename prompt was never answered
    assert report.rules["greeting"].newly_fired == 1
    assert report.rules["codename"].stopped_firing == 1
    assert "pii.email" not in report.rules  # unchanged behaviour is not a change
    assert report.skipped_hash == 0


def test_replay_redacted_text_carries_hidden_findings(tmp_path, candidate):
    """Redacted storage hides the e-mail; its recorded finding carries over to the
    candidate's rule of the same id, so the redaction is not reported as a change."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _record(tmp_path, url, "redacted")
    with AuditStore(url) as store:
        stored = [e.prompt for e in store.events(newest_first=False)]
        report = replay(load_policy(candidate), store)
    assert "ann@example.org" not in " ".join(p or "" for p in stored)
    assert report.partial >= 1
    assert "pii.email" not in report.rules
    assert report.newly_blocked_count == 1


def test_replay_skips_hash_mode_events(tmp_path, candidate):
    """Events stored as hashes cannot be replayed and are counted as skipped."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    _record(tmp_path, url, "hash")
    with AuditStore(url) as store:
        report = replay(load_policy(candidate), store)
    assert report.skipped_hash == 4
    assert report.stages_replayed == 0


def test_parse_since_forms():
    """Durations count back from now; ISO dates are UTC when naive; nonsense is refused."""
    now = datetime(2026, 1, 8, tzinfo=UTC)
    assert parse_since("7d", now=now) == now - timedelta(days=7)
    assert parse_since("2026-01-01") == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="duration"):
        parse_since("last week")


def test_cli_replay_json(runner, tmp_path, candidate):
    """policy replay --json reports counts and per-rule changes."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    _record(tmp_path, url, "full")
    result = runner.invoke(
        app, ["policy", "replay", str(candidate), "--audit", url, "--since", "7d", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["newly_blocked"], data["newly_allowed"]) == (1, 1)
    assert {r["rule_id"] for r in data["rules"]} == {"greeting", "codename"}


def test_diff_files(tmp_path, candidate):
    """The diff lists added, removed and changed rules and changed settings."""
    base = tmp_path / "base.yaml"
    base.write_text(BASELINE.format(store="redacted"), encoding="utf-8")
    result = diff_policies(load_policy(base), load_policy(candidate))
    assert result.added == ("greeting",)
    assert result.removed == ("codename",)
    assert [(c.path, c.before, c.after) for c in result.settings] == [
        ("audit.store", "redacted", "full")
    ]
    assert [(c.path, c.before, c.after) for c in result.header] == [("version", "1", "2")]
    assert diff_policies(load_policy(base), load_policy(base)).empty


def test_diff_reformatting_is_not_a_change(tmp_path):
    """Comments, key order and an explicit default value make no semantic difference."""
    a = tmp_path / "a.yaml"
    a.write_text("name: p\nrules:\n  - {id: r, keywords: [x]}\n", encoding="utf-8")
    b = tmp_path / "b.yaml"
    b.write_text(
        "# note\nrules:\n  - keywords: [x]\n    id: r\n    enabled: true\nname: p\n", "utf-8"
    )
    assert diff_policies(load_policy(a), load_policy(b)).empty


def test_stored_source_with_bases_resolves(overlay):
    """A stored source (overlay then bases) rebuilds the same resolved policy."""
    loaded = load_policy(overlay)
    rebuilt = policy_from_source(loaded.source, label="stored")
    assert rebuilt.model == loaded.model


def test_diff_by_digest_from_the_audit_store(runner, tmp_path, candidate):
    """Digests recorded by the guard diff like files; an unknown digest exits 2."""
    url = f"sqlite:///{tmp_path / 'd.db'}"
    digest = _record(tmp_path, url, "full")
    with AuditStore(url) as store:
        stored = load_policy_version(digest, store=store)
    assert [r.id for r in stored.rules] == ["pii.email", "codename"]
    result = runner.invoke(
        app, ["policy", "diff", digest, str(candidate), "--audit", url, "--json"]
    )
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["rules_added"] == ["greeting"]
    assert data["rules_removed"] == ["codename"]
    same = runner.invoke(app, ["policy", "diff", digest, digest, "--audit", url])
    assert same.exit_code == 0, same.output
    missing = runner.invoke(app, ["policy", "diff", "0" * 64, digest, "--audit", url])
    assert missing.exit_code == 2
    assert "no policy with this digest" in missing.output


def test_unknown_reference_is_named():
    """A reference that is neither a file, a pack nor a digest says so."""
    with pytest.raises(PolicyError, match="no such policy file or shipped pack"):
        load_policy_version("nope-not-here.yaml")


def test_replay_redacted_without_the_rule_stops_it_firing(tmp_path):
    """A candidate without the rule that hid a span reports that rule as no longer firing."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    _record(tmp_path, url, "redacted")
    path = tmp_path / "no-email.yaml"
    path.write_text("name: shop\nrules:\n  - {id: codename, keywords: [bluebird]}\n", "utf-8")
    with AuditStore(url) as store:
        report = replay(load_policy(path), store)
    assert report.rules["pii.email"].stopped_firing == 1
    assert report.transitions[("redact", "allow")] == 1
