"""Wilson intervals, per-label thresholds on hand-built calibration sets, expected precision."""

import math

import numpy as np
import pytest

from app.ml.thresholds import (
    expected_precision,
    fixed_thresholds,
    thresholds_for_precision,
    wilson_interval,
)

K = 3


def calibration(items: list[tuple[int, float, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """(predicted label, confidence, correct?) triples as K-column probabilities and y_true."""
    p = np.zeros((len(items), K))
    y = np.zeros(len(items), dtype=np.int64)
    for i, (k, confidence, correct) in enumerate(items):
        p[i] = (1.0 - confidence) / (K - 1)
        p[i, k] = confidence
        y[i] = k if correct else (k + 1) % K
    return p, y


# Tail precision from the top: 1/1, 1/2, 2/3, 3/4, 4/5, 4/6, 4/7 -- not monotone.
LADDER = [(0.95, True), (0.9, False), (0.85, True), (0.8, True), (0.75, True)]
LADDER += [(0.7, False), (0.65, False)]


def test_wilson_known_values() -> None:
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3)
    assert high == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # n/n has lower bound n / (n + z^2).
    assert wilson_interval(19, 19, z=1.0)[0] == pytest.approx(19 / 20, abs=1e-12)
    assert wilson_interval(10, 10)[0] == pytest.approx(10 / (10 + 1.96**2), abs=1e-12)
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 5)[0] == 0.0
    with pytest.raises(ValueError):
        wilson_interval(6, 5)


def test_fixed_thresholds() -> None:
    assert fixed_thresholds(0.9, 3) == [0.9, 0.9, 0.9]
    assert fixed_thresholds(0.5, 0) == []
    with pytest.raises(ValueError):
        fixed_thresholds(1.5, 2)


@pytest.mark.parametrize(
    ("target", "min_support", "expected"),
    [
        (0.8, 3, 0.75),  # 4/5 reaches 0.8 even though 1/2, 2/3 and 3/4 above it do not
        (0.6, 3, 0.7),  # 4/6
        (0.5, 3, 0.65),  # 4/7
        (0.8, 6, None),  # only tails of >= 6 items count, and they are below 0.8
        (0.9, 3, None),  # unreachable
        (0.5, 8, None),  # fewer than 8 items predicted at all
    ],
)
def test_point_rule_on_a_hand_built_ladder(
    target: float, min_support: int, expected: float | None
) -> None:
    # z = 0 turns the bound into the plain tail precision, so the search itself is checked.
    p, y = calibration([(0, c, ok) for c, ok in LADDER])
    result = thresholds_for_precision(p, y, target, min_support=min_support, z=0.0)
    assert result[0] == expected
    assert result[1] is None and result[2] is None  # never predicted


def test_ties_are_not_split() -> None:
    # At 0.8 one item is right and one wrong; a threshold of 0.8 accepts both (4/5 = 0.8),
    # even though the first four rows taken alone would be 4/4.
    items = [(1, 0.9, True)] * 3 + [(1, 0.8, True), (1, 0.8, False)]
    p, y = calibration(items)
    assert thresholds_for_precision(p, y, 0.9, min_support=1, z=0.0)[1] == 0.9
    assert thresholds_for_precision(p, y, 0.8, min_support=1, z=0.0)[1] == 0.8


def test_default_bound_needs_nineteen_perfect_items_at_095() -> None:
    # With z = 1 a perfect tail of n items has lower bound n / (n + 1): 18/19 < 0.95 <= 19/20.
    confidences = [0.99 - 0.01 * i for i in range(19)]
    p, y = calibration([(2, c, True) for c in confidences[:18]])
    assert thresholds_for_precision(p, y, 0.95) == [None, None, None]
    p, y = calibration([(2, c, True) for c in confidences])
    assert thresholds_for_precision(p, y, 0.95)[2] == pytest.approx(confidences[-1])


def test_default_bound_is_stricter_than_the_point_estimate() -> None:
    # 30 right, then 2 wrong, then 40 right: the whole tail is 70/72 = 0.972.
    items = [(0, 0.99 - 0.001 * i, True) for i in range(30)]
    items += [(0, 0.95, False), (0, 0.949, False)]
    items += [(0, 0.94 - 0.001 * i, True) for i in range(40)]
    p, y = calibration(items)
    lowest = items[-1][1]
    assert thresholds_for_precision(p, y, 0.95, z=0.0)[0] == pytest.approx(lowest)
    assert wilson_interval(70, 72, z=1.0)[0] < 0.95
    # Only the 30 error-free items above the two errors pass: 30/31 > 0.95.
    assert wilson_interval(30, 30, z=1.0)[0] >= 0.95
    assert thresholds_for_precision(p, y, 0.95)[0] == pytest.approx(items[29][1])


def test_min_support_is_respected_by_the_default_rule() -> None:
    p, y = calibration([(0, 0.9 - 0.01 * i, True) for i in range(12)])
    assert thresholds_for_precision(p, y, 0.9, min_support=12)[0] == pytest.approx(0.79)
    assert thresholds_for_precision(p, y, 0.9, min_support=13)[0] is None


def test_float32_thresholds_accept_their_own_items() -> None:
    rng = np.random.default_rng(11)
    p = rng.dirichlet(np.full(K, 0.2), size=500).astype(np.float32)
    y = p.argmax(axis=1).astype(np.int64)
    flip = rng.random(500) < 0.05
    y[flip] = (y[flip] + 1) % K
    thresholds = thresholds_for_precision(p, y, 0.9)
    confidence, predicted = p.max(axis=1), p.argmax(axis=1)
    for k, t in enumerate(thresholds):
        assert t is not None
        accepted = (predicted == k) & (confidence >= t)
        assert wilson_interval(int((y[accepted] == k).sum()), int(accepted.sum()), 1.0)[0] >= 0.9


def test_rejects_bad_arguments() -> None:
    p, y = calibration([(0, c, ok) for c, ok in LADDER])
    with pytest.raises(ValueError):
        thresholds_for_precision(p, y, 0.0)
    with pytest.raises(ValueError):
        thresholds_for_precision(p, y, 0.9, min_support=0)
    with pytest.raises(ValueError):
        thresholds_for_precision(p, y[:-1], 0.9)


def two_strata() -> tuple[np.ndarray, np.ndarray]:
    # Label 0: 9/10 correct at confidence 0.9; label 1: 20/20 at 0.8; noise below both.
    items = [(0, 0.9, i < 9) for i in range(10)] + [(1, 0.8, True)] * 20
    items += [(0, 0.5, False)] * 5 + [(1, 0.5, False)] * 5
    return calibration(items)


def test_expected_precision_by_hand() -> None:
    p, y = two_strata()
    result = expected_precision(p, y, [0.9, 0.8, None], [30, 10, 0])
    assert result.estimate == pytest.approx(0.75 * 0.9 + 0.25 * 1.0)
    assert result.n_calibration == 30

    z2 = 1.96**2
    a0, a1 = (9 + z2 / 2) / (10 + z2), (20 + z2 / 2) / (20 + z2)
    center = 0.75 * a0 + 0.25 * a1
    half = 1.96 * math.sqrt(
        0.75**2 * a0 * (1 - a0) / (10 + z2) + 0.25**2 * a1 * (1 - a1) / (20 + z2)
    )
    assert result.low == pytest.approx(center - half)
    assert result.high == pytest.approx(center + half)
    assert result.low is not None and result.high is not None and result.estimate is not None
    assert result.low < result.estimate < result.high


def test_perfect_small_stratum_still_has_width() -> None:
    p, y = calibration([(0, 0.9, True)] * 10)
    result = expected_precision(p, y, [0.9, None, None], [100, 0, 0])
    assert result.estimate == 1.0
    assert result.high == 1.0
    # Agresti-Coull: p~ = 11.92/13.84, half-width 1.96 * sqrt(p~(1 - p~)/13.84)
    assert result.low == pytest.approx(0.6792, abs=1e-3)


def test_nothing_accepted_and_unsupported_strata() -> None:
    p, y = two_strata()
    assert expected_precision(p, y, [0.9, 0.8, None], [0, 0, 0]) == expected_precision(
        p, y, [None, None, None], [0, 0, 0]
    )
    nothing = expected_precision(p, y, [None, None, None], [0, 0, 0])
    assert (nothing.estimate, nothing.low, nothing.high, nothing.n_calibration) == (
        None,
        None,
        None,
        0,
    )
    # A threshold above every calibration item of label 1: its precision is unknown.
    unknown = expected_precision(p, y, [0.9, 0.99, None], [10, 10, 0])
    assert unknown.estimate is None
    assert unknown.low is not None and unknown.high is not None
    assert unknown.low < 0.5 * 0.9 and unknown.high > 0.5
    assert unknown.n_calibration == 10


def test_expected_precision_rejects_inconsistent_input() -> None:
    p, y = two_strata()
    with pytest.raises(ValueError):
        expected_precision(p, y, [0.9, None, None], [1, 1, 0])  # accepted without a threshold
    with pytest.raises(ValueError):
        expected_precision(p, y, [0.9, 0.8], [1, 1])
    with pytest.raises(ValueError):
        expected_precision(p, y, [0.9, 0.8, None], [1, -1, 0])
