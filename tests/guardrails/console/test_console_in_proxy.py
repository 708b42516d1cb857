"""The proxy serves the console at /console: its own login, while the API keeps needing
a bearer key."""

from __future__ import annotations

from fastapi.testclient import TestClient

from guardrails.proxy import create_app
from guardrails.proxy.config import ProxyConfig


def test_proxy_serves_the_console_and_still_guards_its_api(console_log):
    """/console logs in with an admin key and lists events; /v1/models without a key is
    still 401, and a console session cookie is no API key."""
    config = ProxyConfig(
        upstream="http://127.0.0.1:9/v1",
        keys_file=str(console_log.keys_file),
        audit=console_log.url,
    )
    with TestClient(create_app(config)) as client:
        assert client.get("/console/", follow_redirects=False).status_code == 303
        login = client.post(
            "/console/login", data={"key": console_log.admin_key}, follow_redirects=False
        )
        assert login.status_code == 303
        page = client.get("/console/")
        assert page.status_code == 200
        assert page.text.count("data-event=") == console_log.total
        assert client.get("/v1/models").status_code == 401
        assert client.get("/consolex").status_code == 401  # only /console itself is open
