"""Persist fitted pipelines with skops (never pickle), and arrays with numpy (never pickle)."""

import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


class UntrustedArtifact(Exception):
    """A stored artifact names types we did not put there; it is not loaded."""


# skops writes a dict entry by entry: a 44k-term TF-IDF vocabulary took 20 s and 26 MB.
# The same terms as one numpy string array (index order) take milliseconds and 1.5 MB.
TERMS_ATTRIBUTE = "labelwise_terms_"


def dump_pipeline(pipeline: "Pipeline") -> bytes:
    # Imported on first use: docs/design.md, "Import weight".
    import skops.io

    vectorizers = list(_vectorizers(pipeline))
    for vectorizer in vectorizers:
        vocabulary = vectorizer.vocabulary_
        terms = np.array(sorted(vocabulary, key=vocabulary.__getitem__), dtype=str)
        setattr(vectorizer, TERMS_ATTRIBUTE, terms)
        del vectorizer.vocabulary_
    try:
        content: bytes = skops.io.dumps(pipeline)
    finally:
        for vectorizer in vectorizers:
            _restore_vocabulary(vectorizer)
    return content


def load_pipeline(content: bytes) -> "Pipeline":
    # Imported on first use: docs/design.md, "Import weight".
    import skops.io
    from sklearn.pipeline import Pipeline

    untrusted = skops.io.get_untrusted_types(data=content)
    if untrusted:
        raise UntrustedArtifact(f"artifact contains untrusted types: {untrusted}")
    pipeline = skops.io.loads(content, trusted=[])
    if not isinstance(pipeline, Pipeline):
        raise UntrustedArtifact("artifact is not a scikit-learn Pipeline")
    for vectorizer in _vectorizers(pipeline):
        _restore_vocabulary(vectorizer)
    classifier = pipeline.steps[-1][1]
    if isinstance(getattr(classifier, "coef_", None), np.ndarray):
        # scipy copies a C-ordered coefficient matrix on every sparse product (2.4 ms per
        # chunk for hashing_sgd's 15 MB); Fortran order is what it wants (bench/registry.py).
        classifier.coef_ = np.asfortranarray(classifier.coef_)
    return pipeline


def _vectorizers(estimator: Any) -> Iterator[Any]:
    """Fitted steps holding a vocabulary (or its compact form), anywhere in the pipeline."""
    from sklearn.pipeline import FeatureUnion, Pipeline

    if isinstance(estimator, Pipeline):
        for _, step in estimator.steps:
            yield from _vectorizers(step)
    elif isinstance(estimator, FeatureUnion):
        for _, part in estimator.transformer_list:
            yield from _vectorizers(part)
    elif hasattr(estimator, "vocabulary_") or hasattr(estimator, TERMS_ATTRIBUTE):
        yield estimator


def _restore_vocabulary(vectorizer: Any) -> None:
    terms = getattr(vectorizer, TERMS_ATTRIBUTE, None)
    if terms is not None:
        vectorizer.vocabulary_ = {str(term): index for index, term in enumerate(terms.tolist())}
        delattr(vectorizer, TERMS_ATTRIBUTE)


def dump_array(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def load_array(content: bytes) -> np.ndarray:
    return np.asarray(np.load(io.BytesIO(content), allow_pickle=False))
