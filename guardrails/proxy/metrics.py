"""Prometheus metrics in the text exposition format, without a client library.

One `Metrics` per app (per worker process: scrape each worker, or aggregate in
Prometheus). Counters and fixed-bucket histograms only; updates are plain dict operations
on the event loop's thread, so no locks are needed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import ClassVar

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _render_labels(labels: Labels, extra: Iterable[tuple[str, str]] = ()) -> str:
    pairs = [*labels, *extra]
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


class Metrics:
    """The proxy's metrics.

    Counters: ``guardrails_requests_total{route,status}``,
    ``guardrails_actions_total{stage,action}``, ``guardrails_rule_findings_total{rule,action}``,
    ``guardrails_policy_reloads_total{outcome}``.
    Histograms (seconds): ``guardrails_request_seconds{route}``,
    ``guardrails_stage_seconds{stage}`` (the guard's own timing of each check),
    ``guardrails_upstream_seconds{route}``, ``guardrails_audit_commit_seconds``.
    """

    _HELP: ClassVar[dict[str, str]] = {
        "guardrails_requests_total": "HTTP requests by route and status.",
        "guardrails_actions_total": "Guard verdicts by stage and action.",
        "guardrails_rule_findings_total": "Findings by rule and action (shadow included).",
        "guardrails_policy_reloads_total": "Policy reload attempts by outcome.",
        "guardrails_request_seconds": "Time to answer (to the end of the stream).",
        "guardrails_stage_seconds": "Time the guard spent checking each stage.",
        "guardrails_upstream_seconds": "Time the upstream took (to its last byte).",
        "guardrails_audit_commit_seconds": "Time to commit one audit event.",
    }
    _COUNTERS = (
        "guardrails_requests_total",
        "guardrails_actions_total",
        "guardrails_rule_findings_total",
        "guardrails_policy_reloads_total",
    )
    _HISTOGRAMS = (
        "guardrails_request_seconds",
        "guardrails_stage_seconds",
        "guardrails_upstream_seconds",
        "guardrails_audit_commit_seconds",
    )

    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = {
            name: defaultdict(float) for name in self._COUNTERS
        }
        self._histograms: dict[str, dict[Labels, list[float]]] = {
            name: {} for name in self._HISTOGRAMS
        }

    def inc(self, name: str, labels: Labels = (), value: float = 1.0) -> None:
        """Add ``value`` to the counter ``name`` with ``labels``."""
        self._counters[name][labels] += value

    def observe(self, name: str, seconds: float, labels: Labels = ()) -> None:
        """Record one observation in the histogram ``name``."""
        series = self._histograms[name].get(labels)
        if series is None:
            # one slot per bucket, then +Inf, sum
            series = self._histograms[name][labels] = [0.0] * (len(_BUCKETS) + 2)
        for index, bound in enumerate(_BUCKETS):
            if seconds <= bound:
                series[index] += 1
                break
        else:
            series[len(_BUCKETS)] += 1
        series[-1] += seconds

    def counter_value(self, name: str, labels: Labels = ()) -> float:
        """The current value of a counter (0 when never incremented); for tests."""
        return self._counters[name].get(labels, 0.0)

    def render(self) -> str:
        """The text exposition format (``text/plain; version=0.0.4``)."""
        lines: list[str] = []
        for name in self._COUNTERS:
            lines.append(f"# HELP {name} {self._HELP[name]}")
            lines.append(f"# TYPE {name} counter")
            for labels, value in sorted(self._counters[name].items()):
                lines.append(f"{name}{_render_labels(labels)} {value:g}")
        for name in self._HISTOGRAMS:
            lines.append(f"# HELP {name} {self._HELP[name]}")
            lines.append(f"# TYPE {name} histogram")
            for labels, series in sorted(self._histograms[name].items()):
                cumulative = 0.0
                for index, bound in enumerate(_BUCKETS):
                    cumulative += series[index]
                    le = _render_labels(labels, [("le", f"{bound:g}")])
                    lines.append(f"{name}_bucket{le} {cumulative:g}")
                cumulative += series[len(_BUCKETS)]
                lines.append(
                    f"{name}_bucket{_render_labels(labels, [('le', '+Inf')])} {cumulative:g}"
                )
                lines.append(f"{name}_sum{_render_labels(labels)} {series[-1]:.6f}")
                lines.append(f"{name}_count{_render_labels(labels)} {cumulative:g}")
        return "\n".join(lines) + "\n"
