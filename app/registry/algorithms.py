"""Algorithms registered by name: how to build each scikit-learn pipeline from its params.

scikit-learn is imported by the builders, not here: listing and validating algorithms is
part of every API process, and scikit-learn costs 180 MB (it imports pandas and pyarrow).
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from app.errors import ErrorDetail, ValidationFailed

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

InputKind = Literal["text", "features"]


@dataclass(frozen=True)
class Algorithm:
    name: str
    description: str
    input: InputKind
    defaults: Mapping[str, Any]
    # (params) -> (features step, classifier); the pipeline is Pipeline([features, classifier]).
    build: Callable[[dict[str, Any]], tuple[Any, Any]]
    # Upper bounds that keep one request from asking for gigabytes.
    maximums: Mapping[str, float] = field(default_factory=dict)
    # Parameters that take one of a few named values instead of a positive number.
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def resolve_params(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The defaults with overrides applied; unknown names or wrong types are a 422."""
        errors = []
        for key, value in overrides.items():
            if key not in self.defaults:
                errors.append(
                    ErrorDetail(
                        loc=["body", "params", key],
                        msg=f"unknown parameter for {self.name}; known: {sorted(self.defaults)}",
                    )
                )
                continue
            if key in self.choices:
                if value not in self.choices[key]:
                    errors.append(
                        ErrorDetail(
                            loc=["body", "params", key],
                            msg=f"must be one of {list(self.choices[key])}",
                        )
                    )
                continue
            expected = type(self.defaults[key])
            ok = isinstance(value, expected) and not isinstance(value, bool)
            if expected is float:
                ok = isinstance(value, int | float) and not isinstance(value, bool)
            if ok and isinstance(value, int) and abs(value) > 10**12:
                ok = False
            finite = ok and math.isfinite(value) and abs(value) < 1e300
            if not finite or value <= 0:
                errors.append(
                    ErrorDetail(
                        loc=["body", "params", key],
                        msg=f"must be a positive {expected.__name__}",
                    )
                )
            elif key in self.maximums and value > self.maximums[key]:
                errors.append(
                    ErrorDetail(
                        loc=["body", "params", key], msg=f"must be at most {self.maximums[key]}"
                    )
                )
        merged = {**self.defaults, **overrides}
        if not errors and merged.get("char_ngram_min", 0) > merged.get("char_ngram_max", 0):
            errors.append(
                ErrorDetail(
                    loc=["body", "params", "char_ngram_min"],
                    msg="must not exceed char_ngram_max",
                )
            )
        if errors:
            raise ValidationFailed(f"Invalid params for {self.name}.", errors=errors)
        params = dict(self.defaults)
        params.update(overrides)
        return params

    def pipeline(self, params: dict[str, Any]) -> "Pipeline":
        from sklearn.pipeline import Pipeline

        features, classifier = self.build(params)
        return Pipeline([("features", features), ("classifier", classifier)])


def _tfidf_logreg(p: dict[str, Any]) -> tuple[Any, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion

    words = TfidfVectorizer(
        ngram_range=(1, p["word_ngram_max"]),
        min_df=p["min_df"],
        max_features=p["max_features"],
        sublinear_tf=True,
        dtype=np.float32,
    )
    chars = TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=(p["char_ngram_min"], p["char_ngram_max"]),
        min_df=p["min_df"],
        max_features=p["max_features"],
        sublinear_tf=True,
        dtype=np.float32,
    )
    classifier = LogisticRegression(
        C=p["C"], class_weight=_class_weight(p), max_iter=p["max_iter"], tol=p["tol"]
    )
    return FeatureUnion([("words", words), ("chars", chars)]), classifier


def _class_weight(p: dict[str, Any]) -> str | None:
    # "balanced" lifts rare labels when the labeled set keeps the pool's imbalance (random
    # sampling); "none" keeps the probabilities closer to the label frequencies.
    return None if p.get("class_weight") == "none" else "balanced"


def _hashing_sgd(p: dict[str, Any]) -> tuple[Any, Any]:
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import SGDClassifier

    # Stateless features: nothing to fit, no vocabulary to hold, fast to score huge pools.
    features = HashingVectorizer(
        ngram_range=(1, p["word_ngram_max"]),
        n_features=2 ** p["n_features_log2"],
        alternate_sign=False,
        dtype=np.float32,
    )
    classifier = SGDClassifier(
        loss="log_loss",
        alpha=p["alpha"],
        class_weight="balanced",
        max_iter=p["max_iter"],
        tol=1e-4,
        random_state=0,
    )
    return features, classifier


def _hashed_tfidf_sgd(p: dict[str, Any]) -> tuple[Any, Any]:
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import Pipeline

    # Hashed word n-grams need no vocabulary: computing them is cheap and the same for every
    # fold. Fitting is the IDF alone (one pass over the training column), then sublinear TF,
    # IDF and L2 as tfidf_logreg does; the linear model is a logistic-loss SGD (one-vs-rest,
    # normalised into probabilities), seconds where lbfgs takes half a minute.
    hashed = HashingVectorizer(
        ngram_range=(1, p["word_ngram_max"]),
        n_features=2 ** p["n_features_log2"],
        alternate_sign=False,
        norm=None,
        dtype=np.float32,
    )
    features = Pipeline([("hash", hashed), ("tfidf", TfidfTransformer(sublinear_tf=True))])
    classifier = SGDClassifier(
        loss="log_loss",
        alpha=p["alpha"],
        class_weight=_class_weight(p),
        max_iter=p["max_iter"],
        tol=1e-4,
        random_state=0,
    )
    return features, classifier


def _features_logreg(p: dict[str, Any]) -> tuple[Any, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    classifier = LogisticRegression(C=p["C"], class_weight="balanced", max_iter=p["max_iter"])
    return StandardScaler(), classifier


# New projects and trainings that name no algorithm (docs/models.md says why this one).
DEFAULT_ALGORITHM = "hashed_tfidf_sgd"

ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm(
            name="tfidf_logreg",
            description=(
                "TF-IDF of word (1-2) and character (3-5) n-grams, logistic regression with "
                "balanced class weights (class_weight: none turns them off). The default "
                "until issue 23: a little more accurate on short texts, slow on big pools."
            ),
            input="text",
            defaults={
                "word_ngram_max": 2,
                "char_ngram_min": 3,
                "char_ngram_max": 5,
                "min_df": 2,
                "max_features": 50_000,
                "C": 10.0,
                "max_iter": 100,
                "tol": 1e-3,
                "class_weight": "balanced",
            },
            build=_tfidf_logreg,
            choices={"class_weight": ("balanced", "none")},
            maximums={
                "word_ngram_max": 4,
                "char_ngram_min": 8,
                "char_ngram_max": 8,
                "max_features": 1_000_000,
                "max_iter": 10_000,
                "C": 1e6,
                "min_df": 1_000,
                "tol": 1.0,
            },
        ),
        Algorithm(
            name="hashed_tfidf_sgd",
            description=(
                "Hashed word (1-2) n-grams with sublinear TF and IDF, a logistic-loss SGD "
                "classifier with balanced class weights (class_weight: none turns them off). "
                "The default: as accurate as tfidf_logreg on the dev data (docs/models.md), "
                "trains in seconds and scores big pools many times faster."
            ),
            input="text",
            defaults={
                "word_ngram_max": 2,
                "n_features_log2": 18,
                "alpha": 1e-5,
                "max_iter": 50,
                "class_weight": "balanced",
            },
            build=_hashed_tfidf_sgd,
            choices={"class_weight": ("balanced", "none")},
            maximums={
                "word_ngram_max": 4,
                "n_features_log2": 24,
                "max_iter": 10_000,
                "alpha": 10.0,
            },
        ),
        Algorithm(
            name="hashing_sgd",
            description=(
                "Hashed word n-grams and a logistic-loss SGD classifier: no vocabulary, "
                "small artifacts and the fastest scoring, for very large pools."
            ),
            input="text",
            defaults={"word_ngram_max": 2, "n_features_log2": 18, "alpha": 1e-5, "max_iter": 50},
            build=_hashing_sgd,
            maximums={
                "word_ngram_max": 4,
                "n_features_log2": 24,
                "max_iter": 10_000,
                "alpha": 10.0,
            },
        ),
        Algorithm(
            name="features_logreg",
            description=(
                "Standardized numeric vectors from each item's data.features (all of one "
                "length), logistic regression with balanced class weights."
            ),
            input="features",
            defaults={"C": 1.0, "max_iter": 1000},
            build=_features_logreg,
            maximums={"max_iter": 100_000, "C": 1e6},
        ),
    )
}


def get_algorithm(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValidationFailed(
            f"Unknown algorithm {name!r}; registered: {sorted(ALGORITHMS)}.",
            errors=[ErrorDetail(loc=["body", "algorithm"], msg="unknown algorithm")],
        ) from None
