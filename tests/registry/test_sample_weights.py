"""Sample weights reach every registered classifier, in the cross-validation and the final fit."""

import numpy as np
import pytest

from app.registry.algorithms import ALGORITHMS, get_algorithm
from app.registry.training import predict_probabilities, train


def noisy_points(seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """'low' around -1, 'high' around +1, and ten 'low' labels on high points (the noise)."""
    rng = np.random.default_rng(seed)
    low = rng.normal(-1.0, 0.3, size=(20, 1))
    high = rng.normal(1.0, 0.3, size=(30, 1))
    inputs = np.vstack([low, high])
    labels = ["low"] * 20 + ["high"] * 20 + ["low"] * 10
    noise = np.array([False] * 40 + [True] * 10)
    return inputs, labels, noise


def test_down_weighted_labels_pull_the_model_less() -> None:
    algorithm = get_algorithm("features_logreg")
    params = algorithm.resolve_params({})
    inputs, labels, noise = noisy_points()
    plain = train(algorithm, params, inputs, labels)
    weights = np.where(noise, 0.05, 1.0)
    weighted = train(algorithm, params, inputs, labels, sample_weight=weights)
    probe = np.array([[1.0]])
    high = plain.labels.index("high")
    assert weighted.labels == plain.labels
    p_plain = predict_probabilities(plain.pipeline, probe, 2)[0, high]
    p_weighted = predict_probabilities(weighted.pipeline, probe, 2)[0, high]
    assert p_weighted > p_plain + 0.05
    # The cross-validation is weighted too: its held-out predictions move the same way.
    oof_high = slice(20, 50)
    assert weighted.oof_probabilities[oof_high, high].mean() > (
        plain.oof_probabilities[oof_high, high].mean()
    )


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_takes_sample_weights(name: str) -> None:
    algorithm = get_algorithm(name)
    params = algorithm.resolve_params({"min_df": 1} if name == "tfidf_logreg" else {})
    if algorithm.input == "features":
        inputs, labels, _ = noisy_points(seed=1)
        model_inputs: list[str] | np.ndarray = inputs
    else:
        words = {"low": "cheap small budget", "high": "premium large deluxe"}
        labels = ["low", "high"] * 10
        model_inputs = [f"{words[label]} item {n}" for n, label in enumerate(labels)]
    weights = np.linspace(0.5, 1.0, num=len(labels))
    trained = train(algorithm, params, model_inputs, labels, sample_weight=weights)
    assert trained.oof_probabilities.shape == (len(labels), 2)
    assert trained.metrics["accuracy"] > 0.5
