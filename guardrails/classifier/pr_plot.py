"""Precision-recall curves as a plot file: SVG written directly, PNG through matplotlib.

SVG needs no plotting dependency, so `guardrails eval --plot PR.svg` always works; a ``.png``
path needs matplotlib installed and says so if it is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import numpy.typing as npt

from guardrails.classifier.errors import ClassifierError

Curve = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]  # (precision, recall)
_COLOURS = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
]


def render_svg(curves: Mapping[str, Curve], *, title: str) -> str:
    """An SVG with one PR curve per category (recall on x, precision on y)."""
    w, h, pad = 640, 480, 50
    pw, ph = w - 2 * pad - 150, h - 2 * pad

    def xy(r: float, p: float) -> str:
        return f"{pad + r * pw:.1f},{pad + (1 - p) * ph:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{pad}" y="25" font-size="14">{escape(title)}</text>',
        f'<rect x="{pad}" y="{pad}" width="{pw}" height="{ph}" fill="none" stroke="black"/>',
    ]
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{pad + t * pw - 8:.0f}" y="{pad + ph + 16}">{t:g}</text>')
        parts.append(f'<text x="{pad - 30}" y="{pad + (1 - t) * ph + 4:.0f}">{t:g}</text>')
    parts.append(f'<text x="{pad + pw / 2 - 20:.0f}" y="{h - 10}">recall</text>')
    parts.append(f'<text x="12" y="{pad + ph / 2:.0f}">precision</text>')
    for i, (name, (precision, recall)) in enumerate(curves.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        if len(recall):
            pts = [xy(0.0, float(precision[0]))]
            pts += [xy(float(r), float(p)) for p, r in zip(precision, recall, strict=True)]
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                f'points="{" ".join(pts)}"/>'
            )
        ly = pad + 10 + 18 * i
        parts.append(
            f'<rect x="{pad + pw + 12}" y="{ly - 9}" width="12" height="4" fill="{colour}"/>'
        )
        parts.append(f'<text x="{pad + pw + 30}" y="{ly - 4}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_plot(path: Path, curves: Mapping[str, Curve], *, title: str) -> None:
    """Write the curves to ``path``; the suffix (.svg or .png) picks the format.

    Raises:
        ClassifierError: an unsupported suffix, or .png without matplotlib.
    """
    suffix = path.suffix.lower()
    if suffix == ".svg":
        path.write_text(render_svg(curves, title=title), encoding="utf-8")
        return
    if suffix != ".png":
        raise ClassifierError(f"plot path must end in .svg or .png, got {path.name!r}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ClassifierError(
            "a .png plot needs matplotlib (pip install matplotlib); use a .svg path instead"
        ) from exc
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, (precision, recall) in curves.items():
        ax.step(recall, precision, where="post", label=name)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.legend(loc="lower left")
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = [
    "Curve",
    "render_svg",
    "write_plot",
]
