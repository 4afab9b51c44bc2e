"""Offline replay of active learning on already-labeled data: learning curves and label savings.

The replay answers "would a strategy have saved annotation effort on this data?" before the
project commits annotators to it; gains vary by data set and seed, so they must be measured.
"""

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.ml.completion import (
    DEFAULT_SHRINK,
    DEFAULT_Z,
    accept_within_budget,
    calibration_from_probabilities,
    error_budget,
    out_of_fold_probabilities,
)
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


def _checked_labels(
    features: Features, labels: np.ndarray, strategies: Sequence[str]
) -> np.ndarray:
    for strategy in strategies:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != features.shape[0]:
        raise ValueError("labels must be a vector with one entry per feature row")
    return y


def _checked_codes(
    y: np.ndarray, *, seed_size: int, batch_size: int, budget: int
) -> tuple[int, np.ndarray]:
    """(number of classes, class code of every item) once the replay sizes are known to be valid."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    classes, codes = np.unique(y, return_inverse=True)
    if classes.shape[0] < 2:
        raise ValueError("labels must hold at least two classes")
    # A classifier cannot be fit on one class; the seed takes one item per class first, so two
    # items are enough to give it two.
    if not 2 <= seed_size <= budget:
        raise ValueError(f"need 2 <= seed_size <= budget, got {seed_size} and {budget}")
    return int(classes.shape[0]), codes.astype(np.int64)


def _class_probabilities(classifier: Any, x: Features, n_classes: int) -> np.ndarray:
    """The classifier's probabilities with one column per class code. The labeled set may lack
    classes: the classifier's columns go to their codes, the missing classes stay at 0."""
    probabilities = np.zeros((x.shape[0], n_classes))
    columns = np.asarray(classifier.classes_, dtype=np.int64)
    probabilities[:, columns] = classifier.predict_proba(x)
    return probabilities


def _replay(
    x_pool: Features,
    y_pool: np.ndarray,
    x_test: Features,
    y_test: np.ndarray,
    n_classes: int,
    *,
    strategies: Sequence[str],
    seed_size: int,
    batch_size: int,
    budget: int,
    rng: np.random.Generator,
    make_classifier: Callable[[], Any],
    on_curve: Callable[[], None] = lambda: None,
) -> dict[str, Curve]:
    """Learning curves of every strategy on one (pool, test) split; labels are class codes.

    Draws the shared seed set and the strategies' shared random seed from rng, in that order;
    calls on_curve after each strategy's curve is done.
    """
    n_pool = y_pool.shape[0]
    if seed_size > n_pool:
        raise ValueError(f"seed_size {seed_size} exceeds the pool of {n_pool} items")
    seed_positions = _stratified_order(y_pool, rng, one_each=True)[:seed_size]
    strategy_seed = int(rng.integers(2**63))

    curves: dict[str, Curve] = {}
    for strategy in strategies:
        # Same seed for every strategy: differences between curves come from the strategy alone.
        strategy_rng = np.random.default_rng(strategy_seed)
        labeled = np.zeros(n_pool, dtype=bool)
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
            probabilities = _class_probabilities(classifier, x_unlabeled, n_classes)
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
        on_curve()
    return curves


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
    y = _checked_labels(features, labels, strategies)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_classes, codes = _checked_codes(y, seed_size=seed_size, batch_size=batch_size, budget=budget)

    rng = np.random.default_rng(seed)
    split = _stratified_order(codes, rng, one_each=False)
    n_test = max(1, round(test_fraction * y.shape[0]))
    test, pool = np.sort(split[:n_test]), np.sort(split[n_test:])
    return _replay(
        features[pool],
        codes[pool],
        features[test],
        codes[test],
        n_classes,
        strategies=strategies,
        seed_size=seed_size,
        batch_size=batch_size,
        budget=budget,
        rng=rng,
        make_classifier=make_classifier,
    )


def _stratified_folds(
    codes: np.ndarray, *, folds: int, seed: int, seed_size: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (pool, test) index pairs of a shuffled stratified k-fold split, every fold's pool
    checked (room for the seed set, at least two classes) before any replay runs."""
    n_items = codes.shape[0]
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if folds > n_items:
        raise ValueError(f"folds {folds} exceeds the {n_items} items")
    largest = int(np.bincount(codes).max())
    if folds > largest:
        raise ValueError(f"folds {folds} exceeds the {largest} items of the largest class")

    # Imported on first use: docs/design.md, "Import weight".
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    # A class smaller than `folds` only leaves some test folds without it; sklearn's warning about
    # that would abort callers that treat warnings as errors.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(splitter.split(np.zeros((n_items, 1)), codes))
    # Check every fold before any replay so a bad split fails fast rather than after minutes.
    for pool, _ in splits:
        if seed_size > pool.shape[0]:
            raise ValueError(
                f"seed_size {seed_size} exceeds a fold's pool of {pool.shape[0]} items"
            )
        if np.unique(codes[pool]).shape[0] < 2:
            raise ValueError("a fold's pool holds a single class; use fewer folds")
    return splits


def kfold_learning_curves(
    features: Features,
    labels: np.ndarray,
    *,
    strategies: Sequence[str],
    folds: int,
    seed_size: int,
    batch_size: int,
    budget: int,
    seed: int = 0,
    make_classifier: Callable[[], Any],
    progress: Callable[[float], None] = lambda _: None,
) -> dict[str, Curve]:
    """learning_curves averaged over stratified k-fold splits: each fold is the test set once.

    Within a fold every strategy shares the seed set and the seeded randomness, as in
    learning_curves. A point at n labels is the mean accuracy of the folds whose curve reaches n
    (a fold with a smaller pool may stop early). progress gets the finished share of the
    (fold, strategy) replays after each one.
    """
    y = _checked_labels(features, labels, strategies)
    n_classes, codes = _checked_codes(y, seed_size=seed_size, batch_size=batch_size, budget=budget)
    splits = _stratified_folds(codes, folds=folds, seed=seed, seed_size=seed_size)

    total = folds * len(strategies)
    done = 0

    def finished() -> None:
        nonlocal done
        done += 1
        progress(done / total)

    accuracies: dict[str, dict[int, list[float]]] = {s: {} for s in strategies}
    # Independent streams per fold: a fold's replay does not depend on how many draws the
    # previous folds made.
    for (pool, test), fold_seed in zip(
        splits, np.random.SeedSequence(seed).spawn(folds), strict=True
    ):
        fold_curves = _replay(
            features[pool],
            codes[pool],
            features[test],
            codes[test],
            n_classes,
            strategies=strategies,
            seed_size=seed_size,
            batch_size=batch_size,
            budget=budget,
            rng=np.random.default_rng(fold_seed),
            make_classifier=make_classifier,
            on_curve=finished,
        )
        for strategy, curve in fold_curves.items():
            for n_labels, accuracy in curve:
                accuracies[strategy].setdefault(n_labels, []).append(accuracy)
    return {
        strategy: [(n, float(np.mean(values))) for n, values in sorted(by_n.items())]
        for strategy, by_n in accuracies.items()
    }


def curve_at(curve: Sequence[tuple[int, float]], n_labels: int) -> float | None:
    """Accuracy of the curve's last point with at most n_labels labels; None if there is none.

    That is the model a project would have had after n_labels labels.
    """
    reached = [accuracy for n, accuracy in sorted(curve) if n <= n_labels]
    return reached[-1] if reached else None


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

    The baseline's accuracy at `at_labels` is curve_at(baseline curve, at_labels). 0.5 means half
    the labels; None means the strategy never got there within its curve.
    """
    if at_labels < 1:
        raise ValueError(f"at_labels must be >= 1, got {at_labels}")
    if baseline not in curves:
        raise ValueError(f"baseline {baseline!r} has no curve")
    target = curve_at(curves[baseline], at_labels)
    if target is None:
        raise ValueError(f"the baseline curve has no point at or below {at_labels} labels")
    result: dict[str, float | None] = {}
    for strategy, curve in curves.items():
        needed = labels_to_reach(curve, target)
        result[strategy] = None if needed is None else needed / at_labels
    return result


# --- pool completion -----------------------------------------------------------------------------

# Uniformly drawn labeled items needed before the calibration map is fitted on them alone.
MIN_RANDOM_CALIBRATION = 100


@dataclass(frozen=True)
class CompletionPoint:
    """The state of a completion replay after one round's fit, against labels spent.

    accepted: items the rule would auto-accept now (provisional until the pool is complete);
    accepted_accuracy: their realized accuracy (None when there are none); pool_accuracy: the
    pool's realized accuracy if the model labeled every item humans have not answered now
    (what prelabeling everything at this point would give).
    """

    labels: int
    accepted: int
    accepted_accuracy: float | None
    pool_accuracy: float


@dataclass(frozen=True)
class CompletionRun:
    """One replay of completing a pool: humans answer batches until the rule can auto-accept
    every item left. human_answers is None when max_labels came first (not completed)."""

    pool_size: int
    human_answers: int | None
    auto_accepted: int
    auto_accept_accuracy: float | None
    pool_accuracy: float | None
    points: list[CompletionPoint]

    @property
    def human_share(self) -> float | None:
        return None if self.human_answers is None else self.human_answers / self.pool_size


def complete_pool(
    features: Features,
    labels: np.ndarray,
    *,
    strategy: str,
    target: float,
    seed_size: int,
    batch_size: int,
    make_classifier: Callable[[], Any],
    seed: int = 0,
    random_share: float = 0.0,
    calibration_folds: int = 3,
    z: float = DEFAULT_Z,
    shrink: float = DEFAULT_SHRINK,
    max_labels: int | None = None,
    calibrate_on_random: bool = True,
) -> CompletionRun:
    """Replay completing the whole labeled pool at the target accuracy (humans are the labels).

    Round after round: fit make_classifier() on the human-answered items, score the others,
    fit the calibration map on out-of-fold probabilities of the answered items
    (calibration_folds-fold), and let app/ml/completion.py decide which items it may
    auto-accept within the pool's error budget. When that covers every item left, the pool is
    complete; otherwise humans answer the next batch: the strategy's picks (with random_share
    uniformly drawn) among the items the rule would not accept. Auto-accepts are provisional
    until the end: every round re-decides them with the newest model.

    With calibrate_on_random the map is fitted on the uniformly drawn items only (the seed set
    and the random share: an unbiased sample of the pool) once there are MIN_RANDOM_CALIBRATION
    of them; the strategy's picks are the hard items, on which the model is right less often
    than on pool items of the same confidence, so a map fitted on them is far too pessimistic.
    """
    y = _checked_labels(features, labels, [strategy])
    n_classes, codes = _checked_codes(
        y, seed_size=seed_size, batch_size=batch_size, budget=max(seed_size, y.shape[0])
    )
    n = codes.shape[0]
    if max_labels is not None and max_labels < seed_size:
        raise ValueError(f"max_labels {max_labels} is below seed_size {seed_size}")
    rng = np.random.default_rng(seed)
    labeled = np.zeros(n, dtype=bool)
    labeled[_stratified_order(codes, rng, one_each=True)[:seed_size]] = True
    drawn = labeled.copy()  # uniformly drawn (the seed set is stratified: near enough)
    budget = error_budget(pool_size=n, target=target)
    points: list[CompletionPoint] = []
    while True:
        chosen = np.flatnonzero(labeled)
        rest = np.flatnonzero(~labeled)
        if rest.shape[0] == 0:
            points.append(CompletionPoint(int(n), 0, None, 1.0))
            return CompletionRun(n, n, 0, None, 1.0, points)
        classifier = make_classifier()
        classifier.fit(features[chosen], codes[chosen])
        probabilities = _class_probabilities(classifier, features[rest], n_classes)
        oof = out_of_fold_probabilities(
            features[chosen],
            codes[chosen],
            n_classes,
            make_classifier=make_classifier,
            folds=calibration_folds,
            seed=int(rng.integers(2**31)),
        )
        fit_on = np.ones(chosen.shape[0], dtype=bool)
        if calibrate_on_random and int(drawn.sum()) >= MIN_RANDOM_CALIBRATION:
            fit_on = drawn[chosen]
        calibration = calibration_from_probabilities(
            oof[fit_on], codes[chosen][fit_on], shrink=shrink
        )
        predicted = probabilities.argmax(axis=1)
        right = predicted == codes[rest]
        accepted = accept_within_budget(calibration(probabilities.max(axis=1)), budget, z=z)
        accepted_right = int(right[accepted].sum())
        points.append(
            CompletionPoint(
                labels=int(chosen.shape[0]),
                accepted=int(accepted.shape[0]),
                accepted_accuracy=accepted_right / accepted.shape[0] if accepted.shape[0] else None,
                pool_accuracy=(chosen.shape[0] + int(right.sum())) / n,
            )
        )
        if accepted.shape[0] == rest.shape[0]:
            return CompletionRun(
                pool_size=n,
                human_answers=int(chosen.shape[0]),
                auto_accepted=int(accepted.shape[0]),
                auto_accept_accuracy=accepted_right / accepted.shape[0],
                pool_accuracy=(chosen.shape[0] + accepted_right) / n,
                points=points,
            )
        if max_labels is not None and chosen.shape[0] >= max_labels:
            return CompletionRun(n, None, 0, None, None, points)
        size = min(batch_size, rest.shape[0] - accepted.shape[0])
        if max_labels is not None:
            size = min(size, max_labels - int(chosen.shape[0]))
        # The random share is drawn from every item humans have not answered, auto-acceptable
        # ones included: an unbiased sample of what is left, so it calibrates (and audits) the
        # auto-accepts; the strategy picks among the items the rule would not accept.
        n_random = min(size, math.ceil(random_share * size - 1e-9))
        explorers = rng.choice(rest.shape[0], size=n_random, replace=False)
        open_ = np.ones(rest.shape[0], dtype=bool)
        open_[accepted] = False
        open_[explorers] = False
        candidates = np.flatnonzero(open_)
        picks, _ = choose_batch(
            priority(summarize(probabilities[candidates]), strategy),
            min(size - n_random, candidates.shape[0]),
            strategy=strategy,
            rng=rng,
            random_share=0.0,
            features=features[rest[candidates]],
        )
        labeled[rest[candidates[picks]]] = True
        labeled[rest[explorers]] = True
        drawn[rest[explorers]] = True


@dataclass(frozen=True)
class CompletionSummary:
    """Completion runs of one arm (same settings, several seeds) in one place: means over the
    runs that completed, the worst pool accuracy, and the curve averaged per label count (over
    the runs that reached it; accepted_accuracy over the runs that accepted something)."""

    runs: int
    completed: int
    human_answers: float | None
    human_share: float | None
    auto_accepted: float | None
    auto_accept_accuracy: float | None
    pool_accuracy: float | None
    worst_pool_accuracy: float | None
    curve: list[CompletionPoint]


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarize_completion(runs: Sequence[CompletionRun]) -> CompletionSummary:
    if not runs:
        raise ValueError("no completion runs to summarize")
    done = [r for r in runs if r.human_answers is not None]
    by_labels: dict[int, list[CompletionPoint]] = {}
    for run in runs:
        for point in run.points:
            by_labels.setdefault(point.labels, []).append(point)
    curve = []
    for n_labels, points in sorted(by_labels.items()):
        accepted = [p.accepted_accuracy for p in points if p.accepted_accuracy is not None]
        curve.append(
            CompletionPoint(
                labels=n_labels,
                accepted=round(float(np.mean([p.accepted for p in points]))),
                accepted_accuracy=_mean(accepted),
                pool_accuracy=float(np.mean([p.pool_accuracy for p in points])),
            )
        )
    pool = [r.pool_accuracy for r in done if r.pool_accuracy is not None]
    return CompletionSummary(
        runs=len(runs),
        completed=len(done),
        human_answers=_mean([float(r.human_answers or 0) for r in done]),
        human_share=_mean([r.human_share or 0.0 for r in done]),
        auto_accepted=_mean([float(r.auto_accepted) for r in done]),
        auto_accept_accuracy=_mean(
            [r.auto_accept_accuracy for r in done if r.auto_accept_accuracy is not None]
        ),
        pool_accuracy=_mean(pool),
        worst_pool_accuracy=min(pool) if pool else None,
        curve=curve,
    )
