"""Near-duplicate groups of texts: exact duplicates by their normalised text, near ones by
MinHash signatures and locality-sensitive hashing (banding), every candidate pair verified by
its exact Jaccard similarity. About linear in the corpus: no pair is compared unless LSH
proposes it."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

# A pair at exactly the threshold similarity becomes a candidate with at least this probability;
# more similar pairs with more (see lsh_bands).
RECALL = 0.99
# Texts tokenised per batch: bounds the Python token objects alive at once (~40 bytes each).
_TOKENISE_CHUNK = 10_000
# Candidate pairs verified per sparse product: bounds the two gathered row blocks.
_VERIFY_CHUNK = 1 << 16
# Word characters, as in the regex \w for ASCII: letters, digits and "_". Every byte of a
# multi-byte UTF-8 character counts as a word character too, so "café" or "日本語" stay whole;
# non-ASCII punctuation (curly quotes, dashes) then sticks to its word, a small and consistent
# loss. "\n" stays: it separates the texts of a batch. Everything else becomes a space.
_WORD_BYTES = bytes(
    b if b >= 0x80 or bytes([b]).isalnum() or b in b"_\n" else 0x20 for b in range(256)
)
# Band keys: a multiply-xorshift mix of the band's minima (odd 64-bit constants from
# splitmix64). Two different bands rarely share a key, and when they do the pair is only a
# candidate: verification rejects it.
_MIX_MULTIPLIER = np.uint64(0xBF58476D1CE4E5B9)
_MIX_START = np.uint64(0x9E3779B97F4A7C15)
_MIX_SHIFT = np.uint64(31)

# scipy ships no type stubs.
SparseMatrix = Any


@dataclass(frozen=True, eq=False)
class DuplicateGroup:
    """Texts that are the same or nearly the same, connected by verified similar pairs."""

    members: np.ndarray
    """int64 indices into the texts, ascending (at least two)."""
    exact: bool
    """Every member has the same normalised text (see normalise)."""
    min_similarity: float
    """The smallest verified Jaccard similarity along the pairs that join the group (1.0 when
    exact). Members joined through others may be less similar to each other than this."""


def normalise(text: str) -> str:
    """Lowercase, whitespace runs collapsed to one space, stripped: the form exact duplicates
    share."""
    return " ".join(text.lower().split())


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that LSH with `bands` bands of `rows` MinHash rows proposes a pair of
    Jaccard similarity `similarity`: one band agrees on all its rows with probability s**r (each
    row agrees with probability s), so no band agrees with probability (1 - s**r)**b."""
    return float(1.0 - (1.0 - similarity**rows) ** bands)


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) for `num_perm` MinHash rows: the most rows per band (the steepest S-curve,
    so the fewest dissimilar candidates) such that bands = num_perm // rows still proposes a
    pair at the threshold with probability >= RECALL. When even one row per band cannot reach
    it (a very low threshold with few rows), every row is its own band."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if candidate_probability(threshold, bands, rows) >= RECALL:
            return bands, rows
    return num_perm, 1


def near_duplicate_groups(
    texts: Sequence[str], *, threshold: float = 0.8, num_perm: int = 128, seed: int = 0
) -> list[DuplicateGroup]:
    """Groups of two or more texts whose word unigram+bigram sets have Jaccard similarity >=
    threshold, joined transitively; largest first, then by first member.

    Texts are normalised first (normalise). The same normalised text is always grouped, even
    without a single word (e.g. "!!"); blank texts are never grouped. Distinct texts are
    compared by MinHash with LSH banding (lsh_bands): a pair at the threshold is found with
    probability >= 0.99, more similar pairs almost surely, and every pair reported was
    verified exactly. Deterministic for a given seed.

    Features are word unigrams plus bigrams: bigrams keep word order (a reshuffled text is not
    a copy), unigrams keep short texts forgiving. Changing one word of a 30-word text leaves
    a Jaccard similarity of about 0.9, two words about 0.8 (3-word shingles: 0.8, 0.65).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    n = len(texts)
    normalised = [normalise(text) for text in texts]
    first: dict[str, int] = {}
    # representative[i]: the first text with text i's normalised form; -1 for blank texts.
    representative = np.fromiter(
        (first.setdefault(text, i) if text else -1 for i, text in enumerate(normalised)),
        dtype=np.int64,
        count=n,
    )
    copies = np.flatnonzero((representative >= 0) & (representative != np.arange(n)))
    sources = [copies]
    targets = [representative[copies]]
    weights = [np.ones(copies.size)]
    distinct = np.flatnonzero(representative == np.arange(n))
    matrix = _shingle_matrix([normalised[i] for i in distinct])
    has_words = np.diff(matrix.indptr) > 0
    distinct, matrix = distinct[has_words], matrix[has_words]
    if distinct.size >= 2:
        bands, rows = lsh_bands(threshold, num_perm)
        signature = _minhash(matrix, bands * rows, seed)
        left, right, similarity = _similar_pairs(matrix, signature, bands, rows, threshold)
        sources.append(distinct[left])
        targets.append(distinct[right])
        weights.append(similarity)
    return _groups(
        n, np.concatenate(sources), np.concatenate(targets), np.concatenate(weights), representative
    )


def _shingle_matrix(texts: Sequence[str]) -> SparseMatrix:
    """Binary CSR (len(texts), n_features): each normalised text's word unigrams and bigrams.

    Tokenised here rather than by scikit-learn's CountVectorizer: on 100,000 texts of ~60 words
    its unigram+bigram analyser took 10 s, this 4 s (one translate and split per batch, word
    ids from a dict, bigram ids and the matrix from numpy). Texts must hold no newline
    (normalise removes them).
    """
    vocabulary: dict[bytes, int] = {}
    id_parts = [np.empty(0, dtype=np.int64)]
    length_parts = [np.empty(0, dtype=np.int64)]
    for start in range(0, len(texts), _TOKENISE_CHUNK):
        batch = "\n".join(texts[start : start + _TOKENISE_CHUNK])
        words = batch.encode("utf-8", "surrogatepass").translate(_WORD_BYTES)
        docs = [doc.split() for doc in words.split(b"\n")]
        tokens = list(chain.from_iterable(docs))
        for token in dict.fromkeys(tokens):
            if token not in vocabulary:
                vocabulary[token] = len(vocabulary)
        id_parts.append(
            np.fromiter(map(vocabulary.__getitem__, tokens), dtype=np.int64, count=len(tokens))
        )
        length_parts.append(np.fromiter(map(len, docs), dtype=np.int64, count=len(docs)))
    words_per_doc = np.concatenate(length_parts)
    ids = np.concatenate(id_parts)
    n_words = len(vocabulary)
    doc = np.repeat(np.arange(len(texts)), words_per_doc)
    within = doc[1:] == doc[:-1]
    # (first, second) word ids as one int64, exact while n_words < 2**31, then numbered densely.
    # argsort + cumsum: np.unique(return_inverse=True) took twice as long on 7M keys.
    keys = ids[:-1][within] * n_words + ids[1:][within]
    by_key = np.argsort(keys)
    is_new = np.concatenate([[keys.size > 0], keys[by_key][1:] != keys[by_key][:-1]])
    bigram_ids = np.empty(keys.size, dtype=np.int64)
    bigram_ids[by_key] = np.cumsum(is_new[: keys.size]) - 1
    # Each row is its words then its bigrams, placed directly (the inputs are in row order).
    bigrams_per_doc = np.maximum(words_per_doc - 1, 0)
    words_before = np.cumsum(words_per_doc) - words_per_doc
    bigrams_before = np.cumsum(bigrams_per_doc) - bigrams_per_doc
    indptr = np.concatenate([[0], np.cumsum(words_per_doc + bigrams_per_doc)])
    n_features = n_words + int(is_new.sum())
    # scipy's sparse kernels run about twice as fast on int32 indices.
    index_dtype = np.int32 if max(n_features, int(indptr[-1])) < 2**31 else np.int64
    indices = np.empty(int(indptr[-1]), dtype=index_dtype)
    indices[np.arange(ids.size) + bigrams_before[doc]] = ids
    bigram_doc = doc[1:][within]
    indices[np.arange(keys.size) + words_before[bigram_doc] + words_per_doc[bigram_doc]] = (
        n_words + bigram_ids
    )
    matrix = sparse.csr_array(
        (np.ones(indices.size, dtype=np.int32), indices, indptr.astype(index_dtype)),
        shape=(len(texts), n_features),
    )
    matrix.sum_duplicates()  # a repeated word or bigram counts once: these are sets
    matrix.data[:] = 1
    return matrix


def _minhash(matrix: SparseMatrix, n_rows: int, seed: int) -> np.ndarray:
    """(n_rows, n_docs) uint16 MinHash signatures: row k holds, for each document, the smallest
    of the k-th random values of its features. Every document must have a feature.

    The values are fresh random numbers per feature and row (features are already ids, so this
    is a random permutation of them): no hash family to trust. They are 16-bit, which nearly
    halves the time of the gather that dominates (35 vs 55 ms per row on 10.8M features): two
    different minima then tie by accident with probability about f/131072 for f features per
    document, which only adds candidates (verified away) and never loses one.
    One row at a time: the extra memory is one table of n_features values and one gathered
    value per stored feature (2 bytes each), whatever n_rows is.
    """
    rng = np.random.default_rng(seed)
    indices = matrix.indices.astype(np.intp)
    starts = matrix.indptr[:-1]
    n_features = matrix.shape[1]
    signature = np.empty((n_rows, matrix.shape[0]), dtype=np.uint16)
    gathered = np.empty(indices.size, dtype=np.uint16)
    for row in range(n_rows):
        values = rng.integers(0, np.iinfo(np.uint16).max, n_features, np.uint16, endpoint=True)
        np.take(values, indices, out=gathered)
        # No empty documents: every segment of reduceat is non-empty, so each is a true minimum.
        np.minimum.reduceat(gathered, starts, out=signature[row])
    return signature


def _band_keys(signature: np.ndarray, bands: int, rows: int) -> Iterator[np.ndarray]:
    """One uint64 key per document and band, equal when the band's minima are equal."""
    for band in range(bands):
        key = np.full(signature.shape[1], _MIX_START, dtype=np.uint64)
        for minima in signature[band * rows : (band + 1) * rows]:
            key ^= minima
            key *= _MIX_MULTIPLIER  # wraps modulo 2**64, as intended
            key ^= key >> _MIX_SHIFT
        yield key


def _bucket_pairs(key: np.ndarray) -> np.ndarray:
    """Distinct pairs of documents with the same band key, as left * n + right (left < right).

    A bucket of m documents yields each member paired with the bucket's first member and with
    its predecessor, at most 2(m - 1) pairs instead of m(m - 1)/2: two spanning trees, which
    is what connected components need, and buckets of up to three get every pair. A bucket of
    10,000 near-identical templates then costs 20,000 verifications, not 50 million.
    """
    n = key.size
    order = np.argsort(key, kind="stable")  # stable: a bucket lists its members ascending
    ranked = key[order]
    same = ranked[1:] == ranked[:-1]
    bucket = np.concatenate([[0], np.cumsum(~same)])
    bucket_first = order[np.concatenate([[True], ~same])]
    member = np.concatenate([[False], same])
    star = bucket_first[bucket[member]] * n + order[member]
    chain_ = order[:-1][same] * n + order[1:][same]
    return _sorted_unique(np.concatenate([star, chain_]))


def _similar_pairs(
    matrix: SparseMatrix, signature: np.ndarray, bands: int, rows: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left, right, Jaccard similarity) of verified pairs with similarity >= threshold, found
    band by band.

    A candidate is verified only if no earlier band already joined its two documents (through
    any chain of verified pairs) and it was not rejected before: groups are all that is
    reported, so a redundant pair would only cost time. Once a cluster is joined, later bands
    cost it nothing; on 100,000 texts in clusters of ten, 324k of 572k candidates were
    verified.
    """
    n = matrix.shape[0]
    component = np.arange(n)
    rejected = np.empty(0, dtype=np.int64)  # sorted pair keys below the threshold
    left_parts = [np.empty(0, dtype=np.int64)]
    right_parts = [np.empty(0, dtype=np.int64)]
    similarity_parts = [np.empty(0, dtype=np.float64)]
    for key in _band_keys(signature, bands, rows):
        pairs = _bucket_pairs(key)
        left, right = pairs // n, pairs % n
        fresh = (component[left] != component[right]) & ~_contains(rejected, pairs)
        if not fresh.any():
            continue
        pairs, left, right = pairs[fresh], left[fresh], right[fresh]
        similarity = _jaccard(matrix, left, right)
        similar = similarity >= threshold
        rejected = _sorted_unique(np.concatenate([rejected, pairs[~similar]]))
        if similar.any():
            left_parts.append(left[similar])
            right_parts.append(right[similar])
            similarity_parts.append(similarity[similar])
            joined = sparse.coo_array(
                (
                    np.ones(sum(part.size for part in left_parts)),
                    (np.concatenate(left_parts), np.concatenate(right_parts)),
                ),
                shape=(n, n),
            )
            component = connected_components(joined, directed=False)[1]
    return (
        np.concatenate(left_parts),
        np.concatenate(right_parts),
        np.concatenate(similarity_parts),
    )


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values, ascending. np.unique (hash-based for integers since numpy 2.3) was
    ten times slower than sorting on a few hundred thousand int64 pair keys."""
    ranked = np.sort(values)
    distinct: np.ndarray = ranked[
        np.concatenate([[True], ranked[1:] != ranked[:-1]])[: ranked.size]
    ]
    return distinct


def _contains(ranked: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each value occurs in the ascending array `ranked`."""
    if ranked.size == 0:
        return np.zeros(values.size, dtype=bool)
    position = np.minimum(np.searchsorted(ranked, values), ranked.size - 1)
    found: np.ndarray = ranked[position] == values
    return found


def _jaccard(matrix: SparseMatrix, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Exact Jaccard similarity of the feature sets of each (left, right) pair of rows."""
    sizes = np.diff(matrix.indptr)
    similarity = np.empty(left.size, dtype=np.float64)
    for start in range(0, left.size, _VERIFY_CHUNK):
        a = left[start : start + _VERIFY_CHUNK]
        b = right[start : start + _VERIFY_CHUNK]
        shared = np.asarray(matrix[a].multiply(matrix[b]).sum(axis=1)).ravel()
        similarity[start : start + a.size] = shared / (sizes[a] + sizes[b] - shared)
    return similarity


def _groups(
    n: int,
    sources: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    representative: np.ndarray,
) -> list[DuplicateGroup]:
    """Connected components of the verified pairs with two or more members, largest first."""
    if sources.size == 0:
        return []
    graph = sparse.coo_array((np.ones(sources.size), (sources, targets)), shape=(n, n))
    n_components, component = connected_components(graph, directed=False)
    size = np.bincount(component, minlength=n_components)
    grouped = np.flatnonzero(size[component] >= 2)
    members = grouped[np.argsort(component[grouped], kind="stable")]
    starts = np.flatnonzero(np.diff(component[members], prepend=-1))
    # Exact: one normalised text in the whole component.
    exact = np.minimum.reduceat(representative[members], starts) == np.maximum.reduceat(
        representative[members], starts
    )
    weakest = np.ones(n_components)
    np.minimum.at(weakest, component[sources], weights)
    found = [
        DuplicateGroup(
            members=group.astype(np.int64),
            exact=bool(is_exact),
            min_similarity=1.0 if is_exact else float(weakest[component[group[0]]]),
        )
        for group, is_exact in zip(np.split(members, starts[1:]), exact, strict=True)
    ]
    found.sort(key=lambda group: (-group.members.size, int(group.members[0])))
    return found
