"""skops persistence of fitted pipelines, the compact vocabulary, and the LRU cache."""

from functools import partial

import numpy as np
import pytest
import skops.io
from sklearn.pipeline import Pipeline

from app.registry.algorithms import get_algorithm
from app.registry.cache import MAX_DATABASES, ModelCache, shared_cache
from app.registry.store import (
    UntrustedArtifact,
    dump_array,
    dump_pipeline,
    load_array,
    load_pipeline,
)
from app.registry.training import predict_probabilities, train
from tests.corpus import labeled_corpus


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str]]:
    pairs = labeled_corpus(20, seed=1)
    return [t for t, _ in pairs], [label for _, label in pairs]


@pytest.mark.parametrize("name", ["hashed_tfidf_sgd", "tfidf_logreg", "hashing_sgd"])
def test_a_pipeline_round_trips_and_predicts_identically(
    name: str, corpus: tuple[list[str], list[str]]
) -> None:
    texts, labels = corpus
    algorithm = get_algorithm(name)
    trained = train(algorithm, algorithm.resolve_params({}), texts, labels)
    content = dump_pipeline(trained.pipeline)
    assert skops.io.get_untrusted_types(data=content) == []
    loaded = load_pipeline(content)
    fresh = [t + " extra words" for t in texts[:10]]
    np.testing.assert_array_equal(
        predict_probabilities(loaded, fresh, 3), predict_probabilities(trained.pipeline, fresh, 3)
    )
    # Dumping leaves the in-memory pipeline usable.
    predict_probabilities(trained.pipeline, fresh, 3)


def test_something_else_than_a_pipeline_is_refused() -> None:
    with pytest.raises(UntrustedArtifact):
        load_pipeline(skops.io.dumps({"not": "a pipeline"}))


def test_arrays_round_trip_without_pickle() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(load_array(dump_array(array)), array)


def test_cache_keeps_the_most_recently_used() -> None:
    cache: ModelCache[Pipeline] = ModelCache(size=2)
    pipelines = {key: Pipeline([("p", "passthrough")]) for key in "abc"}
    for key in "abca":
        cache.get(key, partial(pipelines.__getitem__, key))
    assert cache.loads == 4  # a, b, c, then a again after c evicted it
    cache.get("a", lambda: pipelines["a"])
    cache.get("c", lambda: pipelines["c"])
    assert cache.loads == 4


def test_one_shared_cache_per_database_and_size() -> None:
    """Requests and jobs of a process reading one database share its cache; two databases
    (version ids repeat across them) never do, and only the latest few are kept."""
    first = shared_cache("sqlite:///first.db", 4)
    assert shared_cache("sqlite:///first.db", 4) is first
    assert shared_cache("sqlite:///second.db", 4) is not first
    assert shared_cache("sqlite:///first.db", 2) is not first
    for n in range(MAX_DATABASES):
        shared_cache(f"sqlite:///other-{n}.db", 4)
    assert shared_cache("sqlite:///first.db", 4) is not first  # dropped, the least recent
