"""summarize() against a row-by-row reference, and its edge cases."""

import math

import numpy as np
import pytest

from app.ml.uncertainty import summarize


def naive(probabilities: np.ndarray) -> tuple[list[int], list[float], list[float], list[float]]:
    tops, confidences, margins, entropies = [], [], [], []
    k = probabilities.shape[1]
    for row in probabilities.astype(np.float64).tolist():
        ordered = sorted(row, reverse=True)
        tops.append(row.index(ordered[0]))
        confidences.append(ordered[0])
        margins.append(ordered[0] - ordered[1] if k > 1 else ordered[0])
        h = -sum(p * math.log(p) for p in row if p > 0)
        entropies.append(h / math.log(k) if k > 1 else 0.0)
    return tops, confidences, margins, entropies


@pytest.mark.parametrize("k", [2, 3, 15])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_naive_reference(k: int, dtype: type[np.floating]) -> None:
    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.full(k, 0.3), size=200)
    # Exact zeros would make a naive log() warn; summarize must cope without warnings.
    p[rng.random(p.shape) < 0.2] = 0.0
    p[p.sum(axis=1) == 0, 0] = 1.0
    p = (p / p.sum(axis=1, keepdims=True)).astype(dtype)

    result = summarize(p)
    tops, confidences, margins, entropies = naive(p)

    assert result.top.tolist() == tops
    np.testing.assert_allclose(result.confidence, confidences, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.margin, margins, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.entropy, entropies, rtol=0, atol=1e-6)
    for scores in (result.confidence, result.margin, result.entropy):
        assert scores.dtype == np.float64
        assert scores.shape == (200,)


def test_hand_checked_rows() -> None:
    p = np.array(
        [
            [0.25, 0.25, 0.25, 0.25],  # uniform: no margin, maximal entropy
            [0.0, 1.0, 0.0, 0.0],  # one-hot: full margin, no entropy
            [0.1, 0.6, 0.3, 0.0],
            [0.4, 0.1, 0.4, 0.1],  # tie: lowest index wins, margin 0
        ]
    )
    result = summarize(p)
    assert result.top.tolist() == [0, 1, 1, 0]
    np.testing.assert_allclose(result.confidence, [0.25, 1.0, 0.6, 0.4])
    np.testing.assert_allclose(result.margin, [0.0, 1.0, 0.3, 0.0], atol=1e-12)
    expected_h = -(0.1 * math.log(0.1) + 0.6 * math.log(0.6) + 0.3 * math.log(0.3)) / math.log(4)
    np.testing.assert_allclose(result.entropy, [1.0, 0.0, expected_h, 0.860964], atol=1e-6)


def test_single_column() -> None:
    result = summarize(np.array([[1.0], [0.7]], dtype=np.float32))
    assert result.top.tolist() == [0, 0]
    np.testing.assert_allclose(result.confidence, [1.0, 0.7], atol=1e-7)
    np.testing.assert_array_equal(result.margin, result.confidence)
    np.testing.assert_array_equal(result.entropy, [0.0, 0.0])


def test_empty_and_invalid_shapes() -> None:
    empty = summarize(np.zeros((0, 3)))
    assert empty.top.shape == empty.confidence.shape == empty.entropy.shape == (0,)
    with pytest.raises(ValueError):
        summarize(np.array([0.2, 0.8]))
    with pytest.raises(ValueError):
        summarize(np.zeros((4, 0)))
