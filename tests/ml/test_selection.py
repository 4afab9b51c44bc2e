"""Selection functions: exact priorities and top-k, sampling bias, diversity and batch shape."""

import math

import numpy as np
import pytest
from scipy import sparse

from app.ml.selection import (
    choose_batch,
    cold_start,
    k_center_greedy,
    power_sample,
    priority,
)
from app.ml.uncertainty import summarize

PROBABILITIES = np.array(
    [
        [0.90, 0.05, 0.05],  # 0: confident
        [0.50, 0.45, 0.05],  # 1: margin 0.05
        [0.40, 0.30, 0.30],  # 2: least confident, margin 0.10
        [0.60, 0.39, 0.01],  # 3: margin 0.21
        [0.34, 0.33, 0.33],  # 4: margin 0.01, highest entropy
        [0.50, 0.45, 0.05],  # 5: same as 1 (tie)
    ]
)


def clusters(rng: np.random.Generator, per_cluster: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Three tight clusters along orthogonal directions (far apart in cosine distance)."""
    centers = np.eye(3) * 10.0
    x = np.vstack([c + rng.normal(scale=0.3, size=(per_cluster, 3)) for c in centers])
    return x, np.repeat(np.arange(3), per_cluster)


def test_priority_per_strategy() -> None:
    u = summarize(PROBABILITIES)
    np.testing.assert_allclose(priority(u, "least_confidence"), 1 - PROBABILITIES.max(axis=1))
    margins = np.array([0.85, 0.05, 0.10, 0.21, 0.01, 0.05])
    np.testing.assert_allclose(priority(u, "margin"), 1 - margins)
    np.testing.assert_allclose(priority(u, "diverse_margin"), 1 - margins)
    np.testing.assert_allclose(priority(u, "entropy"), u.entropy)
    np.testing.assert_array_equal(priority(u, "random"), np.zeros(6))
    with pytest.raises(ValueError, match="unknown strategy"):
        priority(u, "bald")


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        # Margins 0.01 (4), 0.05 (1 and 5: tie goes to the lower index), 0.10 (2).
        ("margin", [4, 1, 5, 2]),
        ("least_confidence", [4, 2, 1, 5]),
        ("entropy", [4, 2, 1, 5]),
    ],
)
def test_choose_batch_top_k_is_exact(strategy: str, expected: list[int]) -> None:
    p = priority(summarize(PROBABILITIES), strategy)
    indices, is_random = choose_batch(
        p, 4, strategy=strategy, rng=np.random.default_rng(0), random_share=0.0
    )
    assert indices.tolist() == expected
    assert not is_random.any()


def test_choose_batch_margin_tie_breaks_by_lower_index() -> None:
    indices, _ = choose_batch(
        np.ones(10), 3, strategy="margin", rng=np.random.default_rng(0), random_share=0.0
    )
    assert indices.tolist() == [0, 1, 2]


def test_power_sample_distinct_and_biased_towards_high_scores() -> None:
    rng = np.random.default_rng(1)
    scores = np.array([10.0, 1.0, 1.0, 1.0, 1.0, 0.0, -3.0, 1.0])
    high = low = 0
    for _ in range(2000):
        picks = power_sample(scores, 3, rng=rng)
        assert picks.shape == (3,)
        assert len(set(picks.tolist())) == 3
        assert picks.min() >= 0 and picks.max() < scores.size
        high += int(0 in picks)
        low += int(1 in picks)
    # Item 0 is ten times as likely on every draw: nearly always in the batch, item 1 far less.
    assert high > 1900
    assert low < 900
    assert high > 2 * low


def test_power_sample_beta_sharpens_and_floor_keeps_everyone_reachable() -> None:
    rng = np.random.default_rng(2)
    scores = np.array([2.0, 1.0])
    flat = sum(int(power_sample(scores, 1, rng=rng)[0] == 0) for _ in range(2000))
    sharp = sum(int(power_sample(scores, 1, rng=rng, beta=4.0)[0] == 0) for _ in range(2000))
    assert 1200 < flat < 1500  # 2/3
    assert sharp > 1800  # 16/17
    # Scores <= 0 are floored, not excluded: asking for everything returns everything.
    all_picks = power_sample(np.array([0.0, -1.0, 0.5]), 5, rng=rng)
    assert sorted(all_picks.tolist()) == [0, 1, 2]
    assert power_sample(scores, 0, rng=rng).shape == (0,)
    with pytest.raises(ValueError):
        power_sample(np.array([1.0, np.nan]), 1, rng=rng)


@pytest.mark.parametrize("as_sparse", [False, True])
def test_k_center_greedy_picks_one_per_cluster(as_sparse: bool) -> None:
    for seed in range(5):
        x, cluster = clusters(np.random.default_rng(seed))
        features = sparse.csr_matrix(x) if as_sparse else x
        picks = k_center_greedy(features, 3, rng=np.random.default_rng(seed))
        assert sorted(cluster[picks].tolist()) == [0, 1, 2]


def test_k_center_greedy_distinct_with_duplicates_and_all_when_k_large() -> None:
    rng = np.random.default_rng(3)
    x = np.vstack([np.ones((5, 2)), np.zeros((2, 2))])
    picks = k_center_greedy(x, 6, rng=rng)
    assert len(set(picks.tolist())) == 6
    assert k_center_greedy(x, 7, rng=rng).tolist() == list(range(7))
    assert k_center_greedy(x, 50, rng=rng).tolist() == list(range(7))
    assert k_center_greedy(x, 0, rng=rng).shape == (0,)


@pytest.mark.parametrize("strategy", ["random", "margin", "entropy", "diverse_margin"])
@pytest.mark.parametrize("share", [0.1, 0.25, 0.5])
def test_choose_batch_random_share_marked_and_sized(strategy: str, share: float) -> None:
    rng = np.random.default_rng(4)
    x, _ = clusters(rng)
    p = rng.random((x.shape[0],))
    k = 30
    indices, is_random = choose_batch(
        p, k, strategy=strategy, rng=rng, random_share=share, features=x
    )
    assert indices.shape == (k,) == is_random.shape
    assert len(set(indices.tolist())) == k
    assert int(is_random.sum()) == math.ceil(round(share * k, 6))
    if strategy == "margin":
        # The non-random part is the top of what the explorers left.
        rest = np.setdiff1d(np.arange(p.size), indices[is_random])
        expected = rest[np.argsort(-p[rest], kind="stable")][: k - int(is_random.sum())]
        assert indices[~is_random].tolist() == expected.tolist()


def test_choose_batch_share_rounds_up_and_float_noise_does_not() -> None:
    rng = np.random.default_rng(5)
    _, is_random = choose_batch(np.zeros(100), 7, strategy="margin", rng=rng)
    assert int(is_random.sum()) == 1  # ceil(0.7)
    _, is_random = choose_batch(np.zeros(100), 30, strategy="margin", rng=rng)
    assert int(is_random.sum()) == 3  # 0.1 * 30 is 3.0000000000000004 in floats


def test_choose_batch_k_at_least_n_returns_all() -> None:
    rng = np.random.default_rng(6)
    for k in (5, 9):
        indices, is_random = choose_batch(np.arange(5.0), k, strategy="margin", rng=rng)
        assert sorted(indices.tolist()) == [0, 1, 2, 3, 4]
        assert not is_random.any()


def test_diverse_margin_spreads_over_candidates() -> None:
    rng = np.random.default_rng(7)
    x, cluster = clusters(rng)
    p = np.zeros(x.shape[0])
    # The 15 highest priorities: 13 in cluster 0, one in each other cluster.
    p[:13] = 1.0
    p[30] = p[60] = 0.9
    indices, _ = choose_batch(
        p, 3, strategy="diverse_margin", rng=rng, random_share=0.0, features=sparse.csr_matrix(x)
    )
    assert sorted(cluster[indices].tolist()) == [0, 1, 2]
    assert set(indices.tolist()) <= set(range(13)) | {30, 60}
    # Plain margin takes three from the same cluster.
    top, _ = choose_batch(p, 3, strategy="margin", rng=rng, random_share=0.0)
    assert cluster[top].tolist() == [0, 0, 0]
    # Without features it samples among the candidates only.
    no_features, _ = choose_batch(p, 3, strategy="diverse_margin", rng=rng, random_share=0.0)
    assert set(no_features.tolist()) <= set(range(13)) | {30, 60}
    assert len(set(no_features.tolist())) == 3


def test_cold_start_covers_clusters() -> None:
    rng = np.random.default_rng(8)
    x, cluster = clusters(rng, per_cluster=200)
    picks = cold_start(sparse.csr_matrix(x), 3, rng=rng)
    assert len(set(picks.tolist())) == 3
    assert sorted(cluster[picks].tolist()) == [0, 1, 2]
    assert sorted(cold_start(x[:4], 10, rng=rng).tolist()) == [0, 1, 2, 3]
