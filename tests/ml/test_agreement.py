"""Agreement statistics against published examples, reference libraries and slow per-item
reference implementations, and their edge cases."""

from collections import Counter
from fractions import Fraction
from itertools import combinations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss_kappa

from app.ml import agreement
from app.ml.agreement import (
    PairKappa,
    Votes,
    agreement_with_others,
    bootstrap_alpha_interval,
    coincidence_matrix,
    fleiss_kappa,
    item_disagreement,
    krippendorff_alpha_nominal,
    label_counts,
    pairwise_cohen_kappa,
    per_label_agreement,
    percent_agreement,
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the nominal example with
# missing data: observers A-D as rows, units as columns, "*" missing. Published alpha = 0.743.
KRIPPENDORFF_ROWS = [
    "1 2 3 3 2 1 4 1 2 * * *",
    "1 2 3 3 2 2 4 1 2 5 * 3",
    "* 3 3 3 2 3 4 2 2 5 1 *",
    "1 2 3 3 2 4 4 1 2 5 1 *",
]
LABELS = ["1", "2", "3", "4", "5"]

# Wikipedia "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories, kappa = 0.210.
FLEISS_COUNTS = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def krippendorff_votes() -> Votes:
    triples = [
        (unit, observer, value)
        for observer, row in enumerate(KRIPPENDORFF_ROWS)
        for unit, value in enumerate(row.split())
        if value != "*"
    ]
    return Votes.from_triples(triples, labels=LABELS)


def random_votes(
    rng: np.random.Generator, *, n_items: int, n_annotators: int, n_labels: int, coverage: float
) -> Votes:
    """Annotators of random skill; each labels an item with probability `coverage`."""
    truth = rng.integers(0, n_labels, n_items)
    triples = []
    for annotator in range(n_annotators):
        skill = rng.uniform(0.3, 0.95)
        for item in range(n_items):
            if rng.random() < coverage:
                label = truth[item] if rng.random() < skill else rng.integers(0, n_labels)
                triples.append((item, annotator, str(label)))
    return Votes.from_triples(
        triples, labels=[str(c) for c in range(n_labels)], items=range(n_items)
    )


def units_of(votes: Votes) -> list[list[int]]:
    units: list[list[int]] = [[] for _ in range(votes.n_items)]
    for item, label in zip(votes.item, votes.label, strict=True):
        units[item].append(int(label))
    return units


def slow_coincidences(units: list[list[int]], n_labels: int) -> list[list[Fraction]]:
    """Krippendorff's coincidence matrix built pair by pair, in exact fractions."""
    matrix = [[Fraction(0)] * n_labels for _ in range(n_labels)]
    for unit in units:
        if len(unit) < 2:
            continue
        for i, j in ((i, j) for i in range(len(unit)) for j in range(len(unit)) if i != j):
            matrix[unit[i]][unit[j]] += Fraction(1, len(unit) - 1)
    return matrix


def slow_alpha(units: list[list[int]], n_labels: int) -> Fraction:
    """Krippendorff's nominal alpha = 1 - D_o / D_e from the coincidence matrix, exactly."""
    o = slow_coincidences(units, n_labels)
    totals = [sum(row, Fraction(0)) for row in o]
    n = sum(totals, Fraction(0))
    observed = sum(
        (o[c][k] for c in range(n_labels) for k in range(n_labels) if c != k), Fraction(0)
    )
    expected = sum(
        (totals[c] * totals[k] for c in range(n_labels) for k in range(n_labels) if c != k),
        Fraction(0),
    ) / (n - 1)
    return 1 - observed / expected


def test_votes_from_triples_codes_keys_in_order() -> None:
    votes = Votes.from_triples(
        [("u2", "bob", "y"), ("u1", "ann", "x"), ("u2", "ann", "x")],
        labels=["x", "y", "z"],
        items=["u0"],
    )
    # Given keys first, then first-seen order; keys map codes back.
    assert votes.item_keys == ("u0", "u2", "u1")
    assert votes.annotator_keys == ("bob", "ann")
    assert votes.item.tolist() == [1, 2, 1]
    assert votes.annotator.tolist() == [0, 1, 1]
    assert votes.label.tolist() == [1, 0, 0]
    assert (votes.n_items, votes.n_annotators, votes.n_labels) == (3, 2, 3)
    assert label_counts(votes).tolist() == [[0, 0, 0], [1, 1, 0], [1, 0, 0]]
    empty = Votes.from_triples([], labels=["x"])
    assert empty.item.shape == (0,) and label_counts(empty).shape == (0, 1)


def test_votes_reject_inconsistent_input() -> None:
    with pytest.raises(ValueError, match="unknown label"):
        Votes.from_triples([(0, "a", "q")], labels=["x"])
    with pytest.raises(ValueError, match="more than once"):
        Votes.from_triples([(0, "a", "x"), (1, "a", "x"), (0, "a", "y")], labels=["x", "y"])
    one = np.array([0])
    with pytest.raises(ValueError, match="label codes"):
        Votes(item=one, annotator=one, label=np.array([2]), n_items=1, n_annotators=1, n_labels=2)
    with pytest.raises(ValueError, match="same length"):
        Votes(
            item=one, annotator=one, label=np.array([0, 1]), n_items=1, n_annotators=1, n_labels=2
        )


def test_krippendorff_published_example_with_missing_data() -> None:
    votes = krippendorff_votes()
    alpha = krippendorff_alpha_nominal(label_counts(votes))
    assert alpha is not None and round(alpha, 3) == 0.743
    # n = 40 pairable values, off-diagonal coincidences 8, sum_{c != k} n_c n_k = 1216:
    # alpha = 1 - 39 * 8 / 1216 = 113/152 exactly.
    assert slow_alpha(units_of(votes), len(LABELS)) == Fraction(113, 152)
    assert alpha == pytest.approx(113 / 152, abs=1e-12)


def test_coincidence_matrix_matches_the_paper() -> None:
    matrix = coincidence_matrix(label_counts(krippendorff_votes()))
    # Row and column totals n_c of the published matrix: 9, 13, 10, 5, 3 (n = 40).
    assert matrix.sum(axis=1) == pytest.approx([9, 13, 10, 5, 3])
    assert matrix[0, 0] == pytest.approx(7) and matrix[0, 1] == pytest.approx(4 / 3)
    assert np.allclose(matrix, matrix.T)


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_statistics_match_per_item_formulas(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_labels = int(rng.integers(2, 7))
    votes = random_votes(rng, n_items=60, n_annotators=5, n_labels=n_labels, coverage=0.5)
    counts = label_counts(votes)
    units = units_of(votes)
    assert any(len(u) < 2 for u in units)  # single-label and empty items are in the mix
    pairable = [u for u in units if len(u) >= 2]

    alpha = krippendorff_alpha_nominal(counts)
    assert alpha == pytest.approx(float(slow_alpha(units, n_labels)), abs=1e-9)

    o = slow_coincidences(units, n_labels)
    assert np.allclose(coincidence_matrix(counts), np.array(o, dtype=float), atol=1e-9)

    share, n_c = per_label_agreement(counts)
    totals = [sum(Counter(u)[c] for u in pairable) for c in range(n_labels)]
    assert n_c.tolist() == totals
    for c in range(n_labels):
        if totals[c]:
            assert share[c] == pytest.approx(float(o[c][c]) / totals[c], abs=1e-9)
        else:
            assert np.isnan(share[c])

    def agreeing_share(unit: list[int]) -> float:
        pairs = list(combinations(unit, 2))
        return sum(a == b for a, b in pairs) / len(pairs)

    disagreement = item_disagreement(counts)
    for item, unit in enumerate(units):
        if len(unit) < 2:
            assert np.isnan(disagreement[item])
        else:
            assert disagreement[item] == pytest.approx(1 - agreeing_share(unit), abs=1e-9)
    shares = [agreeing_share(u) for u in pairable]
    assert percent_agreement(counts) == pytest.approx(np.mean(shares), abs=1e-9)

    proportions = np.array(totals) / sum(totals)
    p_e = float(proportions @ proportions)
    expected_kappa = (np.mean(shares) - p_e) / (1 - p_e)
    assert fleiss_kappa(counts) == pytest.approx(expected_kappa, abs=1e-9)

    # Agreement with the others' unique majority, item by item.
    agreed = np.zeros(votes.n_annotators)
    counted = np.zeros(votes.n_annotators)
    for item, annotator, label in zip(votes.item, votes.annotator, votes.label, strict=True):
        others = Counter(units[item])
        others[int(label)] -= 1
        top = max(others.values())
        winners = [c for c, v in others.items() if v == top]
        if top == 0 or len(winners) > 1:
            continue
        counted[annotator] += 1
        agreed[annotator] += winners[0] == label
    rates, compared = agreement_with_others(votes, counts)
    assert compared.tolist() == counted.astype(int).tolist()
    expected_rates = np.divide(agreed, counted, out=np.full_like(agreed, np.nan), where=counted > 0)
    assert np.allclose(rates, expected_rates, equal_nan=True, atol=1e-12)


def test_alpha_edge_cases() -> None:
    assert krippendorff_alpha_nominal(np.zeros((3, 2), dtype=np.int64)) is None
    assert krippendorff_alpha_nominal(np.array([[1, 0], [0, 1]])) is None  # nothing pairable
    assert krippendorff_alpha_nominal(np.array([[2, 0], [0, 3]])) == 1.0
    assert krippendorff_alpha_nominal(np.array([[2, 0], [3, 0]])) == 1.0  # one label: by choice
    assert krippendorff_alpha_nominal(np.array([[1, 1], [1, 1]])) == pytest.approx(-0.5)
    base = label_counts(krippendorff_votes())
    padded = np.vstack([base, np.zeros((3, 5), dtype=np.int64), np.eye(5, dtype=np.int64)[:2]])
    assert krippendorff_alpha_nominal(padded) == krippendorff_alpha_nominal(base)
    with pytest.raises(ValueError):
        krippendorff_alpha_nominal(np.array([[0.5, 1.5]]))
    with pytest.raises(ValueError):
        krippendorff_alpha_nominal(np.array([[-1, 3]]))


@pytest.mark.parametrize("seed", range(6))
def test_pairwise_cohen_kappa_equals_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_labels = int(rng.integers(2, 7))
    votes = random_votes(rng, n_items=80, n_annotators=4, n_labels=n_labels, coverage=0.7)
    by_annotator: list[dict[int, int]] = [{} for _ in range(votes.n_annotators)]
    for item, annotator, label in zip(votes.item, votes.annotator, votes.label, strict=True):
        by_annotator[annotator][int(item)] = int(label)
    pairs = pairwise_cohen_kappa(votes)
    assert [(p.a, p.b) for p in pairs] == sorted(
        (a, b)
        for a, b in combinations(range(votes.n_annotators), 2)
        if set(by_annotator[a]) & set(by_annotator[b])
    )
    for pair in pairs:
        shared = sorted(set(by_annotator[pair.a]) & set(by_annotator[pair.b]))
        first = [by_annotator[pair.a][i] for i in shared]
        second = [by_annotator[pair.b][i] for i in shared]
        assert pair.n == len(shared)
        assert pair.kappa == pytest.approx(cohen_kappa_score(first, second), abs=1e-9)


def test_pairwise_cohen_kappa_edge_cases() -> None:
    same = Votes.from_triples(
        [(0, "a", "x"), (0, "b", "x"), (1, "a", "x"), (1, "b", "x")], labels=["x", "y"]
    )
    assert pairwise_cohen_kappa(same) == [PairKappa(0, 1, None, 2)]  # chance agreement is 1
    opposite = Votes.from_triples(
        [(0, "a", "x"), (0, "b", "y"), (1, "a", "y"), (1, "b", "x")], labels=["x", "y"]
    )
    assert pairwise_cohen_kappa(opposite) == [PairKappa(0, 1, -1.0, 2)]
    # a and c never share an item; single-label items and annotators pair with nobody.
    apart = Votes.from_triples(
        [(0, "a", "x"), (0, "b", "x"), (1, "b", "y"), (1, "c", "y"), (2, "d", "x")],
        labels=["x", "y"],
    )
    assert [(p.a, p.b, p.n) for p in pairwise_cohen_kappa(apart)] == [(0, 1, 1), (1, 2, 1)]
    assert pairwise_cohen_kappa(Votes.from_triples([], labels=["x"])) == []


def test_pairwise_kappa_with_many_sparse_annotators() -> None:
    # 300 annotators, two per item: the work follows the pairs present, not annotators squared.
    rng = np.random.default_rng(3)
    triples = []
    shared: Counter[tuple[int, int]] = Counter()
    for item in range(600):
        first, second = sorted(int(a) for a in rng.choice(300, size=2, replace=False))
        label = str(rng.integers(0, 15))
        triples += [(item, f"ann{second:03}", label), (item, f"ann{first:03}", label)]
        shared[(first, second)] += 1
    votes = Votes.from_triples(
        triples, labels=[str(c) for c in range(15)], annotators=[f"ann{a:03}" for a in range(300)]
    )
    pairs = pairwise_cohen_kappa(votes)
    assert {(p.a, p.b): p.n for p in pairs} == dict(shared)
    # Always agreeing: kappa 1 unless the pair only ever saw one label (then undefined).
    assert all(p.kappa is None or p.kappa == pytest.approx(1.0) for p in pairs)


@pytest.mark.parametrize("seed", range(5))
def test_fleiss_kappa_equals_statsmodels_on_equal_counts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    raters, categories = int(rng.integers(2, 9)), int(rng.integers(2, 6))
    table = rng.multinomial(raters, rng.dirichlet(np.ones(categories)), size=50)
    assert fleiss_kappa(table) == pytest.approx(statsmodels_fleiss_kappa(table), abs=1e-9)


def test_fleiss_kappa_textbook_example_and_edge_cases() -> None:
    assert fleiss_kappa(FLEISS_COUNTS) == pytest.approx(0.210, abs=0.001)
    assert fleiss_kappa(np.array([[3, 0], [2, 0]])) is None  # one label: P_e == 1
    assert fleiss_kappa(np.array([[1, 0]])) is None  # nothing pairable
    assert fleiss_kappa(np.zeros((0, 3), dtype=np.int64)) is None
    assert fleiss_kappa(np.array([[2, 0], [0, 3], [0, 1]])) == pytest.approx(1.0)
    # Single-label items neither add to P_bar nor to the label proportions.
    padded = np.vstack([FLEISS_COUNTS, [[1, 0, 0, 0, 0], [0, 0, 0, 0, 1]]])
    assert fleiss_kappa(padded) == fleiss_kappa(FLEISS_COUNTS)


def test_percent_per_label_and_item_disagreement() -> None:
    counts = np.array([[2, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    assert percent_agreement(counts) == pytest.approx((1 + 0 + 0) / 3)
    assert np.allclose(item_disagreement(counts)[:3], [0.0, 1.0, 1.0])
    assert np.isnan(item_disagreement(counts)[3])
    agreement_rate, chosen = per_label_agreement(counts)
    assert list(chosen) == [4, 2, 1]
    # Label 0: of its 4 pairable uses, the 2 on item 0 are matched by another annotator.
    assert agreement_rate[0] == pytest.approx(2 / 4)
    assert agreement_rate[2] == 0.0
    assert percent_agreement(np.array([[1, 0]])) is None
    unused, none = per_label_agreement(np.array([[2, 0], [0, 1]]))
    assert unused[0] == 1.0 and np.isnan(unused[1]) and none.tolist() == [2, 0]
    assert coincidence_matrix(np.array([[1, 0]])).tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_agreement_with_others() -> None:
    # Item 0: a, b, c say x; item 1: a says x, b and c say y; item 2: a says x, b says y;
    # item 3: only a.
    triples = [
        (0, "a", "x"), (0, "b", "x"), (0, "c", "x"),
        (1, "a", "x"), (1, "b", "y"), (1, "c", "y"),
        (2, "a", "x"), (2, "b", "y"),
        (3, "a", "x"),
    ]  # fmt: skip
    votes = Votes.from_triples(triples, labels=["x", "y"])
    rates, compared = agreement_with_others(votes, label_counts(votes))
    # a: item 0 agrees, item 1 disagrees (others say y), item 2 disagrees (b says y), item 3
    # has no others. b: item 0 agrees, item 1's others tie (a=x, c=y) and are not counted,
    # item 2 disagrees. c: item 0 agrees, item 1's others tie.
    assert list(compared) == [3, 2, 1]
    assert list(rates) == pytest.approx([1 / 3, 1 / 2, 1.0])
    lonely = Votes.from_triples([(0, "a", "x")], labels=["x", "y"])
    rates, compared = agreement_with_others(lonely, label_counts(lonely))
    assert list(compared) == [0] and np.isnan(rates[0])
    with pytest.raises(ValueError, match="shape"):
        agreement_with_others(votes, label_counts(lonely))


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    votes = random_votes(
        np.random.default_rng(0), n_items=300, n_annotators=4, n_labels=4, coverage=0.8
    )
    counts = label_counts(votes)
    alpha = krippendorff_alpha_nominal(counts)
    first = bootstrap_alpha_interval(counts, rng=np.random.default_rng(7))
    second = bootstrap_alpha_interval(counts, rng=np.random.default_rng(7))
    assert first == second and first is not None and alpha is not None
    assert first[0] < alpha < first[1]
    narrower = bootstrap_alpha_interval(counts, rng=np.random.default_rng(7), level=0.5)
    assert narrower is not None and first[0] < narrower[0] < narrower[1] < first[1]


def test_bootstrap_edge_cases() -> None:
    rng = np.random.default_rng(0)
    assert bootstrap_alpha_interval(np.array([[2, 0]]), rng=rng) is None  # one pairable item
    assert bootstrap_alpha_interval(np.array([[1, 0], [0, 1], [0, 0]]), rng=rng) is None
    # One label everywhere: every resample's alpha is the documented 1.0.
    assert bootstrap_alpha_interval(np.array([[2, 0], [3, 0]]), rng=rng) == (1.0, 1.0)
    counts = label_counts(krippendorff_votes())
    with pytest.raises(ValueError):
        bootstrap_alpha_interval(counts, rng=rng, n_boot=0)
    with pytest.raises(ValueError):
        bootstrap_alpha_interval(counts, rng=rng, level=1.0)


def test_resample_sums_give_the_alpha_of_the_resampled_items() -> None:
    # The bootstrap's algebra, exactly: alpha from pattern-weighted sums equals alpha computed
    # afresh on the very items a naive resample drew.
    votes = random_votes(
        np.random.default_rng(5), n_items=120, n_annotators=5, n_labels=6, coverage=0.6
    )
    counts = label_counts(votes)
    pairable = counts[counts.sum(axis=1) >= 2]
    patterns, frequency, inverse = agreement._distinct_rows(pairable)
    assert np.array_equal(patterns[inverse], pairable)
    assert frequency.sum() == len(pairable)
    features = agreement._alpha_features(patterns)
    rng = np.random.default_rng(6)
    draws = rng.integers(0, len(pairable), size=(50, len(pairable)))
    weights = np.stack([np.bincount(inverse[d], minlength=len(patterns)) for d in draws])
    fast = agreement._alpha_from_sums(weights @ features)
    naive = [krippendorff_alpha_nominal(pairable[d]) for d in draws]
    assert fast == pytest.approx(naive, abs=1e-12)


def test_resample_weights_are_multinomial() -> None:
    # Frequent patterns (multinomial categories) and rare ones (placed by uniform draws) alike:
    # every replicate holds n items, and each pattern's count has mean n p and variance
    # n p (1 - p).
    frequency = np.array([400, 60, 9, 7, 6, 3, 2, 1, 1, 1, 1, 1] + [1] * 20)
    n, n_boot = int(frequency.sum()), 20_000
    weights = agreement._resample_weights(frequency, n_boot, np.random.default_rng(8))
    assert weights.shape == (n_boot, frequency.size)
    assert np.all(weights.sum(axis=1) == n) and weights.min() >= 0
    p = frequency / n
    mean_error = (weights.mean(axis=0) - n * p) / np.sqrt(n * p * (1 - p) / n_boot)
    assert np.all(np.abs(mean_error) < 5)
    assert np.allclose(weights.var(axis=0), n * p * (1 - p), rtol=0.1)
    # Two equally frequent rare patterns are negatively correlated like multinomial counts.
    correlation = np.corrcoef(weights[:, -1], weights[:, -2])[0, 1]
    assert correlation == pytest.approx(-p[-1] / (1 - p[-1]), abs=0.03)


@pytest.mark.parametrize(("n_annotators", "n_labels"), [(3, 3), (5, 8)])
def test_bootstrap_agrees_with_resampling_items_naively(n_annotators: int, n_labels: int) -> None:
    votes = random_votes(
        np.random.default_rng(1),
        n_items=250,
        n_annotators=n_annotators,
        n_labels=n_labels,
        coverage=0.8,
    )
    counts = label_counts(votes)
    pairable = counts[counts.sum(axis=1) >= 2]
    rng = np.random.default_rng(11)
    naive = [
        krippendorff_alpha_nominal(pairable[rng.integers(0, len(pairable), len(pairable))])
        for _ in range(4000)
    ]
    expected = np.quantile(np.asarray(naive, dtype=float), [0.025, 0.975])
    fast = bootstrap_alpha_interval(counts, rng=np.random.default_rng(12), n_boot=4000)
    assert fast is not None
    # Monte Carlo error of a 2.5% quantile with 4000 replicates is ~1.5% of the width.
    width = expected[1] - expected[0]
    assert fast == pytest.approx(tuple(expected), abs=0.1 * width)
