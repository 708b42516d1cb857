"""Server-rendered SVG charts: stacked bars, horizontal bars and line series.

No JavaScript and nothing fetched at run time: each function returns one ``<svg>`` element
as a string (labels escaped), sized to scale with the page.
"""

from __future__ import annotations

from html import escape

__all__ = ["ACTION_COLORS", "hbar_chart", "line_chart", "stacked_bar_chart"]

ACTION_COLORS = {
    "block": "#c0392b",
    "redact": "#e67e22",
    "flag": "#f1c40f",
    "allow": "#27ae60",
}
_PALETTE = ("#2e86de", "#8e44ad", "#16a085", "#d35400", "#2c3e50", "#c0392b", "#7f8c8d")
_W, _H, _LEFT, _BOTTOM, _TOP = 720, 260, 48, 46, 12


def _color(name: str, index: int) -> str:
    return ACTION_COLORS.get(name, _PALETTE[index % len(_PALETTE)])


def _legend(names: list[str]) -> str:
    parts = []
    x = _LEFT
    for i, name in enumerate(names):
        parts.append(
            f'<rect x="{x}" y="{_H - 14}" width="10" height="10" fill="{_color(name, i)}"/>'
            f'<text x="{x + 14}" y="{_H - 5}" class="legend">{escape(name)}</text>'
        )
        x += 24 + 7 * len(name)
    return "".join(parts)


def _short(label: str, previous: str | None) -> str:
    """``2026-01-15 08:00`` -> ``08:00`` (with the date where the day changes);
    ``2026-01-15`` -> ``01-15``."""
    if " " not in label:
        return label[5:]
    day, hour = label.split(" ", 1)
    return hour if previous is not None and previous.startswith(day) else f"{day[5:]} {hour}"


def _x_labels(labels: list[str], slot: float) -> str:
    every = -(-len(labels) // 9)  # at most nine labels fit under a chart
    parts = []
    previous: str | None = None
    for i, label in enumerate(labels):
        if i % every == 0:
            x = _LEFT + slot * (i + 0.5)
            parts.append(
                f'<text x="{x:.1f}" y="{_H - _BOTTOM + 14}" class="tick" '
                f'text-anchor="middle">{escape(_short(label, previous))}</text>'
            )
            previous = label
    return "".join(parts)


def _frame(title: str, body: str, y_max_label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" class="chart" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<line x1="{_LEFT}" y1="{_H - _BOTTOM}" x2="{_W}" y2="{_H - _BOTTOM}" class="axis"/>'
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_H - _BOTTOM}" class="axis"/>'
        f'<text x="{_LEFT - 4}" y="{_TOP + 8}" class="tick" text-anchor="end">'
        f"{escape(y_max_label)}</text>"
        f'<text x="{_LEFT - 4}" y="{_H - _BOTTOM}" class="tick" text-anchor="end">0</text>'
        f"{body}</svg>"
    )


def stacked_bar_chart(title: str, labels: list[str], series: dict[str, list[int]]) -> str:
    """One bar per label, stacked by series (e.g. events per hour by action)."""
    top = max((sum(values) for values in zip(*series.values(), strict=True)), default=0)
    slot = (_W - _LEFT) / max(1, len(labels))
    height = _H - _BOTTOM - _TOP
    parts = []
    for i, label in enumerate(labels):
        y = float(_H - _BOTTOM)
        for j, (name, values) in enumerate(series.items()):
            if not values[i] or not top:
                continue
            h = height * values[i] / top
            y -= h
            parts.append(
                f'<rect x="{_LEFT + slot * i + slot * 0.1:.1f}" y="{y:.1f}" '
                f'width="{slot * 0.8:.1f}" height="{h:.1f}" fill="{_color(name, j)}">'
                f"<title>{escape(label)} {escape(name)}: {values[i]}</title></rect>"
            )
    body = "".join(parts) + _x_labels(labels, slot) + _legend(list(series))
    return _frame(title, body, str(top))


def hbar_chart(title: str, items: list[tuple[str, int]]) -> str:
    """Horizontal bars, largest first (e.g. the top rules)."""
    top = max((n for _, n in items), default=0)
    row = 22
    height = max(60, row * len(items) + 20)
    parts = []
    for i, (name, n) in enumerate(items):
        w = (_W - 260) * n / top if top else 0
        y = 10 + i * row
        parts.append(
            f'<text x="196" y="{y + 14}" class="tick" text-anchor="end">{escape(name[:32])}</text>'
            f'<rect x="200" y="{y}" width="{w:.1f}" height="{row - 6}" fill="{_PALETTE[0]}">'
            f"<title>{escape(name)}: {n}</title></rect>"
            f'<text x="{204 + w:.1f}" y="{y + 14}" class="tick">{n}</text>'
        )
    if not items:
        parts.append('<text x="10" y="30" class="tick">no findings in this range</text>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {height}" class="chart" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        + "".join(parts)
        + "</svg>"
    )


def line_chart(
    title: str,
    labels: list[str],
    series: dict[str, list[float | None]],
    *,
    y_max: float | None = None,
    unit: str = "",
) -> str:
    """One polyline per series over the labels; ``None`` values break the line."""
    values = [v for vs in series.values() for v in vs if v is not None]
    top = y_max if y_max is not None else max(values, default=0.0)
    slot = (_W - _LEFT) / max(1, len(labels))
    height = _H - _BOTTOM - _TOP
    parts = []
    for j, (name, points) in enumerate(series.items()):
        runs: list[list[str]] = [[]]
        for i, value in enumerate(points):
            if value is None:
                runs.append([])
                continue
            x = _LEFT + slot * (i + 0.5)
            y = _H - _BOTTOM - (height * value / top if top else 0)
            runs[-1].append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{_color(name, j)}">'
                f"<title>{escape(name)} {escape(labels[i])}: {value:.3g}{escape(unit)}</title>"
                "</circle>"
            )
        for run in runs:
            if len(run) > 1:
                parts.append(
                    f'<polyline points="{" ".join(run)}" fill="none" '
                    f'stroke="{_color(name, j)}" stroke-width="2"/>'
                )
    top_label = f"{top:.3g}{unit}" if top else "0"
    body = "".join(parts) + _x_labels(labels, slot) + _legend(list(series))
    return _frame(title, body, top_label)
