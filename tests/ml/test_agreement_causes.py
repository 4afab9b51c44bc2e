"""The causes of low agreement on small vote-count matrices worked out by hand."""

import numpy as np
import pytest

from app.ml.agreement_causes import (
    SplitPair,
    annotators_below_others,
    confused_label_pairs,
    most_disputed_items,
)

# (items, labels) vote counts. Disagreement per item (1 - share of agreeing label pairs):
# 0, 1, 2/3, 1, not measurable (one vote), 2/3.
COUNTS = np.array(
    [
        [2, 0, 0],
        [1, 1, 0],
        [2, 1, 0],
        [0, 1, 1],
        [1, 0, 0],
        [2, 0, 2],
    ]
)


class TestConfusedLabelPairs:
    def test_pairs_by_disagreement(self) -> None:
        # Coincidences between labels, both directions: 0-1 from items 1 and 2 (1 + 1, twice),
        # 0-2 from item 5 (2 * 2 / 3, twice), 1-2 from item 3 (1, twice); 26/3 in all.
        pairs = confused_label_pairs(COUNTS, top=3)
        assert [(p.first, p.second) for p in pairs] == [(0, 1), (0, 2), (1, 2)]
        assert [p.disagreements for p in pairs] == pytest.approx([4.0, 8 / 3, 2.0])
        assert [p.share for p in pairs] == pytest.approx([12 / 26, 8 / 26, 6 / 26])

    def test_top(self) -> None:
        assert [(p.first, p.second) for p in confused_label_pairs(COUNTS, top=1)] == [(0, 1)]

    def test_pairs_without_disagreement_are_left_out(self) -> None:
        counts = np.array([[2, 0, 0], [0, 3, 0], [1, 1, 0]])
        assert confused_label_pairs(counts, top=3) == [
            SplitPair(first=0, second=1, disagreements=2.0, share=1.0)
        ]
        assert confused_label_pairs(np.array([[2, 0], [0, 2]]), top=3) == []


class TestMostDisputedItems:
    def test_most_disagreement_first_then_most_votes(self) -> None:
        found = most_disputed_items(COUNTS, top=5)
        assert [code for code, _ in found] == [1, 3, 5, 2]  # item 0 agrees, item 4 has one vote
        assert [value for _, value in found] == pytest.approx([1.0, 1.0, 2 / 3, 2 / 3])

    def test_top(self) -> None:
        assert [code for code, _ in most_disputed_items(COUNTS, top=2)] == [1, 3]

    def test_nothing_disputed(self) -> None:
        assert most_disputed_items(np.array([[2, 0], [1, 0]]), top=5) == []
        assert most_disputed_items(np.zeros((0, 2), dtype=np.int64), top=5) == []


class TestAnnotatorsBelowOthers:
    AGREEMENT = np.array([0.9, 0.85, 0.5, np.nan, 0.2])
    COMPARED = np.array([20, 20, 20, 20, 5])

    def test_below_the_median_by_more_than_the_margin(self) -> None:
        # Comparable: 0, 1 and 2 (3 is not measured, 4 compared too few labels).
        found = annotators_below_others(self.AGREEMENT, self.COMPARED, min_compared=10, margin=0.15)
        assert found is not None
        assert found.median == 0.85
        assert found.annotators.tolist() == [2]
        assert found.annotators.dtype == np.int64

    def test_within_the_margin(self) -> None:
        found = annotators_below_others(self.AGREEMENT, self.COMPARED, min_compared=10, margin=0.4)
        assert found is not None
        assert found.annotators.tolist() == []

    def test_too_few_comparable_annotators(self) -> None:
        compared = np.array([20, 20, 5, 20, 5])
        assert (
            annotators_below_others(self.AGREEMENT, compared, min_compared=10, margin=0.15) is None
        )
        assert (
            annotators_below_others(np.empty(0), np.empty(0), min_compared=10, margin=0.15) is None
        )
