"""Metrics and per-category thresholds, in numpy (no scikit-learn dependency).

Average precision follows the usual step-wise definition (sum over distinct thresholds of
recall gain times precision), which is what scikit-learn's ``average_precision_score``
computes, so figures are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def pr_curve(y: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Precision, recall and threshold at each distinct score, highest threshold first."""
    yv = np.asarray(y, dtype=np.float64)
    sv = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-sv, kind="mergesort")
    ys, ss = yv[order], sv[order]
    last = np.r_[np.flatnonzero(np.diff(ss) != 0), len(ss) - 1] if len(ss) else np.array([], int)
    tps = np.cumsum(ys)[last]
    fps = (last + 1) - tps
    total = tps[-1] if len(tps) else 0.0
    precision = np.divide(tps, tps + fps, out=np.zeros_like(tps), where=(tps + fps) > 0)
    recall = tps / total if total > 0 else np.zeros_like(tps)
    return precision, recall, ss[last]


def average_precision(y: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the precision-recall curve (step-wise); NaN when there are no positives."""
    precision, recall, _ = pr_curve(y, scores)
    if len(recall) == 0 or recall[-1] == 0:
        return float("nan")
    gains = np.diff(np.r_[0.0, recall])
    return float(np.sum(gains * precision))


@dataclass(frozen=True, slots=True)
class Threshold:
    """A calibrated threshold and how it was chosen (``precision_target`` or ``max_f1``)."""

    value: float
    method: str


def calibrate(y: npt.ArrayLike, scores: npt.ArrayLike, *, precision_target: float) -> Threshold:
    """The lowest threshold whose validation precision reaches the target.

    Lowest, because among thresholds meeting the precision target it has the highest recall.
    Falls back to the max-F1 threshold when no threshold reaches the target, and to 0.5 when
    the validation split has no positives for the category.
    """
    precision, recall, thresholds = pr_curve(y, scores)
    if len(recall) == 0 or recall[-1] == 0:
        return Threshold(0.5, "default_no_positives")
    ok = np.flatnonzero(precision >= precision_target)
    if len(ok):
        return Threshold(float(thresholds[ok[-1]]), f"precision>={precision_target:g}")
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(precision),
        where=(precision + recall) > 0,
    )
    return Threshold(float(thresholds[int(np.argmax(f1))]), "max_f1")


@dataclass(frozen=True, slots=True)
class CategoryMetrics:
    """Detection quality for one category at its threshold."""

    category: str
    threshold: float
    precision: float
    recall: float
    f1: float
    auprc: float
    support: int


def category_metrics(
    category: str, y: npt.ArrayLike, scores: npt.ArrayLike, threshold: float
) -> CategoryMetrics:
    """Precision, recall, F1 at ``score >= threshold``, and AUPRC, for one category."""
    yv = np.asarray(y, dtype=bool)
    pred = np.asarray(scores, dtype=np.float64) >= threshold
    tp = int(np.sum(pred & yv))
    fp = int(np.sum(pred & ~yv))
    fn = int(np.sum(~pred & yv))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return CategoryMetrics(
        category, threshold, p, r, f1, average_precision(yv, scores), int(yv.sum())
    )


def macro(metrics: Sequence[CategoryMetrics]) -> dict[str, float]:
    """Unweighted means over categories that have positives."""
    with_pos = [m for m in metrics if m.support > 0]
    if not with_pos:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "auprc": 0.0}
    return {
        "precision": float(np.mean([m.precision for m in with_pos])),
        "recall": float(np.mean([m.recall for m in with_pos])),
        "f1": float(np.mean([m.f1 for m in with_pos])),
        "auprc": float(np.mean([m.auprc for m in with_pos])),
    }


__all__ = [
    "CategoryMetrics",
    "FloatArray",
    "Threshold",
    "average_precision",
    "calibrate",
    "category_metrics",
    "macro",
    "pr_curve",
]
