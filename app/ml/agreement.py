"""Inter-annotator agreement on nominal labels with missing data (Krippendorff's alpha, Fleiss'
and Cohen's kappa, percent agreement) plus a percentile bootstrap over items."""

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

Units = Sequence[Sequence[str]]
"""Reliability data: one entry per item, holding the labels it received (abstentions removed)."""


def _pairable(units: Units) -> list[Sequence[str]]:
    # An item with fewer than two labels offers no pair to compare, so every statistic skips it.
    return [unit for unit in units if len(unit) >= 2]


def krippendorff_alpha_nominal(units: Units) -> float | None:
    """Krippendorff's alpha for nominal data via the coincidence matrix (Krippendorff 2011).

    Returns None when fewer than two pairable values exist. When every pairable value carries the
    same label, expected disagreement is 0 and alpha is formally 0/0; we return 1.0 because
    observed disagreement is then necessarily 0 too, i.e. the annotators never disagreed.
    """
    pairable = _pairable(units)
    totals: Counter[str] = Counter()
    observed = 0.0
    for unit in pairable:
        counts = Counter(unit)
        totals.update(counts)
        m = len(unit)
        # Off-diagonal mass of this unit's coincidences: ordered c != k pairs, weighted 1/(m_u - 1).
        observed += (m * m - sum(c * c for c in counts.values())) / (m - 1)
    n = sum(totals.values())
    if n < 2:
        return None
    # sum_{c != k} n_c n_k, computed from the marginals without building the matrix.
    expected_pairs = float(n * n - sum(c * c for c in totals.values()))
    if expected_pairs == 0.0:
        return 1.0
    return 1.0 - (n - 1) * observed / expected_pairs


def fleiss_kappa(units: Units) -> float | None:
    """Fleiss' kappa generalised to a varying number of ratings per item.

    Returns None when no item has two or more ratings, or when chance agreement P_e is 1 (all
    ratings share one label), where kappa is undefined.
    """
    pairable = _pairable(units)
    if not pairable:
        return None
    totals: Counter[str] = Counter()
    p_items = np.empty(len(pairable), dtype=np.float64)
    for i, unit in enumerate(pairable):
        counts = Counter(unit)
        totals.update(counts)
        m = len(unit)
        p_items[i] = sum(c * (c - 1) for c in counts.values()) / (m * (m - 1))
    proportions = np.array(list(totals.values()), dtype=np.float64) / sum(totals.values())
    p_e = float(np.sum(proportions**2))
    if p_e >= 1.0:
        return None
    return (float(p_items.mean()) - p_e) / (1.0 - p_e)


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa for two annotators over the items both labelled.

    Returns None for no pairs, or when chance agreement is 1 (both annotators used one and the
    same label throughout), where kappa is undefined.
    """
    if not pairs:
        return None
    n = len(pairs)
    first = Counter(a for a, _ in pairs)
    second = Counter(b for _, b in pairs)
    p_o = sum(a == b for a, b in pairs) / n
    p_e = sum(first[label] * second[label] for label in first) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def percent_agreement(units: Units) -> float | None:
    """Mean over pairable items of the share of label pairs that agree; None if none is pairable."""
    pairable = _pairable(units)
    if not pairable:
        return None
    shares = [
        sum(c * (c - 1) for c in Counter(unit).values()) / (len(unit) * (len(unit) - 1))
        for unit in pairable
    ]
    return float(np.mean(shares))


def bootstrap_interval(
    units: Units,
    statistic: Callable[[Units], float | None],
    *,
    n_boot: int = 1000,
    rng: np.random.Generator,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval for `statistic`, resampling items with replacement.

    Resamples where the statistic is None are skipped. Returns None with fewer than two pairable
    items, or when every resample was skipped.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    # Single-label items contribute nothing to any statistic here, so drawing only pairable items
    # gives the same estimand without resamples diluted by items that are ignored anyway.
    pairable = _pairable(units)
    if len(pairable) < 2:
        return None
    values: list[float] = []
    for _ in range(n_boot):
        indices = rng.integers(0, len(pairable), size=len(pairable))
        value = statistic([pairable[i] for i in indices])
        if value is not None:
            values.append(value)
    if not values:
        return None
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(np.array(values, dtype=np.float64), [tail, 1.0 - tail])
    return float(low), float(high)
