"""Active-learning replay on a small synthetic set, and the savings arithmetic."""

from typing import Any

import numpy as np
import pytest
from scipy import sparse
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from app.ml.simulation import labels_to_reach, learning_curves, savings


def logistic() -> Any:
    return LogisticRegression(max_iter=1000)


def dataset(n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    return make_classification(
        n_samples=300,
        n_features=10,
        n_informative=5,
        n_classes=n_classes,
        class_sep=2.0,
        flip_y=0.0,
        random_state=0,
    )


def test_learning_curves_shape_and_margin_not_worse_than_random() -> None:
    x, y = dataset()
    curves = learning_curves(
        x,
        y,
        strategies=["random", "margin", "diverse_margin"],
        seed_size=10,
        batch_size=10,
        budget=80,
        seed=0,
        make_classifier=logistic,
    )
    assert set(curves) == {"random", "margin", "diverse_margin"}
    for curve in curves.values():
        n_labels = [n for n, _ in curve]
        assert n_labels == list(range(10, 81, 10))
        assert all(0.0 <= accuracy <= 1.0 for _, accuracy in curve)
    # Same seed set for every strategy: the first fit is identical.
    assert len({curve[0] for curve in curves.values()}) == 1
    assert curves["margin"][-1][1] >= curves["random"][-1][1]


def test_learning_curves_seed_without_every_class_and_sparse_input() -> None:
    x, y = dataset(n_classes=4)
    # Two seed items cannot cover four classes; predict_proba then has fewer columns.
    curves = learning_curves(
        sparse.csr_matrix(x),
        np.array(["a", "b", "c", "d"])[y],
        strategies=["margin", "entropy", "least_confidence"],
        seed_size=2,
        batch_size=7,
        budget=30,
        seed=3,
        make_classifier=logistic,
    )
    for curve in curves.values():
        assert [n for n, _ in curve] == [2, 9, 16, 23, 30]
        assert all(0.0 <= accuracy <= 1.0 for _, accuracy in curve)


def test_learning_curves_is_deterministic_and_stops_when_pool_is_empty() -> None:
    x, y = dataset()
    kwargs: dict[str, Any] = {
        "strategies": ["random"],
        "seed_size": 200,
        "batch_size": 25,
        "budget": 1000,
        "test_fraction": 0.2,
        "make_classifier": logistic,
    }
    first = learning_curves(x, y, seed=5, **kwargs)
    assert first == learning_curves(x, y, seed=5, **kwargs)
    # 240 pool items: 200 seed, then 25 and the last 15.
    assert [n for n, _ in first["random"]] == [200, 225, 240]


def test_learning_curves_rejects_bad_arguments() -> None:
    x, y = dataset()
    with pytest.raises(ValueError, match="unknown strategy"):
        learning_curves(
            x,
            y,
            strategies=["bald"],
            seed_size=10,
            batch_size=10,
            budget=20,
            make_classifier=logistic,
        )
    with pytest.raises(ValueError, match="seed_size"):
        learning_curves(
            x,
            y,
            strategies=["random"],
            seed_size=30,
            batch_size=10,
            budget=20,
            make_classifier=logistic,
        )


def test_labels_to_reach() -> None:
    curve = [(10, 0.5), (20, 0.7), (30, 0.65), (40, 0.8)]
    assert labels_to_reach(curve, 0.7) == 20
    assert labels_to_reach(curve, 0.75) == 40
    assert labels_to_reach(curve, 0.5) == 10
    assert labels_to_reach(curve, 0.81) is None
    assert labels_to_reach([], 0.1) is None


def test_savings_exact_fractions() -> None:
    curves = {
        "random": [(100, 0.50), (200, 0.60), (300, 0.70), (400, 0.75), (500, 0.80)],
        "margin": [(100, 0.60), (200, 0.72), (300, 0.81), (400, 0.85), (500, 0.86)],
        "entropy": [(100, 0.50), (200, 0.55), (300, 0.68), (400, 0.74), (500, 0.79)],
    }
    # random has 0.75 at 400 labels; margin gets there at 300, entropy only at 500.
    assert savings(curves, at_labels=400) == {"random": 1.0, "margin": 0.75, "entropy": 1.25}
    assert savings(curves, at_labels=200) == {"random": 1.0, "margin": 0.5, "entropy": 1.5}
    # Between points, the baseline's last point at or below at_labels counts.
    assert savings(curves, at_labels=450)["margin"] == pytest.approx(300 / 450)
    assert savings(curves, "margin", at_labels=300) == {
        "random": None,
        "margin": 1.0,
        "entropy": None,
    }
    with pytest.raises(ValueError):
        savings(curves, at_labels=50)
    with pytest.raises(ValueError):
        savings(curves, "bald", at_labels=100)
