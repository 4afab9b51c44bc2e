"""The likely causes of low agreement, found in the vote counts: the label pairs annotators split
between, the items that split them most, and the annotators far below the others. Each is
independent of the others; the agreement report turns each into a warning when it finds any."""

from dataclasses import dataclass

import numpy as np

from app.ml.agreement import coincidence_matrix, item_disagreement


@dataclass(frozen=True)
class SplitPair:
    """Two labels the annotators of one item chose between, first < second (label codes)."""

    first: int
    second: int
    disagreements: float
    """Off-diagonal coincidences of the pair, both directions: how often two annotators of an
    item chose these two labels (pairs weighted by 1 / (m_u - 1), as in alpha)."""
    share: float
    """disagreements over all the disagreement between labels."""


def confused_label_pairs(counts: np.ndarray, *, top: int) -> list[SplitPair]:
    """The `top` label pairs with the most disagreement, most first; pairs without any are left
    out. counts is the (items, labels) vote-count matrix."""
    coincidences = coincidence_matrix(counts)
    between = np.triu(coincidences + coincidences.T, k=1)
    total = between.sum()
    order = np.argsort(-between, axis=None)[:top]
    return [
        SplitPair(
            first=int(a),
            second=int(b),
            disagreements=float(between[a, b]),
            share=float(between[a, b] / total),
        )
        for a, b in zip(*np.unravel_index(order, between.shape), strict=True)
        if between[a, b] > 0
    ]


def most_disputed_items(counts: np.ndarray, *, top: int) -> list[tuple[int, float]]:
    """(item code, disagreement) of the `top` items whose label pairs agree least
    (ml.agreement.item_disagreement), ties by more votes first; items without any disagreement
    (or with fewer than two votes) are left out."""
    disagreement = item_disagreement(counts)
    scored = np.where(np.isnan(disagreement), -1.0, disagreement)
    order = np.lexsort((-counts.sum(axis=1), -scored))[:top]
    return [(int(code), float(disagreement[code])) for code in order if scored[code] > 0]


@dataclass(frozen=True, eq=False)
class BelowOthers:
    median: float
    """The median agreement with others over the comparable annotators."""
    annotators: np.ndarray
    """int64 codes of the annotators more than the margin below it, ascending."""


def annotators_below_others(
    agreement: np.ndarray,
    compared: np.ndarray,
    *,
    min_compared: int,
    margin: float,
    min_annotators: int = 3,
) -> BelowOthers | None:
    """The annotators whose agreement with the others (ml.agreement.agreement_with_others) lies
    more than `margin` under the median annotator's.

    Only annotators with at least min_compared compared labels count, and only when there are at
    least min_annotators of them: with fewer, the median is one of the two being compared. None
    then. agreement is NaN where it was not measured.
    """
    rates = np.asarray(agreement, dtype=np.float64)
    comparable = ~np.isnan(rates) & (np.asarray(compared) >= min_compared)
    if int(comparable.sum()) < min_annotators:
        return None
    median = float(np.median(rates[comparable]))
    below = np.flatnonzero(comparable & (rates < median - margin)).astype(np.int64)
    return BelowOthers(median=median, annotators=below)
