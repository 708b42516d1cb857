"""Loss-threshold membership inference (Yeom et al. 2018) and its advantage.

The attacker guesses "member" when a record's loss is below a threshold. Its advantage is
the best TPR − FPR over all thresholds (members vs an equal number of non-members): 0 for a
model whose losses do not depend on membership, 1 for one that separates them perfectly.
DP with (ε, δ) bounds it by (e^ε − 1 + 2δ)/(e^ε + 1). The best threshold is chosen on the
same data it is scored on, so this is an upper estimate of what an attacker gets.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def attack_advantage(
    member_losses: npt.NDArray[np.float64], nonmember_losses: npt.NDArray[np.float64]
) -> float:
    """max over thresholds t of P(loss ≤ t | member) − P(loss ≤ t | non-member)."""
    m = np.sort(np.asarray(member_losses, dtype=np.float64))
    o = np.sort(np.asarray(nonmember_losses, dtype=np.float64))
    thresholds = np.concatenate([m, o])
    tpr = np.searchsorted(m, thresholds, side="right") / len(m)
    fpr = np.searchsorted(o, thresholds, side="right") / len(o)
    return float(max(0.0, float(np.max(tpr - fpr))))


def dp_advantage_bound(epsilon: float, delta: float) -> float:
    """The most any membership attack can gain against an (ε, δ)-DP training run."""
    return min(1.0, (math.exp(epsilon) - 1 + 2 * delta) / (math.exp(epsilon) + 1))


__all__ = [
    "attack_advantage",
    "dp_advantage_bound",
]
