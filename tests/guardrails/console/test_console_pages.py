"""The console's pages through its HTTP surface (no browser): login, filters, paging,
exports, the event page's highlights, tenant scope, verify, charts and policy diffs."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from audit import check_proof_document
from guardrails.console import ConsoleSettings, create_console_app
from guardrails.console.data import highlight
from guardrails.proxy.keys import KeyRing


def _client(log) -> TestClient:
    ring = KeyRing(log.keys_file)
    settings = ConsoleSettings(audit_url=log.url, keys=lambda: ring, secret=b"test-secret")
    return TestClient(create_console_app(settings))


@pytest.fixture(scope="module")
def anonymous(console_log):
    with _client(console_log) as client:
        yield client


def _login(client: TestClient, key: str) -> TestClient:
    response = client.post("/console/login", data={"key": key}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return client


@pytest.fixture(scope="module")
def admin(console_log):
    with _client(console_log) as client:
        yield _login(client, console_log.admin_key)


@pytest.fixture(scope="module")
def acme(console_log):
    with _client(console_log) as client:
        yield _login(client, console_log.acme_key)


def _event_ids(html: str) -> list[str]:
    return re.findall(r'data-event="([0-9a-f]+)"', html)


def test_pages_need_a_login(anonymous):
    """Without a session, pages redirect to the login form and data endpoints answer 401."""
    page = anonymous.get("/console/", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/console/login"
    assert anonymous.get("/console/export.csv").status_code == 401
    assert anonymous.get("/console/chains/verify.json").status_code == 401
    anonymous.cookies.set("guardrails_console", "abc.99999999999.x", path="/console")
    try:
        forged = anonymous.get("/console/", follow_redirects=False)
    finally:
        anonymous.cookies.clear()
    assert forged.status_code == 303


def test_login_refuses_keys_that_are_not_admin(anonymous, console_log):
    """A client key that is not an admin, or a wrong key, does not open the console."""
    for key in (console_log.user_key, "grk-nope-nope", ""):
        response = anonymous.post("/console/login", data={"key": key}, follow_redirects=False)
        assert response.status_code == 401
        assert "not an active admin API key" in response.text
    assert "guardrails_console" not in anonymous.cookies


def test_bearer_admin_key_works_for_scripts(anonymous, console_log):
    """An admin key as a bearer token reaches the exports without a session."""
    headers = {"authorization": f"Bearer {console_log.admin_key}"}
    response = anonymous.get("/console/export.jsonl", headers=headers)
    assert response.status_code == 200
    assert len(response.text.splitlines()) == console_log.total


def test_event_list_is_newest_first_and_filters(admin, console_log):
    """All events, newest first; the action and text filters narrow them."""
    html = admin.get("/console/").text
    ids = _event_ids(html)
    assert len(ids) == console_log.total
    times = re.findall(r'<td class="mono">(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)</td>', html)
    assert times == sorted(times, reverse=True)
    blocked = _event_ids(admin.get("/console/", params={"action": "block"}).text)
    assert len(blocked) == 3
    assert console_log.blocked_id in blocked
    weather = _event_ids(admin.get("/console/", params={"contains": "WEATHER"}).text)
    assert weather
    assert set(weather) < set(ids)
    rule = _event_ids(admin.get("/console/", params={"rule": "injection.ignore"}).text)
    assert set(rule) == set(blocked)


def test_bad_filter_is_a_message_not_an_error(admin):
    """An unparseable time shows the reason and no events (never every event)."""
    response = admin.get("/console/", params={"since": "yesterday-ish"})
    assert response.status_code == 200
    assert "expected an ISO time" in response.text
    assert _event_ids(response.text) == []


def test_paging(admin, console_log, monkeypatch):
    """Pages do not overlap and together hold every event once."""
    monkeypatch.setattr("guardrails.console.app.PAGE_SIZE", 10)
    seen: list[str] = []
    page = 1
    while True:
        html = admin.get("/console/", params={"page": page}).text
        seen += _event_ids(html)
        if 'id="older"' not in html:
            break
        page += 1
    assert page == 3
    assert len(seen) == len(set(seen)) == console_log.total


def test_exports_carry_the_current_filter(admin):
    """CSV and JSONL hold exactly the filtered events."""
    params = {"action": "block"}
    rows = list(csv.DictReader(io.StringIO(admin.get("/console/export.csv", params=params).text)))
    docs = [
        json.loads(line)
        for line in admin.get("/console/export.jsonl", params=params).text.splitlines()
    ]
    assert len(rows) == len(docs) == 3
    assert {r["event_id"] for r in rows} == {d["event_id"] for d in docs}
    assert all(r["action"] == "block" and "injection.ignore" in r["rules"] for r in rows)


def test_event_page_marks_each_finding_at_its_span(admin, console_log):
    """The prompt shows each finding's exact text inside a mark naming its rule."""
    html = admin.get(f"/console/events/{console_log.blocked_id}").text
    marks = re.findall(r'<mark class="finding" data-rules="([^"]+)"[^>]*>([^<]*)</mark>', html)
    assert ("pii.email", "ann@example.org") in marks
    assert any(rules == "injection.ignore" and text.startswith("ignore") for rules, text in marks)
    assert console_log.digests[0] in html or console_log.digests[1] in html
    assert 'id="proof-link"' in html


def test_inclusion_proof_download_checks_offline(admin, console_log):
    """The downloaded proof verifies without the database."""
    response = admin.get(f"/console/events/{console_log.blocked_id}/proof.json")
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    ok, reason = check_proof_document(response.json())
    assert ok, reason


def test_tenant_bound_key_cannot_reach_another_tenant(acme, console_log):
    """An acme admin sees acme only; a globex event, its proof and a globex filter are out
    of reach by URL."""
    ids = _event_ids(acme.get("/console/").text)
    assert ids
    assert console_log.globex_id not in ids
    assert acme.get(f"/console/events/{console_log.globex_id}").status_code == 404
    assert acme.get(f"/console/events/{console_log.globex_id}/proof.json").status_code == 404
    other = acme.get("/console/", params={"tenant": "globex"}).text
    assert "not visible" in other
    assert _event_ids(other) == []
    exported = acme.get("/console/export.jsonl").text.splitlines()
    assert {json.loads(line)["tenant"] for line in exported} == {"acme"}
    assert acme.get("/console/chains").status_code == 403


def test_verify_runs_in_the_background_to_a_verdict(admin, console_log):
    """Starting verify from the chain page ends in 'intact' with every event counted."""
    assert admin.post("/console/chains/verify", follow_redirects=False).status_code == 303
    for _ in range(2000):
        state = admin.get("/console/chains/verify.json").json()
        if state["state"] != "running":
            break
    assert state["state"] == "intact", state
    assert state["events_checked"] == state["done"] == console_log.total
    assert "head seq" in admin.get("/console/chains").text


def test_charts_are_inline_svg(admin):
    """Four charts render as SVG with the actions of the log in the stacked one."""
    html = admin.get("/console/charts", params={"since": "2026-01-01"}).text
    assert html.count("<svg") == 4
    assert "block" in html
    assert "pii.email" in html
    assert "p99" in html
    assert "per hour" in html


def test_policy_versions_and_semantic_diff(admin, console_log):
    """Both versions are listed; the diff names the rule version 2 added."""
    v1, v2 = console_log.digests
    listing = admin.get("/console/policies").text
    assert v1[:16] in listing
    assert v2[:16] in listing
    diff = admin.get("/console/policies/diff", params={"a": v1, "b": v2}).text
    assert "injection.ignore" in diff
    assert "Rules added" in diff
    text = admin.get(f"/console/policies/{v2}").text
    assert "ignore (?:all )?previous instructions" in text


@given(
    text=st.text(max_size=40),
    spans=st.lists(st.tuples(st.integers(-5, 50), st.integers(-5, 50)), max_size=6),
)
def test_highlight_segments_rebuild_the_text(text, spans):
    """Segments always concatenate to the text; a marked character lies in a valid span."""
    findings = tuple(
        {"stage": "input", "rule_id": f"r{i}", "span": [a, b]} for i, (a, b) in enumerate(spans)
    )
    segments = highlight(text, findings, "input")
    assert "".join(s.text for s in segments) == text
    position = 0
    for segment in segments:
        for rule in segment.rules:
            a, b = spans[int(rule[1:])]
            assert 0 <= a <= position
            assert position + len(segment.text) <= b <= len(text)
        position += len(segment.text)
