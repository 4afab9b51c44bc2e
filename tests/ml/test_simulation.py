"""Active-learning replay on a small synthetic set, and the savings arithmetic."""

from typing import Any

import numpy as np
import pytest
from scipy import sparse
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from app.ml.simulation import (
    curve_at,
    kfold_learning_curves,
    labels_to_reach,
    learning_curves,
    savings,
)


def logistic() -> Any:
    return LogisticRegression(max_iter=1000)


def dataset(n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(
        n_samples=300,
        n_features=10,
        n_informative=5,
        n_classes=n_classes,
        class_sep=2.0,
        flip_y=0.0,
        random_state=0,
    )
    return x, y


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


class SwitchingStub:
    """Predicts parity of the feature while fit on fewer than 7 items, class 1 after that.

    Its accuracy on a test fold depends only on the fold's items and the number of labels, so the
    expected averages can be computed from the split alone.
    """

    def fit(self, x: np.ndarray, y: np.ndarray) -> "SwitchingStub":
        self.n_fit = len(y)
        self.classes_ = np.unique(y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.n_fit < 7:
            return np.asarray(x[:, 0] % 2, dtype=np.int64)
        return np.ones(x.shape[0], dtype=np.int64)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.full((x.shape[0], self.classes_.shape[0]), 1.0 / self.classes_.shape[0])


def small_set() -> tuple[np.ndarray, np.ndarray]:
    """Ten items, six of class 0 and four of class 1, in a fixed shuffled order."""
    y = np.random.default_rng(0).permutation(np.array([0] * 6 + [1] * 4))
    return np.arange(10, dtype=np.float64).reshape(-1, 1), y


def kfold_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "strategies": ["random", "margin"],
        "folds": 3,
        "seed_size": 10,
        "batch_size": 10,
        "budget": 50,
        "seed": 0,
        "make_classifier": logistic,
    }
    kwargs.update(overrides)
    return kwargs


def test_kfold_learning_curves_shape() -> None:
    x, y = dataset()
    curves = kfold_learning_curves(x, y, **kfold_kwargs(strategies=["random", "margin", "entropy"]))
    assert set(curves) == {"random", "margin", "entropy"}
    for curve in curves.values():
        assert [n for n, _ in curve] == [10, 20, 30, 40, 50]
        assert all(0.0 <= accuracy <= 1.0 for _, accuracy in curve)
    # Every strategy starts from the same seed set in every fold, so the first means agree.
    assert len({curve[0] for curve in curves.values()}) == 1


def test_kfold_averages_each_point_over_the_folds_that_reach_it() -> None:
    x, y = small_set()
    curves = kfold_learning_curves(
        x,
        y,
        **kfold_kwargs(
            strategies=["random", "margin", "diverse_margin"],
            seed_size=2,
            batch_size=2,
            budget=100,
            seed=4,
            make_classifier=SwitchingStub,
        ),
    )
    # Test folds of 4, 3 and 3 items leave pools of 6, 7 and 7: only two folds reach 7 labels.
    by_n: dict[int, list[float]] = {}
    splits = StratifiedKFold(n_splits=3, shuffle=True, random_state=4).split(x, y)
    for pool, test in splits:
        n_points = [2, 4, 6] + ([7] if pool.shape[0] == 7 else [])
        for n in n_points:
            predicted = x[test, 0] % 2 if n < 7 else 1
            by_n.setdefault(n, []).append(float(np.mean(y[test] == predicted)))
    assert [len(by_n[n]) for n in (2, 4, 6, 7)] == [3, 3, 3, 2]
    for curve in curves.values():
        assert [n for n, _ in curve] == [2, 4, 6, 7]
        means = [sum(by_n[n]) / len(by_n[n]) for n in (2, 4, 6, 7)]
        assert [accuracy for _, accuracy in curve] == pytest.approx(means)


def test_kfold_learning_curves_is_deterministic() -> None:
    x, y = dataset()
    first = kfold_learning_curves(x, y, **kfold_kwargs(seed=7))
    assert first == kfold_learning_curves(x, y, **kfold_kwargs(seed=7))
    assert first != kfold_learning_curves(x, y, **kfold_kwargs(seed=8))


def test_kfold_reports_progress_after_every_replay() -> None:
    x, y = small_set()
    reported: list[float] = []
    kfold_learning_curves(
        x,
        y,
        **kfold_kwargs(
            strategies=["random", "margin"],
            folds=4,
            seed_size=2,
            batch_size=3,
            budget=8,
            make_classifier=SwitchingStub,
            progress=reported.append,
        ),
    )
    assert reported == pytest.approx([k / 8 for k in range(1, 9)])
    assert reported[-1] == 1.0


def test_kfold_tolerates_a_class_smaller_than_folds() -> None:
    # Two items of class 1 for three folds: sklearn warns, which pytest here turns into an error.
    y = np.array([0, 1, 0, 0, 0, 0, 1, 0, 0, 0])
    x = np.arange(10, dtype=np.float64).reshape(-1, 1)
    curves = kfold_learning_curves(
        x, y, **kfold_kwargs(seed_size=2, batch_size=2, budget=4, make_classifier=SwitchingStub)
    )
    assert [n for n, _ in curves["random"]] == [2, 4]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"strategies": ["bald"]}, "unknown strategy"),
        ({"folds": 1}, "folds must be >= 2"),
        ({"folds": 11}, "exceeds the 10 items"),
        ({"folds": 7}, "largest class"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed_size": 1}, "seed_size"),
        ({"seed_size": 5, "budget": 4}, "seed_size"),
        ({"seed_size": 7, "budget": 10}, "exceeds a fold's pool"),
    ],
)
def test_kfold_rejects_bad_arguments(overrides: dict[str, Any], match: str) -> None:
    x, y = small_set()
    arguments = kfold_kwargs(seed_size=2, budget=6, make_classifier=SwitchingStub) | overrides
    with pytest.raises(ValueError, match=match):
        kfold_learning_curves(x, y, **arguments)


def test_kfold_rejects_bad_labels() -> None:
    x, y = small_set()
    kwargs = kfold_kwargs(seed_size=2, budget=6, make_classifier=SwitchingStub)
    with pytest.raises(ValueError, match="one entry per feature row"):
        kfold_learning_curves(x, y[:-1], **kwargs)
    with pytest.raises(ValueError, match="two classes"):
        kfold_learning_curves(x, np.zeros(10, dtype=np.int64), **kwargs)
    # Nine against one in two folds: the fold that tests the lone item has one class to learn.
    with pytest.raises(ValueError, match="single class"):
        kfold_learning_curves(x, np.array([0] * 9 + [1]), **(kwargs | {"folds": 2}))


def test_curve_at() -> None:
    curve = [(30, 0.65), (10, 0.5), (20, 0.7)]
    assert curve_at(curve, 9) is None
    assert curve_at(curve, 10) == 0.5
    assert curve_at(curve, 29) == 0.7
    assert curve_at(curve, 30) == 0.65
    assert curve_at(curve, 1000) == 0.65
    assert curve_at([], 10) is None
