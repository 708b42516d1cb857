"""Policy hot reload: a valid edit is swapped in, an invalid edit is rejected and the last
good policy stays; both are audited. Runs its own proxy (module-scoped fixtures)."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

import audit

NEW_RULE = """\
  - id: fruit.pineapple
    category: fruit
    keywords: ["pineapple"]
    action: block
    applies_to: [input]
"""


def _digest(proxy, keys):
    policies = httpx.get(
        f"{proxy.root}/admin/policy", headers={"Authorization": f"Bearer {keys.admin_all}"}
    ).json()["policies"]
    return next(p["digest"] for p in policies if p["name"] == "proxy-test")


def _reload_events(proxy, keys, action):
    events = httpx.get(
        f"{proxy.root}/admin/audit",
        params={"action": action, "limit": 1000},
        headers={"Authorization": f"Bearer {keys.admin_all}"},
    ).json()["events"]
    return [e for e in events if e["metadata"].get("event") == "policy_reload"]


@pytest.fixture
def client(proxy, keys):
    """An official client with tenant A's key (the reloaded default policy)."""
    with openai.OpenAI(base_url=proxy.url, api_key=keys.tenant_a, max_retries=0) as c:
        yield c


def _ask(client, text):
    return client.chat.completions.with_raw_response.create(
        model="fake-model", messages=[{"role": "user", "content": text}]
    )


def test_valid_edit_is_applied_and_audited(proxy, keys, client, policy_text):
    """An added rule takes effect without a restart; the swap is an audit event."""
    before = _digest(proxy, keys)
    assert _ask(client, "say: pineapple").parse().choices[0].message.content == "pineapple"
    proxy.policy_path.write_text(policy_text + NEW_RULE, encoding="utf-8")
    deadline = time.monotonic() + 10
    while _digest(proxy, keys) == before:
        assert time.monotonic() < deadline, "the edit was never applied"
        time.sleep(0.1)
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(client, "say: pineapple")
    assert caught.value.body["rules"] == ["fruit.pineapple"]
    applied = _reload_events(proxy, keys, "allow")
    assert any(e["metadata"]["previous_digest"] == before for e in applied)


def test_invalid_edit_is_rejected_last_good_stays(proxy, keys, client, policy_text):
    """A broken edit is rejected with file:line errors; the last good policy keeps serving."""
    good = _digest(proxy, keys)
    broken = policy_text + NEW_RULE + "  - id: bad\n    pattern: '(unclosed'\n    action: block\n"
    proxy.policy_path.write_text(broken, encoding="utf-8")
    outcome = httpx.post(
        f"{proxy.root}/admin/policy/reload", headers={"Authorization": f"Bearer {keys.admin_all}"}
    ).json()["reloads"]
    mine = next(o for o in outcome if o["digest"] == good)
    assert mine["outcome"] in {"rejected", "unchanged"}  # the watcher may have got there first
    assert _digest(proxy, keys) == good
    # Still enforcing the last good policy, which blocks pineapple.
    with pytest.raises(openai.BadRequestError):
        _ask(client, "say: pineapple")
    assert _ask(client, "say: fine").parse().choices[0].message.content == "fine"
    deadline = time.monotonic() + 5
    while not (rejected := _reload_events(proxy, keys, "block")):
        assert time.monotonic() < deadline, "the rejection was never audited"
        time.sleep(0.1)
    assert "policy.yaml:" in rejected[0]["error"]
    assert "bad" in rejected[0]["error"]


def test_audit_chain_verifies_after_reloads(proxy, keys, client):
    """Every event written by the proxy (calls and reloads) verifies, on one chain: reloads
    and other policies share the worker's audit writer (Guard.with_policy)."""
    _ask(client, "say: one more")
    report = audit.verify_chain(proxy.audit_url)
    assert report.ok, report.first_problem
    assert report.events_checked >= 4
    assert report.chains_checked == 1
