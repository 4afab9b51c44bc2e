"""Inter-annotator agreement on nominal labels with missing data, vectorised over integer codes:
Krippendorff's alpha (with an exact, fast percentile bootstrap), Fleiss' and Cohen's kappa,
percent agreement, coincidences, and per-label, per-item and per-annotator agreement."""

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Votes:
    """Non-abstaining human labels as parallel int64 arrays (one entry per (item, annotator) label).

    An annotator labels an item at most once; items and annotators without any vote may exist
    (codes below n_items / n_annotators that never occur).
    """

    item: np.ndarray
    """Item code of each vote, 0..n_items-1."""
    annotator: np.ndarray
    """Annotator code of each vote, 0..n_annotators-1."""
    label: np.ndarray
    """Label code of each vote, 0..n_labels-1."""
    n_items: int
    n_annotators: int
    n_labels: int
    item_keys: tuple[Hashable, ...] = ()
    """The caller's key of each item code when built by from_triples, else empty."""
    annotator_keys: tuple[Hashable, ...] = ()
    """The caller's key of each annotator code when built by from_triples, else empty."""
    by_item: np.ndarray = field(init=False, repr=False)
    """Vote positions ordered by (item, annotator): every item's votes are contiguous."""

    def __post_init__(self) -> None:
        for name, size in (
            ("n_items", self.n_items),
            ("n_annotators", self.n_annotators),
            ("n_labels", self.n_labels),
        ):
            if size < 0:
                raise ValueError(f"{name} must be >= 0, got {size}")
        arrays = {}
        for name, size in (
            ("item", self.n_items),
            ("annotator", self.n_annotators),
            ("label", self.n_labels),
        ):
            codes = np.asarray(getattr(self, name))
            if codes.ndim != 1 or not (codes.size == 0 or np.issubdtype(codes.dtype, np.integer)):
                raise ValueError(f"{name} must be a 1-D integer array")
            codes = codes.astype(np.int64, copy=False)
            if codes.size and (codes.min() < 0 or codes.max() >= size):
                raise ValueError(f"{name} codes must lie in [0, {size})")
            arrays[name] = codes
            object.__setattr__(self, name, codes)
        if not len(arrays["item"]) == len(arrays["annotator"]) == len(arrays["label"]):
            raise ValueError("item, annotator and label must have the same length")
        for name, keys, size in (
            ("item_keys", self.item_keys, self.n_items),
            ("annotator_keys", self.annotator_keys, self.n_annotators),
        ):
            if keys and len(keys) != size:
                raise ValueError(f"{name} must be empty or hold {size} keys, got {len(keys)}")
        key = arrays["item"] * self.n_annotators + arrays["annotator"]
        n_keys = self.n_items * self.n_annotators
        if key.size < 2 or bool(np.all(key[1:] > key[:-1])):
            order = np.arange(key.size, dtype=np.int64)  # already sorted, e.g. by ORDER BY
        elif n_keys <= 8 * key.size + 1024:
            # Dense enough for a counting sort: O(votes + keys), ~10x faster than argsort.
            seen = np.bincount(key, minlength=n_keys)
            if seen.max() > 1:
                raise ValueError("an annotator labelled the same item more than once")
            order = np.empty(key.size, dtype=np.int64)
            order[(np.cumsum(seen) - 1)[key]] = np.arange(key.size)
        else:
            order = np.argsort(key, kind="stable")
            if np.any(key[order][1:] == key[order][:-1]):
                raise ValueError("an annotator labelled the same item more than once")
        object.__setattr__(self, "by_item", order)

    @classmethod
    def from_triples(
        cls,
        triples: Iterable[tuple[Hashable, Hashable, str]],
        *,
        labels: Sequence[str],
        items: Sequence[Hashable] = (),
        annotators: Sequence[Hashable] = (),
    ) -> "Votes":
        """Code (item_key, annotator_key, label) triples; label codes are positions in `labels`.

        Item and annotator codes follow `items` / `annotators` first (so items nobody labelled
        can be included), then keys in the order they are first seen in `triples`.
        `item_keys` / `annotator_keys` map codes back to keys. Unknown labels and a repeated
        (item, annotator) pair raise ValueError.
        """
        label_codes = {label: code for code, label in enumerate(labels)}
        if len(label_codes) != len(labels):
            raise ValueError("labels must be distinct")
        item_codes: dict[Hashable, int] = {}
        annotator_codes: dict[Hashable, int] = {}
        for key in items:
            item_codes.setdefault(key, len(item_codes))
        for key in annotators:
            annotator_codes.setdefault(key, len(annotator_codes))
        coded: list[tuple[int, int, int]] = []
        for item_key, annotator_key, label in triples:
            if label not in label_codes:
                raise ValueError(f"unknown label {label!r}")
            coded.append(
                (
                    item_codes.setdefault(item_key, len(item_codes)),
                    annotator_codes.setdefault(annotator_key, len(annotator_codes)),
                    label_codes[label],
                )
            )
        columns = np.array(coded, dtype=np.int64).reshape(-1, 3)
        return cls(
            item=columns[:, 0],
            annotator=columns[:, 1],
            label=columns[:, 2],
            n_items=len(item_codes),
            n_annotators=len(annotator_codes),
            n_labels=len(labels),
            item_keys=tuple(item_codes),
            annotator_keys=tuple(annotator_codes),
        )


def label_counts(votes: Votes) -> np.ndarray:
    """(n_items, n_labels) int64: how many annotators gave each item each label."""
    flat = np.bincount(
        votes.item * votes.n_labels + votes.label, minlength=votes.n_items * votes.n_labels
    )
    return flat.astype(np.int64, copy=False).reshape(votes.n_items, votes.n_labels)


def _check_counts(counts: np.ndarray) -> np.ndarray:
    array = np.asarray(counts)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"counts must be a 2-D integer array, got {array.dtype} {array.shape}")
    if array.size and array.min() < 0:
        raise ValueError("counts must be non-negative")
    return array.astype(np.int64, copy=False)


def _pairable(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # An item with fewer than two labels offers no pair to compare, so every statistic skips it.
    array = _check_counts(counts)
    m = array.sum(axis=1)
    keep = m >= 2
    return array[keep], m[keep]


def _observed_disagreement(pairable: np.ndarray, m: np.ndarray) -> np.ndarray:
    # Off-diagonal coincidence mass of each item: ordered c != k pairs weighted 1 / (m_u - 1).
    squares: np.ndarray = np.einsum("ij,ij->i", pairable, pairable)
    observed: np.ndarray = (m * m - squares) / (m - 1)
    return observed


def krippendorff_alpha_nominal(counts: np.ndarray) -> float | None:
    """Krippendorff's alpha for nominal data via the coincidence matrix (Krippendorff 2011).

    `counts` is (n_items, n_labels), e.g. from label_counts; items with < 2 labels are ignored.
    Returns None when fewer than two pairable values exist. When every pairable value carries the
    same label, expected disagreement is 0 and alpha is formally 0/0; we return 1.0 because
    observed disagreement is then necessarily 0 too, i.e. the annotators never disagreed.
    """
    pairable, m = _pairable(counts)
    totals = pairable.sum(axis=0)
    n = int(totals.sum())
    if n < 2:
        return None
    # sum_{c != k} n_c n_k, computed from the marginals without building the matrix; exact ints.
    expected_pairs = n * n - int(totals @ totals)
    if expected_pairs == 0:
        return 1.0
    observed = float(_observed_disagreement(pairable, m).sum())
    return 1.0 - (n - 1) * observed / expected_pairs


def coincidence_matrix(counts: np.ndarray) -> np.ndarray:
    """Krippendorff's (K, K) coincidence matrix o_ck over items with >= 2 labels (float64).

    o_ck = sum_u n_uc (n_uk - [c == k]) / (m_u - 1); symmetric, rows sum to the label totals n_c,
    and the off-diagonal cells count how often two annotators of one item chose c and k.
    """
    pairable, m = _pairable(counts)
    values = pairable.astype(np.float64)  # float @ float runs in BLAS; int64 @ float does not
    weighted = values / (m - 1)[:, None]
    matrix: np.ndarray = weighted.T @ values
    matrix[np.diag_indices_from(matrix)] -= weighted.sum(axis=0)
    return matrix


def per_label_agreement(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Specific agreement of each label and its number of pairable values n_c.

    The first array holds, per label c, the chance that another annotator of the same item also
    chose c given that one did (o_cc / n_c), NaN where no pairable item has the label; the second
    holds n_c (int64).
    """
    pairable, m = _pairable(counts)
    n_c = pairable.sum(axis=0)
    # The diagonal of the coincidence matrix alone: o_cc = sum_u n_uc (n_uc - 1) / (m_u - 1).
    same = (pairable * (pairable - 1) / (m - 1)[:, None]).sum(axis=0)
    share = np.full(n_c.shape, np.nan)
    seen = n_c > 0
    share[seen] = same[seen] / n_c[seen]
    return share, n_c


def _agreeing_pair_share(pairable: np.ndarray, m: np.ndarray) -> np.ndarray:
    squares: np.ndarray = np.einsum("ij,ij->i", pairable, pairable)
    share: np.ndarray = (squares - m) / (m * (m - 1))
    return share


def item_disagreement(counts: np.ndarray) -> np.ndarray:
    """Per item, 1 - the share of its label pairs that agree; NaN for items with < 2 labels."""
    array = _check_counts(counts)
    m = array.sum(axis=1)
    keep = m >= 2
    out = np.full(len(array), np.nan)
    out[keep] = 1.0 - _agreeing_pair_share(array[keep], m[keep])
    return out


def percent_agreement(counts: np.ndarray) -> float | None:
    """Mean over pairable items of the share of label pairs that agree; None if none is pairable."""
    pairable, m = _pairable(counts)
    if len(m) == 0:
        return None
    return float(_agreeing_pair_share(pairable, m).mean())


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa generalised to a varying number of ratings per item.

    P_bar is the mean of the items' agreeing-pair shares, P_e the sum of squared label
    proportions over all pairable ratings. Returns None when no item has two or more ratings, or
    when chance agreement P_e is 1 (all ratings share one label), where kappa is undefined.
    """
    pairable, m = _pairable(counts)
    if len(m) == 0:
        return None
    totals = pairable.sum(axis=0)
    if np.count_nonzero(totals) < 2:
        return None
    proportions = totals / totals.sum()
    p_e = float(proportions @ proportions)
    p_bar = float(_agreeing_pair_share(pairable, m).mean())
    return (p_bar - p_e) / (1.0 - p_e)


@dataclass(frozen=True)
class PairKappa:
    """Cohen's kappa of annotators a < b over the n items both labelled."""

    a: int
    b: int
    kappa: float | None
    """None when chance agreement is 1 (both used one and the same label throughout)."""
    n: int


def _within_item_pairs(votes: Votes) -> tuple[np.ndarray, np.ndarray]:
    """Vote positions (first, second) of every same-item pair, first's annotator the smaller.

    Walks offsets d = 1, 2, ... inside each item's contiguous run, keeping only the votes that
    still have a partner d places on: the work is the number of pairs, sum_i m_i (m_i - 1) / 2,
    never n_annotators^2.
    """
    order = votes.by_item
    item = votes.item[order]
    if item.size < 2:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    starts = np.flatnonzero(np.r_[True, item[1:] != item[:-1]])
    sizes = np.diff(np.r_[starts, item.size])
    # Votes after each position within its item.
    remaining = np.repeat(starts + sizes, sizes) - np.arange(item.size) - 1
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    candidates = np.flatnonzero(remaining >= 1)
    offset = 1
    while candidates.size:
        firsts.append(candidates)
        seconds.append(candidates + offset)
        offset += 1
        candidates = candidates[remaining[candidates] >= offset]
    first = np.concatenate(firsts) if firsts else np.empty(0, dtype=np.int64)
    second = np.concatenate(seconds) if seconds else np.empty(0, dtype=np.int64)
    return order[first], order[second]


def pairwise_cohen_kappa(votes: Votes) -> list[PairKappa]:
    """Cohen's kappa for every annotator pair a < b that shares at least one item, by (a, b).

    Only each pair's marginals and agreement count are accumulated (not K x K tables), keyed by
    the pairs that actually co-occur, so 300 sparse annotators cost no more than 5 dense ones.
    """
    first, second = _within_item_pairs(votes)
    if first.size == 0:
        return []
    k = votes.n_labels
    pair_key = votes.annotator[first] * votes.n_annotators + votes.annotator[second]
    if votes.n_annotators**2 <= pair_key.size:
        # Few annotators: index the pair keys directly, no sort.
        seen = np.bincount(pair_key, minlength=votes.n_annotators**2) > 0
        present = np.flatnonzero(seen)
        pair = (np.cumsum(seen) - 1)[pair_key]
    else:
        present, pair = np.unique(pair_key, return_inverse=True)
    n_pairs = present.size
    n = np.bincount(pair, minlength=n_pairs)
    label_a = votes.label[first]
    label_b = votes.label[second]
    agree = np.bincount(pair, weights=label_a == label_b, minlength=n_pairs)
    marginal_a = np.bincount(pair * k + label_a, minlength=n_pairs * k).reshape(n_pairs, k)
    marginal_b = np.bincount(pair * k + label_b, minlength=n_pairs * k).reshape(n_pairs, k)
    # Integer sum_k r_k c_k == n^2 exactly when chance agreement is 1.
    chance_pairs = np.einsum("ij,ij->i", marginal_a, marginal_b)
    n_float = n.astype(np.float64)
    p_o = agree / n_float
    p_e = chance_pairs / (n_float * n_float)
    defined = chance_pairs != n * n
    kappa = np.full(n_pairs, np.nan)
    kappa[defined] = (p_o[defined] - p_e[defined]) / (1.0 - p_e[defined])
    return [
        PairKappa(
            a=int(key // votes.n_annotators),
            b=int(key % votes.n_annotators),
            kappa=float(value) if ok else None,
            n=int(count),
        )
        for key, value, ok, count in zip(
            present.tolist(), kappa.tolist(), defined.tolist(), n.tolist(), strict=True
        )
    ]


def agreement_with_others(votes: Votes, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per annotator, how often their label equals the consensus of the item's OTHER annotators.

    The others' consensus is the unique most frequent label among the item's other votes (item
    counts minus the annotator's own vote); items where the others gave no label or tie are not
    counted. Returns (rate, counted): rate is NaN where nothing was counted.
    """
    array = _check_counts(counts)
    if array.shape != (votes.n_items, votes.n_labels):
        raise ValueError(f"counts must have shape {(votes.n_items, votes.n_labels)}")
    a = votes.n_annotators
    if votes.item.size == 0 or votes.n_labels == 0:
        return np.full(a, np.nan), np.zeros(a, dtype=np.int64)
    # Per item: the top count M, how many labels reach it (T) and the best count below it (S).
    top = array.max(axis=1)
    n_top = np.count_nonzero(array == top[:, None], axis=1)
    below = np.where(array < top[:, None], array, 0).max(axis=1)
    own = array[votes.item, votes.label]
    m_top, t, s = top[votes.item], n_top[votes.item], below[votes.item]
    has_others = array.sum(axis=1)[votes.item] >= 2
    own_is_top = own == m_top
    # Removing the own vote from a top label: it stays the unique top if it led by more than one;
    # with exactly one other top label that label wins; otherwise the others are tied.
    agree = has_others & own_is_top & (t == 1) & (m_top - 1 > s)
    disagree = has_others & ((own_is_top & (t == 2)) | (~own_is_top & (t == 1)))
    counted = np.bincount(votes.annotator, weights=agree | disagree, minlength=a)
    agreed = np.bincount(votes.annotator, weights=agree, minlength=a)
    rate = np.full(a, np.nan)
    some = counted > 0
    rate[some] = agreed[some] / counted[some]
    return rate, counted.astype(np.int64)


# A pattern drawn about f times per resample costs ~100 ns as a multinomial category but ~20 ns
# per draw when placed by a uniform integer draw over the items: below this f, draw directly.
_DIRECT_DRAW_MAX_FREQUENCY = 6
# Replicates computed together: bounds the (chunk, distinct patterns) weight matrix in memory.
_REPLICATE_CHUNK = 128


def _distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(patterns, frequency, inverse) of the distinct rows of a non-negative int matrix."""
    base = int(rows.max()) + 1 if rows.size else 1
    if rows.shape[1] * np.log2(max(base, 2)) < 62:
        # One int64 key per row (the row read as digits in `base`): a 1-D unique, ~50x faster
        # than np.unique(axis=0)'s lexicographic sort of whole rows.
        weights = base ** np.arange(rows.shape[1], dtype=np.int64)
        keys = rows @ weights
        _, first, inverse, frequency = np.unique(
            keys, return_index=True, return_inverse=True, return_counts=True
        )
        return rows[first], frequency, inverse
    patterns, inverse, frequency = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
    return patterns, frequency, inverse.reshape(-1)


def _resample_weights(frequency: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, U) int64: how often each pattern occurs in a with-replacement resample of the
    n = sum(frequency) items, i.e. n_boot rows of Multinomial(n, frequency / n), exactly.

    Frequent patterns are multinomial categories. The rare ones share one more category, and its
    count in each replicate is spread over their items by uniform integer draws, which is the
    same law (each such item is equally likely) but far cheaper when most patterns are rare.
    """
    n = int(frequency.sum())
    n_patterns = frequency.size
    frequent = np.flatnonzero(frequency > _DIRECT_DRAW_MAX_FREQUENCY)
    rare = np.flatnonzero(frequency <= _DIRECT_DRAW_MAX_FREQUENCY)
    rare_items = np.repeat(rare, frequency[rare])  # the pattern of every rare item
    masses = np.append(frequency[frequent], rare_items.size)
    top = rng.multinomial(n, masses / n, size=n_boot)
    rare_total = top[:, -1]
    draws = rare_items[rng.integers(0, rare_items.size, size=int(rare_total.sum()))]
    cells = np.repeat(np.arange(n_boot, dtype=np.int64) * n_patterns, rare_total) + draws
    weights = np.bincount(cells, minlength=n_boot * n_patterns).reshape(n_boot, n_patterns)
    weights[:, frequent] = top[:, :-1]
    return weights.astype(np.int64, copy=False)


def _alpha_features(patterns: np.ndarray) -> np.ndarray:
    """Per pattern: its label counts and its observed disagreement, the additive parts of alpha."""
    m = patterns.sum(axis=1)
    features: np.ndarray = np.column_stack([patterns, _observed_disagreement(patterns, m)]).astype(
        np.float64
    )
    return features


def _alpha_from_sums(sums: np.ndarray) -> np.ndarray:
    """Alpha of each resample from its summed _alpha_features (one row per resample).

    Uses 1.0 where a resample carries a single label (expected disagreement 0), as the point
    estimate does; every resample of pairable items holds >= 2 values, so none is undefined.
    """
    totals, observed = sums[:, :-1], sums[:, -1]
    n = totals.sum(axis=1)
    expected_pairs = n * n - np.einsum("ij,ij->i", totals, totals)
    alpha = np.ones(len(sums))
    spread = expected_pairs > 0
    alpha[spread] = 1.0 - (n[spread] - 1.0) * observed[spread] / expected_pairs[spread]
    return alpha


def bootstrap_alpha_interval(
    counts: np.ndarray,
    *,
    n_boot: int = 1000,
    rng: np.random.Generator,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of Krippendorff's alpha, resampling items with replacement.

    Only pairable items are resampled (the others contribute nothing). A resample is fully
    described by how often each DISTINCT row of the counts occurs in it, a multinomial draw, and
    alpha is a function of weighted sums over those rows, so replicates are computed together
    with one matrix product per chunk. Returns None with fewer than two pairable items.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    pairable, _ = _pairable(counts)
    if len(pairable) < 2:
        return None
    patterns, frequency, _ = _distinct_rows(pairable)
    features = _alpha_features(patterns)
    sums = np.empty((n_boot, features.shape[1]))
    for start in range(0, n_boot, _REPLICATE_CHUNK):
        size = min(_REPLICATE_CHUNK, n_boot - start)
        # Float BLAS on integer-valued data: every sum stays far below 2**53, so it is exact.
        weights = _resample_weights(frequency, size, rng).astype(np.float64)
        sums[start : start + size] = weights @ features
    values = _alpha_from_sums(sums)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)
