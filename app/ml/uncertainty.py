"""Per-item uncertainty scores (top label, confidence, margin, entropy) from class probabilities."""

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import entr


@dataclass(frozen=True)
class Uncertainty:
    """Row-aligned scores for n items; every field has shape (n,)."""

    top: np.ndarray
    """Column index of the most probable class (int64); ties go to the lowest index."""
    confidence: np.ndarray
    """Probability of the top class (float64)."""
    margin: np.ndarray
    """Top probability minus the runner-up (float64); equals confidence when K == 1."""
    entropy: np.ndarray
    """Shannon entropy divided by log(K), in [0, 1] (float64); 0 when K == 1."""


def summarize(probabilities: np.ndarray) -> Uncertainty:
    """Score an (n, K) probability matrix (float32 or float64) row by row."""
    if probabilities.ndim != 2 or probabilities.shape[1] == 0:
        raise ValueError(f"expected an (n, K) array with K >= 1, got shape {probabilities.shape}")
    # float64 so that sums, differences and the stored scores do not depend on the input dtype.
    p = np.asarray(probabilities, dtype=np.float64)
    n, k = p.shape
    top = np.argmax(p, axis=1)
    if k == 1:
        confidence = p[:, 0].copy()
        return Uncertainty(
            top=top, confidence=confidence, margin=confidence.copy(), entropy=np.zeros(n)
        )
    # A partial sort puts the two largest values in the last two columns, which is all the
    # margin needs; a full sort would be O(K log K) per row for nothing.
    two_largest = np.partition(p, k - 2, axis=1)[:, -2:]
    confidence = two_largest[:, 1].copy()
    margin = confidence - two_largest[:, 0]
    # entr() defines 0 * log(0) as 0, so zero probabilities cost no warning and no NaN; the clip
    # absorbs rounding in rows that sum to 1 only approximately.
    entropy = np.clip(entr(p).sum(axis=1) / math.log(k), 0.0, 1.0)
    return Uncertainty(top=top, confidence=confidence, margin=margin, entropy=entropy)
