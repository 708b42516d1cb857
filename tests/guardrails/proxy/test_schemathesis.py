"""Schemathesis against the proxy's own OpenAPI document: generated requests, real server,
never a 5xx. Bounded: a few examples per operation."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from guardrails.proxy import ProxyConfig, create_app

# The schema only; this app is never started (the `proxy` fixture serves the real one).
_SCHEMA_APP = create_app(ProxyConfig(upstream="http://127.0.0.1:9/v1", allow_anonymous=True))
schema = schemathesis.openapi.from_dict(_SCHEMA_APP.openapi())


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case, proxy, keys):
    """Whatever the schema allows (and a little it does not), the proxy answers below 500."""
    response = case.call(
        base_url=proxy.root, headers={"Authorization": f"Bearer {keys.admin_all}"}, timeout=10
    )
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
    if response.status_code >= 400:
        assert "error" in response.json()
