"""Train a registered algorithm with K-fold cross-validation, and score with a fitted pipeline.

The features step is fitted once on all training inputs (it sees no labels: TF-IDF
vocabulary and IDF only), then the classifier is cross-validated on that matrix. The
out-of-fold probabilities are what threshold calibration and label-issue reports need:
in-sample probabilities would hide the errors. Optional per-example sample weights (less
trusted labels weigh less) go to the classifier's fit, in every fold and in the final fit;
every registered classifier (LogisticRegression, SGDClassifier) accepts them.
"""

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from app.ml.metrics import classification_metrics
from app.registry.algorithms import Algorithm

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

N_FOLDS = 5
FOLD_SEED = 0  # StratifiedKFold's shuffle: the same labels always get the same folds
MIN_PER_LABEL = N_FOLDS  # every fold must be able to hold out one example of each label


@dataclass
class TrainedModel:
    pipeline: "Pipeline"
    labels: list[str]  # column order of every probability matrix this model produces
    oof_probabilities: np.ndarray
    metrics: dict[str, Any]
    seconds: float


def train(
    algorithm: Algorithm,
    params: dict[str, Any],
    inputs: Sequence[str] | np.ndarray,
    labels: Sequence[str],
    *,
    sample_weight: np.ndarray | None = None,
    progress: Callable[[float], None] = lambda _: None,
) -> TrainedModel:
    # Imported on first use: docs/design.md, "Import weight".
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.pipeline import Pipeline

    started = time.perf_counter()
    classes, y = _codes(labels)
    pipeline = algorithm.pipeline(params)
    features, classifier = pipeline.named_steps["features"], pipeline.named_steps["classifier"]
    with warnings.catch_warnings():
        # A capped iteration count is a speed choice; the CV metrics show its effect.
        warnings.simplefilter("ignore", ConvergenceWarning)
        matrix = features.fit_transform(inputs)
        oof = _cross_validate(
            classifier,
            matrix,
            y,
            len(classes),
            lambda f: progress(f * N_FOLDS / (N_FOLDS + 1)),
            sample_weight,
        )
        final = _fit(clone(classifier), matrix, y, sample_weight)
    pipeline = Pipeline([("features", features), ("classifier", final)])
    metrics = classification_metrics(y, oof, classes) | {"n_folds": N_FOLDS}
    return TrainedModel(
        pipeline=pipeline,
        labels=classes,
        oof_probabilities=oof.astype(np.float32),
        metrics=metrics,
        seconds=round(time.perf_counter() - started, 3),
    )


def out_of_fold_probabilities(
    algorithm: Algorithm,
    params: dict[str, Any],
    inputs: Sequence[str] | np.ndarray,
    labels: Sequence[str],
    *,
    sample_weight: np.ndarray | None = None,
    progress: Callable[[float], None] = lambda _: None,
) -> np.ndarray:
    """(n, classes) out-of-fold probabilities, columns in sorted label order: exactly the
    cross-validation `train` runs, without the final fit (label-issue reports need only this)."""
    from sklearn.exceptions import ConvergenceWarning

    classes, y = _codes(labels)
    pipeline = algorithm.pipeline(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        matrix = pipeline.named_steps["features"].fit_transform(inputs)
        return _cross_validate(
            pipeline.named_steps["classifier"], matrix, y, len(classes), progress, sample_weight
        )


def _codes(labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The sorted label set (every probability matrix's column order) and each label's code."""
    classes = sorted(set(labels))
    index = {label: i for i, label in enumerate(classes)}
    return classes, np.fromiter((index[x] for x in labels), dtype=np.int64, count=len(labels))


def _fit(classifier: Any, matrix: Any, y: np.ndarray, sample_weight: np.ndarray | None) -> Any:
    if sample_weight is None:
        return classifier.fit(matrix, y)
    return classifier.fit(matrix, y, sample_weight=sample_weight)


def _cross_validate(
    classifier: Any,
    matrix: Any,
    y: np.ndarray,
    n_labels: int,
    progress: Callable[[float], None],
    sample_weight: np.ndarray | None = None,
) -> np.ndarray:
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    oof = np.zeros((len(y), n_labels), dtype=np.float64)
    folds = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=FOLD_SEED)
    for fold, (train_rows, test_rows) in enumerate(folds.split(np.zeros(len(y)), y)):
        weights = None if sample_weight is None else sample_weight[train_rows]
        fitted = _fit(clone(classifier), matrix[train_rows], y[train_rows], weights)
        oof[test_rows] = _full_columns(fitted, matrix[test_rows], n_labels)
        progress((fold + 1) / N_FOLDS)
    return oof


def featurize(pipeline: "Pipeline", inputs: Sequence[str] | np.ndarray) -> Any:
    """The feature matrix of a fitted pipeline for these inputs."""
    return pipeline.named_steps["features"].transform(inputs)


def probabilities_from_features(pipeline: "Pipeline", matrix: Any, n_labels: int) -> np.ndarray:
    """(n, n_labels) probabilities in the model's label order, from a feature matrix."""
    return _full_columns(pipeline.named_steps["classifier"], matrix, n_labels)


def predict_probabilities(
    pipeline: "Pipeline", inputs: Sequence[str] | np.ndarray, n_labels: int
) -> np.ndarray:
    """(n, n_labels) probabilities in the model's label order."""
    return probabilities_from_features(pipeline, featurize(pipeline, inputs), n_labels)


def _full_columns(classifier: Any, matrix: Any, n_labels: int) -> np.ndarray:
    probabilities = classifier.predict_proba(matrix)
    if probabilities.shape[1] == n_labels:
        return np.asarray(probabilities)
    # A classifier fitted without some label (a fold that lacked it) gives it probability 0.
    full = np.zeros((probabilities.shape[0], n_labels), dtype=probabilities.dtype)
    full[:, classifier.classes_] = probabilities
    return full
