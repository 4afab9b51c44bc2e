"""Algorithm params: numbers within bounds, and named choices."""

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
