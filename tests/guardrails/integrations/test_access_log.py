"""The proxy writes one ``http_request`` log line per request, carrying the request id the
client saw in ``X-Guardrails-Request-Id``."""

from __future__ import annotations

from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from guardrails.logs import configure_logging
from guardrails.proxy import create_app
from guardrails.proxy.config import ProxyConfig


def test_one_access_line_per_request_with_its_request_id(tmp_path):
    """Three requests, three lines; each line's request id is the response header's."""
    config = ProxyConfig(
        upstream="http://127.0.0.1:9/v1",
        allow_anonymous=True,
        audit=f"sqlite:///{tmp_path / 'a.db'}",
    )
    configure_logging(level="info")  # access lines are info (GUARDRAILS_LOG_LEVEL=info)
    try:
        with TestClient(create_app(config)) as client, capture_logs() as logs:
            ids = [
                client.get("/healthz").headers["x-guardrails-request-id"],
                client.get("/nope").headers["x-guardrails-request-id"],
                client.get("/readyz").headers["x-guardrails-request-id"],
            ]
    finally:
        configure_logging()
    lines = [entry for entry in logs if entry["event"] == "http_request"]
    assert [line["request_id"] for line in lines] == ids
    assert [line["status"] for line in lines][:2] == [200, 404]
    assert lines[1]["path"] == "/nope"
    assert all(line["method"] == "GET" and line["duration_ms"] >= 0 for line in lines)
