"""Which unlabeled items to send to annotators next: priorities, sampling and diverse batches."""

import math
from typing import Any, Literal, get_args

import numpy as np
from scipy import sparse
from typing_extensions import TypeAliasType

from app.ml.uncertainty import Uncertainty

# A named alias: the spec has one `Strategy` schema wherever a strategy is asked for.
Strategy = TypeAliasType(
    "Strategy", Literal["random", "least_confidence", "margin", "entropy", "diverse_margin"]
)
STRATEGIES: tuple[str, ...] = get_args(Strategy.__value__)

# Dense (n, d) arrays or scipy sparse matrices (CSR preferred); scipy ships no type stubs.
Features = Any

# Share of the largest score given to scores <= 0 in power_sample: small enough never to compete
# with a real score, large enough that log() stays finite and those items can still be drawn.
_FLOOR_SHARE = 1e-6


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")


def _check_k(k: int) -> None:
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")


def _finite_vector(values: np.ndarray, name: str) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float64)
    if vector.ndim != 1:
        raise ValueError(f"{name} must be a vector, got shape {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise ValueError(f"{name} must be finite")
    return vector


def priority(uncertainty: Uncertainty, strategy: str) -> np.ndarray:
    """How worth labeling each item is under a strategy (float64, higher = ask sooner).

    "random" has no preference, so every item gets 0.
    """
    _check_strategy(strategy)
    if strategy == "least_confidence":
        return 1.0 - uncertainty.confidence
    if strategy in ("margin", "diverse_margin"):
        return 1.0 - uncertainty.margin
    if strategy == "entropy":
        return np.asarray(uncertainty.entropy, dtype=np.float64).copy()
    return np.zeros(uncertainty.confidence.shape[0], dtype=np.float64)


def power_sample(
    scores: np.ndarray, k: int, *, rng: np.random.Generator, beta: float = 1.0
) -> np.ndarray:
    """Draw k distinct indices, sequentially without replacement, with P(i) ∝ scores[i] ** beta.

    Stochastic power sampling (Kirsch et al. 2023): a top-k batch piles up near-copies of one
    confusing item, while sampling in proportion to the score spreads the batch at no extra cost.
    Indices come back in draw order; all of them (in a random order) when k >= len(scores).
    """
    _check_k(k)
    if beta < 0 or not math.isfinite(beta):
        raise ValueError(f"beta must be finite and >= 0, got {beta}")
    s = _finite_vector(scores, "scores")
    n = s.shape[0]
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    # The floor is relative to the largest score so that the result does not depend on the scale
    # of the scores; with no positive score at all the draw is uniform.
    largest = float(s.max())
    floor = largest * _FLOOR_SHARE if largest > 0 else 1.0
    log_weights = beta * np.log(np.maximum(s, floor))
    # Gumbel-top-k: the k largest of log-weight + Gumbel noise are distributed exactly like k
    # sequential draws without replacement, in one vectorized pass.
    keys = log_weights + rng.gumbel(size=n)
    chosen = np.argpartition(-keys, k - 1)[:k]
    return chosen[np.argsort(-keys[chosen], kind="stable")].astype(np.int64)


def _normalized_rows(features: Features) -> Any:
    """Float64 copy of the features with unit-L2 rows (zero rows stay zero), sparse stays sparse."""
    if sparse.issparse(features):
        x = sparse.csr_matrix(features, dtype=np.float64)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1), dtype=np.float64).ravel())
        norms[norms == 0] = 1.0
        return sparse.diags(1.0 / norms) @ x
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be an (n, d) matrix, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1)
    norms[norms == 0] = 1.0
    return x / norms[:, None]


def _similarities(x: Any, row: int) -> np.ndarray:
    """Cosine similarity of one normalized row against all rows, as a dense (n,) vector."""
    if sparse.issparse(x):
        # Sparse (n, d) @ (d, 1): only the product is densified, never the matrix.
        return np.asarray((x @ x[row].T).toarray(), dtype=np.float64).ravel()
    return np.asarray(x @ x[row], dtype=np.float64)


def k_center_greedy(features: Features, k: int, *, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-center on cosine distance: each pick is the row farthest from all picks so far.

    Starts from a uniformly random row; ties go to the lowest index. Returns k distinct row
    indices in pick order, or every row (0..n-1) when k >= n.
    """
    _check_k(k)
    n = features.shape[0]
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    x = _normalized_rows(features)
    chosen = [int(rng.integers(n))]
    # Distance to the nearest pick; on unit rows 1 - cosine is monotone in the L2 distance.
    nearest = 1.0 - _similarities(x, chosen[0])
    nearest[chosen[0]] = -np.inf
    for _ in range(k - 1):
        # Picked rows sit at -inf, so duplicates of a picked row (distance 0) can still be chosen
        # and the result always has k distinct indices.
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        np.minimum(nearest, 1.0 - _similarities(x, nxt), out=nearest)
        nearest[nxt] = -np.inf
    return np.asarray(chosen, dtype=np.int64)


def _top_k(priorities: np.ndarray, k: int) -> np.ndarray:
    # A stable sort on the negated scores keeps equal priorities in index order, so the same
    # scores always give the same batch.
    return np.argsort(-priorities, kind="stable")[:k].astype(np.int64)


def choose_batch(
    priorities: np.ndarray,
    k: int,
    *,
    strategy: str,
    rng: np.random.Generator,
    random_share: float = 0.1,
    features: Features = None,
    candidate_factor: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick k distinct items: (indices into priorities, mask of the uniformly random explorers).

    ceil(random_share * k) explorers are drawn uniformly from the whole pool first, so they stay
    an unbiased sample (the honest yardstick and the guard against sampling bias); the strategy
    fills the rest from the remaining items, in its own order, after the explorers.
    "diverse_margin" takes the candidate_factor * k highest priorities and spreads the batch over
    them with k_center_greedy on their feature rows (features aligned with priorities), or with
    power_sample when there are no features. When k >= n every item is returned, none marked.
    """
    _check_strategy(strategy)
    _check_k(k)
    if not 0.0 <= random_share <= 1.0:
        raise ValueError(f"random_share must be in [0, 1], got {random_share}")
    if candidate_factor < 1:
        raise ValueError(f"candidate_factor must be >= 1, got {candidate_factor}")
    p = _finite_vector(priorities, "priorities")
    n = p.shape[0]
    if features is not None and features.shape[0] != n:
        raise ValueError(f"features have {features.shape[0]} rows for {n} priorities")
    if k >= n:
        return np.arange(n, dtype=np.int64), np.zeros(n, dtype=bool)

    # The tolerance keeps float products such as 0.1 * 30 = 3.0000000000000004 from rounding up.
    n_random = min(k, math.ceil(random_share * k - 1e-9))
    explorers = rng.choice(n, size=n_random, replace=False).astype(np.int64)
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), explorers, assume_unique=True)
    n_rest = k - n_random

    if n_rest == 0:
        picked = np.zeros(0, dtype=np.int64)
    elif strategy == "random":
        picked = rng.choice(rest, size=n_rest, replace=False).astype(np.int64)
    elif strategy == "diverse_margin":
        candidates = rest[_top_k(p[rest], candidate_factor * n_rest)]
        if features is None:
            picked = candidates[power_sample(p[candidates], n_rest, rng=rng)]
        else:
            picked = candidates[k_center_greedy(features[candidates], n_rest, rng=rng)]
    else:
        picked = rest[_top_k(p[rest], n_rest)]

    indices = np.concatenate([picked, explorers])
    is_random = np.concatenate([np.zeros(picked.shape[0], dtype=bool), np.ones(n_random, bool)])
    return indices, is_random


def cold_start(features: Features, k: int, *, rng: np.random.Generator) -> np.ndarray:
    """A diverse first batch with no model: k_center_greedy over a random subsample of <= 20k rows.

    The subsample keeps the cost bounded on a large pool while still covering all of it, rather
    than only the first rows an import happened to put first.
    """
    _check_k(k)
    n = features.shape[0]
    if k >= n:
        return np.arange(n, dtype=np.int64)
    subsample = np.sort(rng.choice(n, size=min(n, 20 * k), replace=False))
    picks: np.ndarray = subsample[k_center_greedy(features[subsample], k, rng=rng)]
    return picks.astype(np.int64)
