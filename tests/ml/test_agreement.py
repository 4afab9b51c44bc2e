"""Agreement statistics against published worked examples, sklearn, and their edge cases."""

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from app.ml.agreement import (
    bootstrap_interval,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha_nominal,
    percent_agreement,
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", example C: observers A-D as
# rows, units as columns, "*" missing. Published nominal alpha = 0.743.
KRIPPENDORFF_ROWS = [
    "1 2 3 3 2 1 4 1 2 * * *",
    "1 2 3 3 2 2 4 1 2 5 * 3",
    "* 3 3 3 2 3 4 2 2 5 1 *",
    "1 2 3 3 2 4 4 1 2 5 1 *",
]
KRIPPENDORFF_UNITS = [
    [value for value in column if value != "*"]
    for column in zip(*(row.split() for row in KRIPPENDORFF_ROWS), strict=True)
]

# Wikipedia "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories, kappa = 0.210.
FLEISS_COUNTS = [
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
FLEISS_UNITS = [
    [str(category) for category, count in enumerate(row) for _ in range(count)]
    for row in FLEISS_COUNTS
]


def test_krippendorff_published_example_with_missing_data() -> None:
    alpha = krippendorff_alpha_nominal(KRIPPENDORFF_UNITS)
    assert alpha == pytest.approx(0.743, abs=0.001)


def test_krippendorff_ignores_single_label_items() -> None:
    # The last unit of the example has one value; adding more such units must change nothing.
    padded = [*KRIPPENDORFF_UNITS, ["1"], ["9"], []]
    assert krippendorff_alpha_nominal(padded) == krippendorff_alpha_nominal(KRIPPENDORFF_UNITS)


def test_krippendorff_all_agree_is_one() -> None:
    assert krippendorff_alpha_nominal([["a", "a"], ["b", "b", "b"]]) == 1.0
    # Single label everywhere: documented choice of 1.0 rather than undefined.
    assert krippendorff_alpha_nominal([["a", "a"], ["a", "a", "a"]]) == 1.0


def test_krippendorff_nothing_to_compare() -> None:
    assert krippendorff_alpha_nominal([]) is None
    assert krippendorff_alpha_nominal([["a"], ["b"], []]) is None


def test_krippendorff_systematic_disagreement_is_negative() -> None:
    alpha = krippendorff_alpha_nominal([["a", "b"], ["a", "b"], ["b", "a"]])
    assert alpha is not None and alpha < 0


def test_fleiss_wikipedia_example() -> None:
    assert fleiss_kappa(FLEISS_UNITS) == pytest.approx(0.210, abs=0.001)


def test_fleiss_edge_cases() -> None:
    assert fleiss_kappa([]) is None
    assert fleiss_kappa([["a"], ["b"]]) is None
    # One label everywhere: P_e == 1 and kappa is undefined.
    assert fleiss_kappa([["a", "a"], ["a", "a", "a"]]) is None
    assert fleiss_kappa([["a", "a"], ["b", "b", "b"], ["c"]]) == pytest.approx(1.0)
    # Single-label items neither add to P_bar nor to the label proportions.
    assert fleiss_kappa([*FLEISS_UNITS, ["0"], ["4"]]) == fleiss_kappa(FLEISS_UNITS)


def test_cohen_matches_sklearn() -> None:
    rng = np.random.default_rng(7)
    first = rng.choice(["x", "y", "z"], size=200)
    second = np.where(rng.random(200) < 0.6, first, rng.choice(["x", "y", "z"], size=200))
    pairs = [(str(a), str(b)) for a, b in zip(first, second, strict=True)]
    expected = cohen_kappa_score(first, second)
    assert cohen_kappa(pairs) == pytest.approx(expected, abs=1e-12)


def test_cohen_edge_cases() -> None:
    assert cohen_kappa([]) is None
    assert cohen_kappa([("a", "a"), ("a", "a")]) is None
    assert cohen_kappa([("a", "a"), ("b", "b")]) == pytest.approx(1.0)
    assert cohen_kappa([("a", "b"), ("b", "a")]) == pytest.approx(-1.0)


def test_percent_agreement() -> None:
    # Pair shares: 1.0, 0.0, 1/3 (one agreeing pair of three); the single-label item is ignored.
    units = [["a", "a"], ["a", "b"], ["a", "a", "b"], ["c"]]
    assert percent_agreement(units) == pytest.approx((1.0 + 0.0 + 1 / 3) / 3)
    assert percent_agreement([]) is None
    assert percent_agreement([["a"]]) is None


def test_bootstrap_brackets_point_estimate_and_is_deterministic() -> None:
    point = krippendorff_alpha_nominal(KRIPPENDORFF_UNITS)
    assert point is not None
    first = bootstrap_interval(
        KRIPPENDORFF_UNITS, krippendorff_alpha_nominal, n_boot=500, rng=np.random.default_rng(0)
    )
    second = bootstrap_interval(
        KRIPPENDORFF_UNITS, krippendorff_alpha_nominal, n_boot=500, rng=np.random.default_rng(0)
    )
    assert first is not None
    assert first == second
    low, high = first
    assert low <= point <= high
    assert low < high


def test_bootstrap_edge_cases() -> None:
    rng = np.random.default_rng(0)
    assert bootstrap_interval([], percent_agreement, rng=rng) is None
    assert bootstrap_interval([["a", "a"], ["b"]], percent_agreement, rng=rng) is None
    # Every resample undefined (single label everywhere) -> no interval.
    assert bootstrap_interval([["a", "a"], ["a", "a"]], fleiss_kappa, rng=rng) is None
    with pytest.raises(ValueError):
        bootstrap_interval(KRIPPENDORFF_UNITS, percent_agreement, n_boot=0, rng=rng)
    with pytest.raises(ValueError):
        bootstrap_interval(KRIPPENDORFF_UNITS, percent_agreement, level=1.0, rng=rng)
