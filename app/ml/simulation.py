"""Offline replay of active learning on already-labeled data: learning curves and label savings.

The replay answers "would a strategy have saved annotation effort on this data?" before the
project commits annotators to it; gains vary by data set and seed, so they must be measured.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from app.ml.selection import STRATEGIES, Features, choose_batch, priority
from app.ml.uncertainty import summarize

Curve = list[tuple[int, float]]

# Accuracies are ratios of counts; the tolerance keeps an equal accuracy from missing the target
# because of float rounding.
_EPS = 1e-12


def _stratified_order(codes: np.ndarray, rng: np.random.Generator, *, one_each: bool) -> np.ndarray:
    """Positions ordered so that every prefix holds the classes in about their pool proportions.

    Each item's key is its (random) rank within its class over the class size, so taking the m
    smallest keys takes about m * share items of every class. With one_each, the first item of
    every class comes before everything else, so small prefixes still cover as many classes as
    possible.
    """
    n = codes.shape[0]
    shuffled = rng.permutation(n)
    by_class = shuffled[np.argsort(codes[shuffled], kind="stable")]
    counts = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.float64)
    rank[by_class] = np.arange(n) - np.repeat(starts, counts)
    keys = (rank + 0.5) / counts[codes]
    if one_each:
        keys[rank == 0] -= 1.0
    # Sorting the shuffled positions by key breaks equal keys at random rather than by index.
    order: np.ndarray = shuffled[np.argsort(keys[shuffled], kind="stable")]
    return order


def learning_curves(
    features: Features,
    labels: np.ndarray,
    *,
    strategies: Sequence[str],
    seed_size: int,
    batch_size: int,
    budget: int,
    test_fraction: float = 0.2,
    seed: int = 0,
    make_classifier: Callable[[], Any],
) -> dict[str, Curve]:
    """Pool-based active-learning replay: (labels used, test accuracy) after every fit.

    A stratified test split is held out; every strategy starts from the same stratified seed set
    drawn from the rest (the pool) and with identically seeded randomness, then repeatedly fits a
    fresh make_classifier() (any object with fit, predict and predict_proba, and classes_) on its
    labeled items, scores the unlabeled pool and adds a batch from choose_batch (no random
    share), until `budget` labels, seed included, are used or the pool is exhausted.
    """
    for strategy in strategies:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    y = np.asarray(labels)
    n = features.shape[0]
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError("labels must be a vector with one entry per feature row")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    classes, codes = np.unique(y, return_inverse=True)
    if classes.shape[0] < 2:
        raise ValueError("labels must hold at least two classes")
    # A classifier cannot be fit on one class; the seed takes one item per class first, so two
    # items are enough to give it two.
    if not 2 <= seed_size <= budget:
        raise ValueError(f"need 2 <= seed_size <= budget, got {seed_size} and {budget}")

    rng = np.random.default_rng(seed)
    split = _stratified_order(codes, rng, one_each=False)
    n_test = max(1, round(test_fraction * n))
    test, pool = np.sort(split[:n_test]), np.sort(split[n_test:])
    if seed_size > pool.shape[0]:
        raise ValueError(f"seed_size {seed_size} exceeds the pool of {pool.shape[0]} items")
    seed_positions = _stratified_order(codes[pool], rng, one_each=True)[:seed_size]
    x_pool, y_pool = features[pool], codes[pool]
    x_test, y_test = features[test], codes[test]
    strategy_seed = int(rng.integers(2**63))

    curves: dict[str, Curve] = {}
    for strategy in strategies:
        # Same seed for every strategy: differences between curves come from the strategy alone.
        strategy_rng = np.random.default_rng(strategy_seed)
        labeled = np.zeros(pool.shape[0], dtype=bool)
        labeled[seed_positions] = True
        curve: Curve = []
        while True:
            chosen = np.flatnonzero(labeled)
            classifier = make_classifier()
            classifier.fit(x_pool[chosen], y_pool[chosen])
            accuracy = float(np.mean(np.asarray(classifier.predict(x_test)) == y_test))
            curve.append((int(chosen.shape[0]), accuracy))
            unlabeled = np.flatnonzero(~labeled)
            room = budget - chosen.shape[0]
            if room <= 0 or unlabeled.shape[0] == 0:
                break
            x_unlabeled = x_pool[unlabeled]
            # The labeled set may lack classes: place the classifier's columns at their codes and
            # leave the missing classes at probability 0.
            probabilities = np.zeros((unlabeled.shape[0], classes.shape[0]))
            columns = np.asarray(classifier.classes_, dtype=np.int64)
            probabilities[:, columns] = classifier.predict_proba(x_unlabeled)
            picks, _ = choose_batch(
                priority(summarize(probabilities), strategy),
                min(batch_size, room),
                strategy=strategy,
                rng=strategy_rng,
                random_share=0.0,
                features=x_unlabeled,
            )
            labeled[unlabeled[picks]] = True
        curves[strategy] = curve
    return curves


def labels_to_reach(curve: Sequence[tuple[int, float]], target_accuracy: float) -> int | None:
    """Fewest labels at which the curve's accuracy reaches the target; None if it never does."""
    for n_labels, accuracy in sorted(curve):
        if accuracy >= target_accuracy - _EPS:
            return n_labels
    return None


def savings(
    curves: Mapping[str, Sequence[tuple[int, float]]],
    baseline: str = "random",
    *,
    at_labels: int,
) -> dict[str, float | None]:
    """Labels each strategy needs to match the baseline's accuracy at `at_labels`, / at_labels.

    The baseline's accuracy at `at_labels` is that of its last point with at most `at_labels`
    labels (the model a project would have had then). 0.5 means half the labels; None means the
    strategy never got there within its curve.
    """
    if at_labels < 1:
        raise ValueError(f"at_labels must be >= 1, got {at_labels}")
    if baseline not in curves:
        raise ValueError(f"baseline {baseline!r} has no curve")
    reached = [point for point in sorted(curves[baseline]) if point[0] <= at_labels]
    if not reached:
        raise ValueError(f"the baseline curve has no point at or below {at_labels} labels")
    target = reached[-1][1]
    result: dict[str, float | None] = {}
    for strategy, curve in curves.items():
        needed = labels_to_reach(curve, target)
        result[strategy] = None if needed is None else needed / at_labels
    return result
