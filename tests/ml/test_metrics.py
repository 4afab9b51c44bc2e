"""classification_metrics() against scikit-learn, a hand-worked case and a Brier loop."""

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from app.ml.metrics import classification_metrics

LABELS = ["a", "b", "c"]


def test_hand_worked_example() -> None:
    y = np.array([0, 0, 1, 2])
    p = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.4, 0.5, 0.1],  # a predicted as b
            [0.1, 0.8, 0.1],
            [0.0, 0.0, 1.0],
        ]
    )
    result = classification_metrics(y, p, LABELS)
    assert result["accuracy"] == 0.75
    assert result["macro_f1"] == round((2 / 3 + 2 / 3 + 1) / 3, 6)
    # (0.09+0.04+0.01) + (0.36+0.25+0.01) + (0.01+0.04+0.01) + 0 = 0.82, over 4 items
    assert result["brier"] == pytest.approx(0.205, abs=1e-12)
    assert result["per_label"] == {
        "a": {"precision": 1.0, "recall": 0.5, "f1": 0.666667, "support": 2},
        "b": {"precision": 0.5, "recall": 1.0, "f1": 0.666667, "support": 1},
        "c": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
    }


def test_agrees_with_sklearn_and_a_brier_loop() -> None:
    rng = np.random.default_rng(3)
    labels = [f"l{i}" for i in range(6)]
    y = rng.integers(0, 6, size=300)
    p = rng.dirichlet(np.ones(6), size=300)
    # Lean the probabilities towards the truth so the scores are not all near chance.
    p[np.arange(300), y] += 0.5
    p /= p.sum(axis=1, keepdims=True)
    y_pred = p.argmax(axis=1)

    result = classification_metrics(y, p, labels)

    assert result["accuracy"] == pytest.approx(round(accuracy_score(y, y_pred), 6), abs=1e-9)
    assert result["macro_f1"] == pytest.approx(
        round(f1_score(y, y_pred, average="macro"), 6), abs=1e-9
    )
    brier = 0.0
    for i in range(300):
        for k in range(6):
            brier += (p[i, k] - (1.0 if y[i] == k else 0.0)) ** 2
    assert result["brier"] == pytest.approx(round(brier / 300, 6), abs=1e-9)
    precision, recall, f1, support = precision_recall_fscore_support(y, y_pred, zero_division=0)
    for k, label in enumerate(labels):
        row = result["per_label"][label]
        assert row["precision"] == pytest.approx(precision[k], abs=1e-6)
        assert row["recall"] == pytest.approx(recall[k], abs=1e-6)
        assert row["f1"] == pytest.approx(f1[k], abs=1e-6)
        assert row["support"] == support[k]


def test_unseen_label_is_reported_but_not_averaged() -> None:
    # "c" has no examples and no predictions: its F1 is undefined, not a zero to average in.
    y = np.array([0, 1, 1])
    p = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0]])
    result = classification_metrics(y, p, LABELS)
    assert result["per_label"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert result["macro_f1"] == round((2 / 3 + 2 / 3) / 2, 6)


def test_output_is_plain_json() -> None:
    y = np.array([0, 1, 2, 2], dtype=np.int32)
    p = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
    result = classification_metrics(y, p, LABELS)
    assert json.loads(json.dumps(result)) == result
    assert type(result["accuracy"]) is float
    assert type(result["per_label"]["a"]["support"]) is int


def test_no_items() -> None:
    result = classification_metrics(np.zeros(0, dtype=np.int64), np.zeros((0, 3)), LABELS)
    assert result["accuracy"] is None and result["macro_f1"] is None and result["brier"] is None
    assert result["per_label"]["b"]["support"] == 0


@pytest.mark.parametrize(
    ("y", "p"),
    [
        (np.array([0, 3]), np.full((2, 3), 1 / 3)),  # index out of range
        (np.array([0, 1]), np.full((2, 2), 0.5)),  # wrong number of columns
        (np.array([0]), np.full((2, 3), 1 / 3)),  # length mismatch
        (np.array([0.0, 1.0]), np.full((2, 3), 1 / 3)),  # not integer indices
    ],
)
def test_rejects_inconsistent_input(y: np.ndarray, p: np.ndarray) -> None:
    with pytest.raises(ValueError):
        classification_metrics(y, p, LABELS)
