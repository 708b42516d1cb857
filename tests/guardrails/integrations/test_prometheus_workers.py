"""``/metrics`` under ``guardrails serve --workers 2``: every scrape, whichever worker
answers it, reads the total of every worker's counters (prometheus_client multiprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from guardrails.proxy.keys import add_key
from guardrails.proxy.metrics import Metrics


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_single_process_metrics_count_and_render():
    """In one process, counters count, histograms bucket, and no *_created series leak."""
    metrics = Metrics()
    labels = (("route", "/v1/models"), ("status", "200"))
    for _ in range(3):
        metrics.inc("guardrails_requests_total", labels)
    metrics.observe("guardrails_audit_commit_seconds", 0.003)
    text = metrics.render()
    assert metrics.counter_value("guardrails_requests_total", labels) == 3
    assert _sample(text, "guardrails_requests_total", route="/v1/models", status="200") == 3
    assert _sample(text, "guardrails_audit_commit_seconds_bucket", le="0.005") == 1
    assert _sample(text, "guardrails_audit_commit_seconds_bucket", le="0.0025") == 0
    assert "_created" not in text
    assert Metrics().counter_value("guardrails_requests_total", labels) == 0  # no shared state


@pytest.mark.slow
@pytest.mark.timeout(900)  # two workers start slowly when every core is busy
def test_counters_add_up_across_workers(tmp_path: Path):
    """30 requests spread over two workers read 30 in each of six scrapes, and the scrape
    counter rises by exactly one per scrape (never alternating between workers' counts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDRAILS_", "PROMETHEUS"))}
    keys_file = tmp_path / "keys.json"
    admin, _ = add_key(keys_file, tenant="*", admin=True)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from guardrails.cli import main; main()",
                "serve",
                "--generator",
                "example",
                "--keys",
                str(keys_file),
                "--audit",
                f"sqlite:///{tmp_path / 'audit.db'}",
                "--port",
                "0",
                "--workers",
                "2",
                "--policy",
                "rules-only",  # no classifier to load: the workers start sooner
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 600  # generous: a condition, not a time window
        port = None
        while port is None:
            assert process.poll() is None, log_path.read_text()
            found = re.search(r"http://127\.0\.0\.1:(\d+)", log_path.read_text())
            port = int(found.group(1)) if found else None
            assert time.monotonic() < deadline, "no banner"
            time.sleep(0.1)
        root = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {admin}"}
        while True:
            try:
                if httpx.get(f"{root}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.1)
        for _ in range(30):  # a new connection each: the kernel spreads them over workers
            assert httpx.get(f"{root}/readyz", headers=headers).status_code == 200
        scraped = []
        for _ in range(6):
            text = httpx.get(f"{root}/metrics", headers=headers).text
            ready = _sample(text, "guardrails_requests_total", route="/readyz", status="200")
            scrapes = _sample(text, "guardrails_requests_total", route="/metrics", status="200")
            scraped.append((ready, scrapes))
        assert [r for r, _ in scraped] == [30.0] * 6, scraped
        assert [s for _, s in scraped] == [float(i) for i in range(6)], scraped
    finally:
        process.terminate()
        process.wait(60)
