"""Model-free feature vectors, for spreading a batch over the pool before any model exists."""

from collections.abc import Sequence
from typing import Any


def hashed_text_features(texts: Sequence[str]) -> Any:
    """(n, 2**18) sparse CSR rows of L2-normalised word 1-2-gram counts, one per text."""
    # Imported on first use: docs/design.md, "Import weight".
    from sklearn.feature_extraction.text import HashingVectorizer

    # Stateless: no vocabulary to fit, so any sample of the pool maps into the same space.
    hasher = HashingVectorizer(
        n_features=2**18, ngram_range=(1, 2), alternate_sign=False, norm="l2", dtype=float
    )
    return hasher.transform(list(texts))
