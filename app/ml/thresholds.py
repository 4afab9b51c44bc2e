"""Per-label confidence thresholds for auto-accepting model predictions, and their precision."""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Precision comparisons are done on counts; this absorbs float error in target * n.
_EPS = 1e-9


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0.0, 1.0) when n == 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    return (max(0.0, center - half), min(1.0, center + half))


def fixed_thresholds(threshold: float, n_labels: int) -> list[float | None]:
    """The same confidence threshold for every label."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if n_labels < 0:
        raise ValueError(f"n_labels must be >= 0, got {n_labels}")
    return [float(threshold)] * n_labels


def _check_calibration(probabilities: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    if probabilities.ndim != 2 or probabilities.shape[1] == 0:
        raise ValueError(f"expected an (n, K) array with K >= 1, got shape {probabilities.shape}")
    y = np.asarray(y_true)
    if y.ndim != 1 or y.shape[0] != probabilities.shape[0]:
        raise ValueError("y_true must be a vector with one entry per probability row")
    if y.size and (
        not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= probabilities.shape[1]
    ):
        raise ValueError(f"y_true must hold integer class indices in [0, {probabilities.shape[1]})")
    return y


def _tails(
    confidence: np.ndarray, correct: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each distinct confidence t, from high to low: t, #items >= t, #correct among them."""
    if confidence.size == 0:
        return confidence, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(-confidence, kind="stable")
    ordered = confidence[order]
    cum_correct = np.cumsum(correct[order])
    # Only the last position of a run of equal confidences is a reachable cut: a threshold
    # cannot accept part of a tie.
    ends = np.flatnonzero(np.append(ordered[1:] != ordered[:-1], True))
    return ordered[ends], ends + 1, cum_correct[ends]


def thresholds_for_precision(
    probabilities: np.ndarray, y_true: np.ndarray, target: float, *, min_support: int = 10
) -> list[float | None]:
    """Per-label confidence thresholds whose auto-accepted predictions reach ``target`` precision.

    ``probabilities`` are out-of-fold (or held-out) class probabilities, (n, K), and ``y_true``
    the human labels as column indices. For label k, take the calibration items whose argmax is
    k, with confidence c and correctness (argmax == y_true). Every observed confidence t defines
    a tail {c >= t} with size n(t) and precision prec(t). A tail is *supported* when
    n(t) >= ``min_support``. The threshold is the lowest observed t such that

        n(t) >= min_support  and  prec(t') >= target for every supported t' >= t,

    i.e. the running minimum of precision, taken from the most confident supported tail
    downwards, is still >= target at t. None when no t qualifies: label k is never
    auto-accepted.

    Why the running minimum: the lowest t whose own tail precision reaches the target is chosen
    *because* its estimate happened to come out high, so it is biased upwards; lower thresholds
    add items at the lowest confidence, where errors concentrate, and a few lucky correct items
    can lift the cumulative precision back over the target. Requiring every stricter supported
    threshold to pass too means the accepted band cannot hide a stretch of errors behind a run of
    luck. Tails smaller than ``min_support`` are ignored by the minimum, so a single wrong
    prediction at the very top does not veto the whole label.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be in (0, 1], got {target}")
    if min_support < 1:
        raise ValueError(f"min_support must be >= 1, got {min_support}")
    y = _check_calibration(probabilities, y_true)
    predicted = np.argmax(probabilities, axis=1)
    confidence = np.max(probabilities, axis=1).astype(np.float64)
    correct = (predicted == y).astype(np.int64)

    result: list[float | None] = []
    for k in range(probabilities.shape[1]):
        mine = predicted == k
        cuts, sizes, hits = _tails(confidence[mine], correct[mine])
        supported = sizes >= min_support
        if not supported.any():
            result.append(None)
            continue
        cuts, sizes, hits = cuts[supported], sizes[supported], hits[supported]
        passes = hits >= target * sizes - _EPS
        # Cuts run from high to low confidence, so the qualifying cuts are the leading run of
        # passes; the first failure ends it.
        failures = np.flatnonzero(~passes)
        last = (failures[0] if failures.size else passes.size) - 1
        result.append(float(cuts[last]) if last >= 0 else None)
    return result


@dataclass(frozen=True)
class PrecisionEstimate:
    """Expected precision of a set of auto-accepted items, with a 95% interval."""

    estimate: float | None
    low: float | None
    high: float | None
    n_calibration: int


def expected_precision(
    probabilities: np.ndarray,
    y_true: np.ndarray,
    thresholds: Sequence[float | None],
    accepted_per_label: Sequence[int],
    *,
    z: float = 1.96,
) -> PrecisionEstimate:
    """Precision expected from auto-accepting ``accepted_per_label[k]`` pool items per label k.

    Stratified by predicted label: for each label k with items accepted, the calibration items
    predicted k with confidence >= ``thresholds[k]`` give n_k items and c_k correct, p_k =
    c_k / n_k. The estimate is sum_k w_k p_k with w_k = accepted_per_label[k] / total accepted.

    The interval is estimate +- z * sqrt(sum_k w_k^2 p~_k (1 - p~_k) / n~_k), clipped to
    [0, 1], with the Agresti-Coull (Wilson-centred) p~_k = (c_k + z^2/2) / (n_k + z^2) and
    n~_k = n_k + z^2 used in the variance only. Plain p_k = 1.0 would give a zero-width
    interval for, say, 10/10 correct, claiming certainty from ten items; the adjusted p~_k gives
    10/10 a half-width of about 0.18. The adjustment is kept out of the centre because its pull
    towards 1/2 is applied per stratum: over many strata the shifts add up linearly while the
    standard error shrinks, and the interval would end up below the estimate it describes.

    If some accepted label has no calibration item at or above its threshold (possible with
    fixed thresholds), its precision is unknown: the estimate is None and that stratum enters
    the interval as [0, 1] by its weight. Everything is None when nothing is accepted.
    ``n_calibration`` counts the calibration items behind the strata that were used.
    """
    y = _check_calibration(probabilities, y_true)
    n_labels = probabilities.shape[1]
    if len(thresholds) != n_labels or len(accepted_per_label) != n_labels:
        raise ValueError(f"thresholds and accepted_per_label need {n_labels} entries each")
    if any(count < 0 for count in accepted_per_label):
        raise ValueError("accepted_per_label must be >= 0")
    for threshold, count in zip(thresholds, accepted_per_label, strict=True):
        if threshold is None and count > 0:
            raise ValueError("items were accepted for a label without a threshold")

    total = sum(accepted_per_label)
    if total == 0:
        return PrecisionEstimate(estimate=None, low=None, high=None, n_calibration=0)

    predicted = np.argmax(probabilities, axis=1)
    confidence = np.max(probabilities, axis=1)
    correct = predicted == y
    z2 = z * z
    estimate = 0.0
    variance = 0.0
    unknown_weight = 0.0
    n_calibration = 0
    for k, (threshold, count) in enumerate(zip(thresholds, accepted_per_label, strict=True)):
        if count == 0 or threshold is None:
            continue
        weight = count / total
        used = (predicted == k) & (confidence >= threshold)
        n_k = int(used.sum())
        if n_k == 0:
            unknown_weight += weight
            continue
        c_k = int(correct[used].sum())
        n_calibration += n_k
        estimate += weight * c_k / n_k
        adjusted = (c_k + z2 / 2) / (n_k + z2)
        variance += weight * weight * adjusted * (1.0 - adjusted) / (n_k + z2)

    half = z * math.sqrt(variance)
    if unknown_weight > 0:
        # A stratum without calibration data can be anywhere in [0, 1]: it adds nothing to the
        # low end and its full weight to the high end, and there is no point estimate.
        return PrecisionEstimate(
            estimate=None,
            low=max(0.0, estimate - half),
            high=min(1.0, estimate + half + unknown_weight),
            n_calibration=n_calibration,
        )
    return PrecisionEstimate(
        estimate=estimate,
        low=max(0.0, estimate - half),
        high=min(1.0, estimate + half),
        n_calibration=n_calibration,
    )
