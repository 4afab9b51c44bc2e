"""Continuous labeling, the pure part: which production predictions go to review each day,
and how often humans disagree with the model (rates with Wilson intervals, by period)."""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from app.ml.thresholds import wilson_interval

Bucket = Literal["day", "week"]
# 1970-01-01 (day 0) was a Thursday: shifting by 3 makes Monday weekday 0.
_EPOCH_TO_MONDAY = 3


@dataclass(frozen=True)
class DailySample:
    """Positions into the candidate arrays."""

    low_confidence: np.ndarray  # lowest confidence first
    random: np.ndarray  # ascending


def choose_daily_sample(
    confidence: np.ndarray,
    *,
    threshold: float,
    n_low_confidence: int,
    n_random: int,
    seed: int | Sequence[int],
) -> DailySample:
    """Up to n_low_confidence candidates with confidence below threshold, lowest first (ties:
    the earlier candidate), then up to n_random drawn uniformly without replacement from the
    others. The same inputs and seed always give the same sample."""
    confidence = np.asarray(confidence, dtype=np.float64)
    if confidence.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {confidence.shape}")
    if n_low_confidence < 0 or n_random < 0:
        raise ValueError("sample sizes must be >= 0")
    positions = np.arange(len(confidence))
    below = positions[confidence < threshold]
    low = below[np.argsort(confidence[below], kind="stable")][:n_low_confidence]
    rest = np.setdiff1d(positions, low, assume_unique=True)
    size = min(n_random, len(rest))
    if size == 0:
        return DailySample(low, np.zeros(0, dtype=np.int64))
    rng = np.random.default_rng(seed)
    return DailySample(low, np.sort(rng.choice(rest, size=size, replace=False)))


@dataclass(frozen=True)
class DisagreementRate:
    n_sampled: int
    n_decided: int
    n_disagreed: int
    rate: float | None  # n_disagreed / n_decided; None before any decision
    ci_low: float | None  # Wilson 95%
    ci_high: float | None


def disagreement_rate(decided: np.ndarray, disagreed: np.ndarray) -> DisagreementRate:
    """The share of decided predictions a human labeled otherwise, with its Wilson interval.
    `decided[i]`: prediction i's item has a human decision; `disagreed[i]`: and it differs."""
    decided = np.asarray(decided, dtype=bool)
    disagreed = np.asarray(disagreed, dtype=bool)
    if decided.shape != disagreed.shape or decided.ndim != 1:
        raise ValueError("decided and disagreed must be 1-D arrays of the same length")
    if np.any(disagreed & ~decided):
        raise ValueError("a prediction can only disagree with a decision")
    n_decided, n_disagreed = int(decided.sum()), int(disagreed.sum())
    if n_decided == 0:
        return DisagreementRate(len(decided), 0, 0, None, None, None)
    low, high = wilson_interval(n_disagreed, n_decided)
    rate = n_disagreed / n_decided
    return DisagreementRate(len(decided), n_decided, n_disagreed, rate, low, high)


def rates_by_group(
    keys: Sequence[Any], decided: np.ndarray, disagreed: np.ndarray
) -> list[tuple[Any, DisagreementRate]]:
    """One rate per distinct key, in ascending key order (keys of one comparable type)."""
    if len(keys) != len(decided):
        raise ValueError("keys, decided and disagreed must have the same length")
    if len(keys) == 0:
        return []
    decided = np.asarray(decided, dtype=bool)
    disagreed = np.asarray(disagreed, dtype=bool)
    groups: dict[Any, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(key, []).append(position)
    return [
        (key, disagreement_rate(decided[groups[key]], disagreed[groups[key]]))
        for key in sorted(groups)
    ]


def period_starts(days: np.ndarray, bucket: Bucket) -> np.ndarray:
    """The first day of each day's period, all as days since 1970-01-01 (UTC): the day
    itself, or the Monday of its ISO week."""
    days = np.asarray(days, dtype=np.int64)
    if bucket == "day":
        return days
    if bucket == "week":
        monday: np.ndarray = days - (days + _EPOCH_TO_MONDAY) % 7
        return monday
    raise ValueError(f"unknown bucket {bucket!r}")


def confusions(
    model_labels: Sequence[str], human_labels: Sequence[str | None]
) -> list[tuple[str, str, int]]:
    """(model label, human label, count) of the pairs that differ (None: undecided, skipped),
    most frequent first, ties by the labels."""
    if len(model_labels) != len(human_labels):
        raise ValueError("model_labels and human_labels must have the same length")
    counts = Counter(
        (model, human)
        for model, human in zip(model_labels, human_labels, strict=True)
        if human is not None and human != model
    )
    ordered = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    return [(model, human, n) for (model, human), n in ordered]
