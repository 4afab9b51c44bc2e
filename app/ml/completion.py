"""Completing a pool: which items the model may auto-accept so that the WHOLE pool ends at or
above a target accuracy.

A pool is complete when every item is either answered by a human or auto-accepted. Human answers
count as correct; the pool may hold at most (1 - target) * pool size wrong labels (the error
budget). The model's auto-accepts spend that budget: each accepted item costs its probability of
being wrong, read from a calibration map fitted on out-of-fold probabilities of the labeled items
(confidence -> P(correct)). The rule accepts the most probably correct items while the expected
errors, plus a safety margin, stay within what is left of the budget.

The safety margin has two parts, each against a different way to be wrong:

* thin calibration data: every level of the isotonic map is shrunk by one pseudo-error
  (k correct of n gives k / (n + 1)), so a level fitted on few items cannot claim certainty; a
  level of 1,000 correct items claims 0.999, one of 10 claims 0.91;
* chance: given calibrated probabilities, the realized number of errors among the accepts is a
  sum of Bernoulli draws; the rule keeps expected errors + z * their standard deviation within
  the budget (z = 1.645: the budget holds with about 95% probability if the map is right).

Neither covers a calibration map that is wrong for the pool (the labeled items are not a random
sample of it when batches are chosen by uncertainty): the replay in app/ml/simulation.py measures
the realized accuracy, which is the only honest check.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.ml.selection import Features

# One-sided 95% normal quantile: the realized errors stay within the budget with ~95%
# probability when the calibration map is right.
DEFAULT_Z = 1.645
# Pseudo-errors added to every level of the calibration map (k correct of n -> k / (n + shrink)).
DEFAULT_SHRINK = 1.0


@dataclass(frozen=True)
class Calibration:
    """A step function from top-label confidence to P(correct), non-decreasing.

    edges[j] is the lowest confidence of level j (ascending); a confidence c gets the value of
    the last level whose edge is <= c, and the lowest level below the first edge.
    """

    edges: np.ndarray
    p_correct: np.ndarray
    n_calibration: int

    def __call__(self, confidence: np.ndarray) -> np.ndarray:
        c = np.asarray(confidence, dtype=np.float64)
        if self.edges.shape[0] == 0:
            return np.zeros_like(c)
        level = np.searchsorted(self.edges, c, side="right") - 1
        result: np.ndarray = self.p_correct[np.clip(level, 0, self.edges.shape[0] - 1)]
        return result


def _pool_adjacent(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted non-decreasing least-squares fit of values (sklearn's isotonic regression)."""
    # Imported on first use: docs/design.md, "Import weight".
    from sklearn.isotonic import IsotonicRegression

    if values.shape[0] == 0:
        return values
    fitted: np.ndarray = IsotonicRegression(increasing=True).fit_transform(
        np.arange(values.shape[0], dtype=np.float64), values, sample_weight=weights
    )
    return fitted


def fit_calibration(
    confidence: np.ndarray, correct: np.ndarray, *, shrink: float = DEFAULT_SHRINK
) -> Calibration:
    """The map confidence -> P(correct) from held-out (confidence, was the top label right) pairs.

    Isotonic regression of correctness on confidence, then every level (a run of equal fitted
    values) is shrunk to k / (n + shrink) and the levels are made non-decreasing again (a small
    level shrinks more, which can put it below a lower one). No data: P(correct) = 0 everywhere,
    so nothing is accepted.
    """
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if c.shape != y.shape or c.ndim != 1:
        raise ValueError("confidence and correct must be vectors of the same length")
    if shrink < 0:
        raise ValueError(f"shrink must be >= 0, got {shrink}")
    if c.shape[0] == 0:
        return Calibration(edges=np.zeros(0), p_correct=np.zeros(0), n_calibration=0)
    order = np.argsort(c, kind="stable")
    c, y = c[order], y[order]
    fitted = _pool_adjacent(y, np.ones_like(y))
    # Levels: runs of equal fitted values; equal confidences always share a level.
    starts = np.flatnonzero(np.concatenate([[True], np.diff(fitted) > 1e-12]))
    sizes = np.diff(np.concatenate([starts, [c.shape[0]]]))
    hits = np.add.reduceat(y, starts)
    shrunk = hits / (sizes + shrink)
    levels = _pool_adjacent(shrunk, sizes.astype(np.float64))
    return Calibration(edges=c[starts], p_correct=levels, n_calibration=int(c.shape[0]))


def error_budget(*, pool_size: int, target: float, committed_errors: float = 0.0) -> float:
    """Wrong labels the pool may still take: (1 - target) * pool size minus the expected errors
    already committed (earlier auto-accepts). Human answers count as correct."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be in (0, 1], got {target}")
    if pool_size < 0:
        raise ValueError(f"pool_size must be >= 0, got {pool_size}")
    return (1.0 - target) * pool_size - committed_errors


def accept_within_budget(
    p_correct: np.ndarray, budget: float, *, z: float = DEFAULT_Z
) -> np.ndarray:
    """Positions of the items to auto-accept, most probably correct first.

    The largest prefix of the items sorted by P(correct) (descending) whose expected errors
    sum(1 - p) plus z * sqrt(sum p (1 - p)) stay within the budget. Both sums only grow with
    the prefix, so the prefix is found by one search.
    """
    p = np.clip(np.asarray(p_correct, dtype=np.float64), 0.0, 1.0)
    order = np.argsort(-p, kind="stable")
    q = p[order]
    expected = np.cumsum(1.0 - q)
    spread = np.sqrt(np.cumsum(q * (1.0 - q)))
    needed = expected + z * spread
    # needed is non-decreasing: the count of prefixes within the budget is the prefix length.
    count = int(np.searchsorted(needed, budget + 1e-9, side="right"))
    accepted: np.ndarray = order[:count]
    return accepted


def expected_errors(p_correct: np.ndarray) -> float:
    return float(np.sum(1.0 - np.clip(np.asarray(p_correct, dtype=np.float64), 0.0, 1.0)))


def out_of_fold_probabilities(
    x: Features,
    y: np.ndarray,
    n_classes: int,
    *,
    make_classifier: Callable[[], Any],
    folds: int,
    seed: int,
) -> np.ndarray:
    """Cross-validated class probabilities of the labeled items (labels are class codes): every
    item is scored by a model that did not see it. A class with fewer items than folds is left to
    the folds that hold it; a fold's model missing a class gives it probability 0."""
    from sklearn.model_selection import StratifiedKFold

    n = y.shape[0]
    result = np.zeros((n, n_classes))
    counts = np.bincount(y, minlength=n_classes)
    k = int(min(folds, max(2, counts[counts > 0].max())))
    # Classes smaller than k cannot be stratified: KFold-like spread for them is fine here.
    import warnings

    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(splitter.split(np.zeros((n, 1)), y))
    for train, test in splits:
        if np.unique(y[train]).shape[0] < 2:
            continue
        classifier = make_classifier()
        classifier.fit(x[train], y[train])
        columns = np.asarray(classifier.classes_, dtype=np.int64)
        result[np.ix_(test, columns)] = classifier.predict_proba(x[test])
    return result


def calibration_from_probabilities(
    probabilities: np.ndarray, y: np.ndarray, *, shrink: float = DEFAULT_SHRINK
) -> Calibration:
    """fit_calibration on the top label's confidence and whether it was the true label."""
    top = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    return fit_calibration(confidence, top == y, shrink=shrink)
