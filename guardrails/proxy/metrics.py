"""Prometheus metrics through ``prometheus_client``, correct across ``--workers N``.

One `Metrics` per app, each with a registry of its own (no module-level state, so tests
can hold several apps in one process). Under ``serve --workers N`` the parent sets
``PROMETHEUS_MULTIPROC_DIR`` (see `multiprocess_dir_for_workers`) before any worker starts:
every worker then writes its samples to memory-mapped files in that folder, and any worker
answering ``/metrics`` sums every worker's counters and histograms, so one counter reads the
same total whichever worker is scraped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import ClassVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = [
    "MULTIPROC_ENV",
    "Labels",
    "Metrics",
    "multiprocess_dir_for_workers",
    "remove_multiprocess_dir",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Labels = tuple[tuple[str, str], ...]


def multiprocess_dir_for_workers() -> str:
    """Create an empty folder for the workers' metric files and export it in
    ``PROMETHEUS_MULTIPROC_DIR`` (call in the parent, before workers start; remove the
    folder with `shutil.rmtree` when they have stopped)."""
    folder = tempfile.mkdtemp(prefix="guardrails-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    return folder


def remove_multiprocess_dir(folder: str) -> None:
    """Delete the workers' metric files (after the workers have stopped)."""
    shutil.rmtree(folder, ignore_errors=True)
    if os.environ.get(MULTIPROC_ENV) == folder:
        del os.environ[MULTIPROC_ENV]


class Metrics:
    """The proxy's metrics.

    Counters: ``guardrails_requests_total{route,status}``,
    ``guardrails_actions_total{stage,action}``, ``guardrails_rule_findings_total{rule,action}``,
    ``guardrails_policy_reloads_total{outcome}``.
    Histograms (seconds): ``guardrails_request_seconds{route}``,
    ``guardrails_stage_seconds{stage}`` (the guard's own timing of each check),
    ``guardrails_upstream_seconds{route}``, ``guardrails_audit_commit_seconds``.
    """

    _COUNTERS: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {
        "guardrails_requests_total": ("HTTP requests by route and status.", ("route", "status")),
        "guardrails_actions_total": ("Guard verdicts by stage and action.", ("stage", "action")),
        "guardrails_rule_findings_total": (
            "Findings by rule and action (shadow included).",
            ("rule", "action"),
        ),
        "guardrails_policy_reloads_total": ("Policy reload attempts by outcome.", ("outcome",)),
    }
    _HISTOGRAMS: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {
        "guardrails_request_seconds": ("Time to answer (to the end of the stream).", ("route",)),
        "guardrails_stage_seconds": ("Time the guard spent checking each stage.", ("stage",)),
        "guardrails_upstream_seconds": ("Time the upstream took (to its last byte).", ("route",)),
        "guardrails_audit_commit_seconds": ("Time to commit one audit event.", ()),
    }

    def __init__(self) -> None:
        # ``*_created`` series are per process (multiprocess mode drops them): never emit
        # them, so one worker and N workers expose the same series.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters: dict[str, Counter] = {
            name: Counter(name, doc, labels, registry=self.registry)
            for name, (doc, labels) in self._COUNTERS.items()
        }
        self._histograms: dict[str, Histogram] = {
            name: Histogram(name, doc, labels, registry=self.registry, buckets=_BUCKETS)
            for name, (doc, labels) in self._HISTOGRAMS.items()
        }

    def inc(self, name: str, labels: Labels = (), value: float = 1.0) -> None:
        """Add ``value`` to the counter ``name`` with ``labels``."""
        counter = self._counters[name]
        (counter.labels(**dict(labels)) if labels else counter).inc(value)

    def observe(self, name: str, seconds: float, labels: Labels = ()) -> None:
        """Record one observation in the histogram ``name``."""
        histogram = self._histograms[name]
        (histogram.labels(**dict(labels)) if labels else histogram).observe(seconds)

    def counter_value(self, name: str, labels: Labels = ()) -> float:
        """The current value of a counter in this process (0 when never incremented)."""
        value = self.registry.get_sample_value(name, dict(labels))
        return 0.0 if value is None else value

    def render(self) -> str:
        """The text exposition format (``text/plain; version=0.0.4``): every worker's
        samples summed in multiprocess mode, this app's own otherwise."""
        folder = os.environ.get(MULTIPROC_ENV)
        if folder:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
            return generate_latest(registry).decode("utf-8")
        return generate_latest(self.registry).decode("utf-8")
