"""Quality metrics of out-of-fold class probabilities against human labels, JSON-ready."""

from collections.abc import Sequence
from typing import Any

import numpy as np

_DECIMALS = 6


def _round(value: float) -> float:
    return round(float(value), _DECIMALS)


def classification_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro F1, multi-class Brier score and per-label precision/recall/F1/support.

    ``y_true`` holds integer indices into ``labels``; ``probabilities`` is (n, K) with columns
    in ``labels`` order. The prediction is the argmax column. ``macro_f1`` averages F1 over the
    labels that occur in ``y_true`` or in the predictions (scikit-learn's default): a label with
    no examples and no predictions has no defined F1 and would otherwise count as 0. Brier is
    the mean over items of sum_k (p_k - onehot_k)^2, in [0, 2]. With no items the three summary
    numbers are None and every label has support 0.
    """
    k = len(labels)
    if probabilities.ndim != 2 or probabilities.shape[1] != k:
        raise ValueError(f"probabilities must be (n, {k}), got shape {probabilities.shape}")
    y = np.asarray(y_true)
    if y.ndim != 1 or y.shape[0] != probabilities.shape[0]:
        raise ValueError("y_true must be a vector with one entry per probability row")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k):
        raise ValueError(f"y_true must hold integer class indices in [0, {k})")

    if y.size == 0:
        empty = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
        return {
            "accuracy": None,
            "macro_f1": None,
            "brier": None,
            "per_label": {label: dict(empty) for label in labels},
        }

    # Imported on first use: docs/design.md, "Import weight".
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    y_pred = np.argmax(probabilities, axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, y_pred, labels=list(range(k)), zero_division=0
    )
    macro_f1 = f1_score(y, y_pred, average="macro", zero_division=0)
    # Subtracting 1 at the true column in a float64 copy gives p - onehot without building
    # an (n, K) one-hot matrix.
    residual = np.array(probabilities, dtype=np.float64)
    residual[np.arange(y.size), y] -= 1.0
    brier = float(np.mean(np.sum(residual * residual, axis=1)))
    return {
        "accuracy": _round(accuracy_score(y, y_pred)),
        "macro_f1": _round(macro_f1),
        "brier": _round(brier),
        "per_label": {
            label: {
                "precision": _round(precision[i]),
                "recall": _round(recall[i]),
                "f1": _round(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
    }
