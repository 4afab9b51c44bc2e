"""Algorithm params: numbers within bounds, and named choices."""

import numpy as np
import pytest

from app.errors import ValidationFailed
from app.registry.algorithms import get_algorithm


def test_class_weight_is_a_named_choice() -> None:
    algorithm = get_algorithm("tfidf_logreg")
    assert algorithm.resolve_params({})["class_weight"] == "balanced"
    classifier = algorithm.pipeline(algorithm.resolve_params({"class_weight": "none"}))
    assert classifier.named_steps["classifier"].class_weight is None
    default = algorithm.pipeline(algorithm.resolve_params({}))
    assert default.named_steps["classifier"].class_weight == "balanced"
    with pytest.raises(ValidationFailed) as refused:
        algorithm.resolve_params({"class_weight": 1.0})
    errors = refused.value.to_problem().errors
    assert errors is not None and errors[0].loc == ["body", "params", "class_weight"]


def test_versions_stored_before_the_choice_existed_stay_balanced() -> None:
    algorithm = get_algorithm("tfidf_logreg")
    old = {k: v for k, v in algorithm.defaults.items() if k != "class_weight"}
    assert algorithm.pipeline(old).named_steps["classifier"].class_weight == "balanced"


def test_the_default_is_hashed_tfidf_sgd_with_probabilities() -> None:
    from app.models.model_version import ModelTrainRequest
    from app.registry.algorithms import DEFAULT_ALGORITHM
    from app.registry.training import predict_probabilities, train

    assert DEFAULT_ALGORITHM == "hashed_tfidf_sgd" == ModelTrainRequest().algorithm
    algorithm = get_algorithm(DEFAULT_ALGORITHM)
    params = algorithm.resolve_params({})
    assert params == {
        "word_ngram_max": 2,
        "n_features_log2": 18,
        "alpha": 1e-5,
        "max_iter": 50,
        "class_weight": "balanced",
    }
    words = {"low": "cheap small budget", "high": "premium large deluxe", "mid": "fair medium"}
    labels = ["low", "high", "mid"] * 10
    texts = [f"{words[label]} item {n}" for n, label in enumerate(labels)]
    trained = train(algorithm, params, texts, labels)
    assert trained.metrics["accuracy"] > 0.9
    # IDF is fitted on the training texts; the hashing needs no vocabulary.
    idf = trained.pipeline.named_steps["features"].named_steps["tfidf"].idf_
    assert idf.shape == (2**18,)
    probabilities = predict_probabilities(trained.pipeline, ["premium deluxe", "cheap"], 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert trained.labels[int(probabilities[0].argmax())] == "high"
    assert trained.oof_probabilities.shape == (30, 3)
    unweighted = algorithm.pipeline(algorithm.resolve_params({"class_weight": "none"}))
    assert unweighted.named_steps["classifier"].class_weight is None


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"n_features_log2": 25}, "n_features_log2"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"word_ngram_max": 5}, "word_ngram_max"),
        ({"max_iter": True}, "max_iter"),
        ({"class_weight": "auto"}, "class_weight"),
        ({"C": 1.0}, "C"),
    ],
)
def test_hashed_tfidf_sgd_params_are_validated(params: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        get_algorithm("hashed_tfidf_sgd").resolve_params(params)
    errors = refused.value.to_problem().errors
    assert errors is not None and errors[0].loc == ["body", "params", key]
