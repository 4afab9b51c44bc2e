"""Near-duplicate groups: planted exact and near copies among distinct texts, edge cases, the
LSH parameters, and planted edits in real Debian package descriptions checked against an
all-pairs computation."""

import gzip
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from app.ml.duplicates import (
    RECALL,
    DuplicateGroup,
    candidate_probability,
    lsh_bands,
    near_duplicate_groups,
    normalise,
)

DEBIAN = Path("/work/shared/data/debian-dev.jsonl.gz")
SYLLABLES = ["ka", "lo", "mi", "ne", "pu", "ra", "si", "to", "vu", "ze", "bo", "di"]


def vocabulary(rng: np.random.Generator, size: int = 600) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES, rng.integers(2, 4))))
    return sorted(words)


def as_sets(groups: list[DuplicateGroup]) -> list[list[int]]:
    return [group.members.tolist() for group in groups]


def planted_corpus() -> tuple[list[str], list[str]]:
    """Twelve distinct 30-word texts (no word twice in a text), then an exact copy of text 0
    with other case and spacing, text 1 with one word changed and text 2 with two words
    changed. Returns (texts, words of text 1 and 2 that were replaced by)."""
    rng = np.random.default_rng(11)
    words = vocabulary(rng)
    texts = [rng.choice(words, 30, replace=False).tolist() for _ in range(12)]
    unused = [w for w in words if not any(w in text for text in texts)]
    one = list(texts[1])
    one[14] = unused[0]
    two = list(texts[2])
    two[5], two[20] = unused[1], unused[2]
    corpus = [" ".join(text) for text in texts]
    corpus.append("  " + corpus[0].upper().replace(" ", " \t\n ", 3) + "  ")
    corpus.append(" ".join(one))
    corpus.append(" ".join(two))
    return corpus, unused[:3]


class TestNearDuplicateGroups:
    def test_planted_groups_exactly(self) -> None:
        corpus, _ = planted_corpus()
        groups = near_duplicate_groups(corpus)
        assert as_sets(groups) == [[0, 12], [1, 13], [2, 14]]
        exact, one_word, two_words = groups
        assert exact.exact
        assert exact.min_similarity == 1.0
        # 30 words: 30 unigrams + 29 bigrams. One word changed in the middle swaps 1 unigram
        # and 2 bigrams: 56 shared of 62; two words apart: 53 of 65.
        assert not one_word.exact
        assert one_word.min_similarity == pytest.approx(56 / 62)
        assert not two_words.exact
        assert two_words.min_similarity == pytest.approx(53 / 65)

    def test_threshold_is_exact_jaccard(self) -> None:
        corpus, _ = planted_corpus()
        # 53/65 = 0.815: in at 0.81, out at 0.82, whatever MinHash estimated.
        assert [1, 13] in as_sets(near_duplicate_groups(corpus, threshold=0.82))
        assert [2, 14] not in as_sets(near_duplicate_groups(corpus, threshold=0.82))
        assert [2, 14] in as_sets(near_duplicate_groups(corpus, threshold=0.81))
        # Only exact copies (and identical word sets) at 1.0.
        assert as_sets(near_duplicate_groups(corpus, threshold=1.0)) == [[0, 12]]

    def test_groups_are_transitive_and_ordered(self) -> None:
        corpus, unused = planted_corpus()
        # A second copy of text 1 with another word changed: three members, joined through 1.
        chained = corpus[1].split()
        chained[3] = unused[2]
        corpus.append(" ".join(chained))
        groups = near_duplicate_groups(corpus)
        assert as_sets(groups) == [[1, 13, 15], [0, 12], [2, 14]]
        assert all(np.all(np.diff(group.members) > 0) for group in groups)
        assert groups[0].members.dtype == np.int64

    def test_short_exact_duplicates(self) -> None:
        texts = ["Hello world", "completely different words here", "hello   WORLD ", "ok", "ok!"]
        groups = near_duplicate_groups(texts)
        assert as_sets(groups) == [[0, 2], [3, 4]]
        assert groups[0].exact
        # "ok" and "ok!" differ as text, not as words: a near duplicate, similarity 1.
        assert not groups[1].exact
        assert groups[1].min_similarity == 1.0

    def test_no_words_exact_copies(self) -> None:
        groups = near_duplicate_groups(["!!", "?", "!!", "a"])
        assert as_sets(groups) == [[0, 2]]
        assert groups[0].exact

    def test_blank_texts(self) -> None:
        assert near_duplicate_groups([]) == []
        assert near_duplicate_groups(["", "   ", "\n"]) == []
        assert as_sets(near_duplicate_groups(["", "same text", " ", "Same text"])) == [[1, 3]]

    def test_non_ascii(self) -> None:
        texts = [
            "Ça coûte cher à Zürich",
            "ça coûte cher à zürich!",
            "日本語 テキスト",
            "日本語 テキスト",
        ]
        assert as_sets(near_duplicate_groups(texts)) == [[0, 1], [2, 3]]

    def test_reshuffled_words_are_not_copies(self) -> None:
        text = "the quick brown fox jumps over the lazy dog near the river bank"
        words = text.split(" ")
        shuffled = list(reversed(words))
        groups = near_duplicate_groups([" ".join(words), " ".join(shuffled)])
        assert groups == []  # same unigrams, but no bigram in common

    def test_deterministic_with_seed(self) -> None:
        corpus, _ = planted_corpus()
        first = near_duplicate_groups(corpus, seed=3)
        again = near_duplicate_groups(corpus, seed=3)
        assert as_sets(first) == as_sets(again)
        assert [g.min_similarity for g in first] == [g.min_similarity for g in again]
        assert as_sets(near_duplicate_groups(corpus, seed=4)) == as_sets(first)

    @pytest.mark.parametrize("threshold", [0.0, -0.1, 1.01])
    def test_bad_threshold(self, threshold: float) -> None:
        with pytest.raises(ValueError, match="threshold"):
            near_duplicate_groups(["a", "b"], threshold=threshold)

    def test_bad_num_perm(self) -> None:
        with pytest.raises(ValueError, match="num_perm"):
            near_duplicate_groups(["a", "b"], num_perm=0)


def test_normalise() -> None:
    assert normalise("  Hello\t\nWORLD  again ") == "hello world again"


class TestBands:
    def test_default_layout(self) -> None:
        assert lsh_bands(0.8, 128) == (21, 6)
        assert candidate_probability(0.8, 21, 6) == pytest.approx(0.99831, abs=1e-5)

    @pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0])
    @pytest.mark.parametrize("num_perm", [16, 64, 128, 256])
    def test_most_rows_that_keep_the_recall(self, threshold: float, num_perm: int) -> None:
        bands, rows = lsh_bands(threshold, num_perm)
        assert bands * rows <= num_perm
        assert candidate_probability(threshold, bands, rows) >= RECALL
        more = rows + 1
        assert candidate_probability(threshold, num_perm // more, more) < RECALL

    def test_unreachable_recall_uses_every_row_as_a_band(self) -> None:
        assert lsh_bands(0.01, 16) == (16, 1)


@pytest.fixture(scope="module")
def debian_texts() -> list[str]:
    if not DEBIAN.exists():
        pytest.skip(f"{DEBIAN} is absent")
    with gzip.open(DEBIAN, "rt", encoding="utf-8") as lines:
        return [json.loads(line)["text"] for line in lines]


def all_pairs_groups(texts: list[str], threshold: float) -> list[list[int]]:
    """The reference: every pair's exact unigram+bigram Jaccard (brute force), plus equal
    normalised texts, joined transitively."""
    normalised = [normalise(text) for text in texts]
    vocabulary: dict[str, int] = {}
    rows, columns = [], []
    for i, text in enumerate(normalised):
        # Word characters: ASCII letters, digits and "_", and every non-ASCII character.
        words = "".join(
            c if c.isalnum() or c == "_" or ord(c) >= 128 else " " for c in text
        ).split()
        for feature in {*words, *(f"{a} {b}" for a, b in pairwise(words))}:
            rows.append(i)
            columns.append(vocabulary.setdefault(feature, len(vocabulary)))
    x = sparse.csr_array((np.ones(len(rows)), (rows, columns)), shape=(len(texts), len(vocabulary)))
    sizes = np.diff(x.indptr)
    shared = sparse.triu(x @ x.T, k=1).tocoo()
    left, right = shared.row, shared.col
    similar = shared.data / (sizes[left] + sizes[right] - shared.data) >= threshold
    first: dict[str, int] = {}
    same = [(i, first.setdefault(t, i)) for i, t in enumerate(normalised) if t]
    copies = [(a, b) for a, b in same if a != b]
    edges = np.array(copies + list(zip(left[similar], right[similar], strict=True)))
    graph = sparse.coo_array((np.ones(len(edges)), edges.T), shape=(len(texts), len(texts)))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    return sorted(np.flatnonzero(component == c).tolist() for c in np.flatnonzero(sizes >= 2))


def test_debian_planted_edits(debian_texts: list[str]) -> None:
    rng = np.random.default_rng(0)
    texts = [debian_texts[i] for i in rng.choice(len(debian_texts), 2000, replace=False)]
    long_enough = [i for i, text in enumerate(texts) if len(text.split()) >= 40]
    planted = rng.choice(long_enough, 20, replace=False)
    for k, i in enumerate(planted):
        words = texts[i].split()
        words[int(rng.integers(1, len(words) - 1))] = f"plantedword{k}"
        texts.append(" ".join(words))
    groups = near_duplicate_groups(texts)
    group_of = {int(m): g for g, group in enumerate(groups) for m in group.members}
    found = [group_of.get(int(i), -1) == group_of.get(2000 + k, -2) for k, i in enumerate(planted)]
    assert sum(found) == 20
    # And nothing else is missed or invented: the same groups as comparing every pair.
    assert sorted(as_sets(groups)) == all_pairs_groups(texts, 0.8)
