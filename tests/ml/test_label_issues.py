"""Label issues on synthetic probabilities with planted label flips, the noise matrix, class
imbalance, model-based outliers and the whole judgement of a report."""

import math

import numpy as np
import pytest
from cleanlab.filter import find_label_issues as cleanlab_find_label_issues
from sklearn.metrics import roc_auc_score

from app.ml.label_issues import (
    ConfusedPair,
    Judged,
    class_imbalance,
    confused_pairs,
    find_label_issues,
    judge,
    label_codes,
    noise_matrix,
    outlier_scores,
    outliers,
)


def informative_probs(truth: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Out-of-fold-like probabilities: noisy, but the true class usually wins."""
    logits = rng.normal(0.0, 1.0, (truth.size, n_classes))
    logits[np.arange(truth.size), truth] += 2.5
    probs = np.exp(logits)
    normalised: np.ndarray = probs / probs.sum(axis=1, keepdims=True)
    return normalised


def flipped_dataset(
    seed: int, *, n: int = 600, n_classes: int = 3, share: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(given labels, pred_probs, indices of the flipped labels): `share` of the labels moved to
    another class at random."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n)
    probs = informative_probs(truth, n_classes, rng)
    flipped = rng.choice(n, int(share * n), replace=False)
    labels = truth.copy()
    labels[flipped] = (truth[flipped] + rng.integers(1, n_classes, flipped.size)) % n_classes
    return labels, probs, np.sort(flipped)


class TestFindLabelIssues:
    def test_flipped_labels_rank_worst(self) -> None:
        labels, probs, flipped = flipped_dataset(0)
        found = find_label_issues(labels, probs)
        is_flipped = np.isin(np.arange(labels.size), flipped)
        assert roc_auc_score(is_flipped, -found.label_quality) > 0.95
        # At random, a tenth of the k worst would be flipped.
        worst = np.argsort(found.label_quality, kind="stable")[: flipped.size]
        assert np.isin(worst, flipped).mean() >= 0.75
        # The flags themselves: most flipped items flagged, most flags flipped.
        assert is_flipped[found.is_issue].mean() >= 0.7
        assert found.is_issue[flipped].mean() >= 0.75

    def test_order_lists_the_issues_by_label_quality(self) -> None:
        labels, probs, _ = flipped_dataset(1)
        found = find_label_issues(labels, probs)
        assert found.order.dtype == np.int64
        assert sorted(found.order.tolist()) == np.flatnonzero(found.is_issue).tolist()
        assert np.all(np.diff(found.label_quality[found.order]) >= 0)
        assert found.label_quality[found.order[0]] == found.label_quality[found.is_issue].min()

    def test_label_quality_and_suggestion(self) -> None:
        labels, probs, _ = flipped_dataset(2)
        found = find_label_issues(labels, probs)
        np.testing.assert_array_equal(found.suggested, np.argmax(probs, axis=1))
        assert found.suggested.dtype == np.int64
        # Self-confidence: the probability of the given label (all classes are in use here).
        np.testing.assert_allclose(found.label_quality, probs[np.arange(labels.size), labels])
        assert found.label_quality.min() >= 0.0
        assert found.label_quality.max() <= 1.0

    def test_class_nobody_was_given(self) -> None:
        # Four columns, but no item is given class 2 although the model spreads mass onto it.
        rng = np.random.default_rng(3)
        truth = rng.choice([0, 1, 3], 400)
        probs = informative_probs(truth, 4, rng)
        probs[:5] = [0.05, 0.05, 0.85, 0.05]  # the model's favourite is the unused class
        labels = truth.copy()
        flipped = rng.choice(400, 40, replace=False)
        labels[flipped] = np.where(truth[flipped] == 0, 1, 0)
        found = find_label_issues(labels, probs)
        # Same verdict as cleanlab on the three used classes, mapped back to the codes.
        used = np.array([0, 1, 3])
        reduced = probs[:, used] / probs[:, used].sum(axis=1, keepdims=True)
        expected = cleanlab_find_label_issues(np.searchsorted(used, labels), reduced, n_jobs=1)
        np.testing.assert_array_equal(found.is_issue, expected)
        np.testing.assert_allclose(
            found.label_quality, reduced[np.arange(400), np.searchsorted(used, labels)]
        )
        assert found.suggested[:5].tolist() == [2] * 5
        assert np.isin(flipped, np.flatnonzero(found.is_issue)).mean() >= 0.7

    def test_class_given_once_does_not_warn(self) -> None:
        # cleanlab warns that it cannot prune a class with a single item; pytest turns warnings
        # into errors, so this fails if the warning leaks.
        labels, probs, _ = flipped_dataset(4)
        labels[labels == 2] = 0
        labels[7] = 2
        found = find_label_issues(labels, probs)
        assert not found.is_issue[7]

    @pytest.mark.parametrize(
        ("labels", "pred_probs", "message"),
        [
            (np.array([[0, 1]]), np.full((2, 2), 0.5), "labels must be a vector"),
            (np.array([0, 1]), np.array([0.5, 0.5]), "pred_probs must be a matrix"),
            (np.array([0, 1, 1]), np.full((2, 2), 0.5), "3 labels"),
            (np.array([0, 2]), np.full((2, 2), 0.5), r"codes in \[0, 2\)"),
            (np.array([0.0, 1.0]), np.full((2, 2), 0.5), "integer codes"),
            (np.array([0, 1]), np.array([[0.5, 0.4], [0.5, 0.5]]), "sum to 1"),
            (np.array([0, 1]), np.array([[1.5, -0.5], [0.5, 0.5]]), r"in \[0, 1\]"),
            (np.array([0, 1]), np.array([[np.nan, 1.0], [0.5, 0.5]]), "finite"),
            (np.array([1, 1]), np.full((2, 2), 0.5), "at least 2 classes"),
        ],
    )
    def test_bad_input(self, labels: np.ndarray, pred_probs: np.ndarray, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            find_label_issues(labels, pred_probs)
        with pytest.raises(ValueError, match=message):
            noise_matrix(labels, pred_probs)
        with pytest.raises(ValueError, match=message):
            outlier_scores(labels, pred_probs)


class TestNoiseMatrix:
    def test_planted_flip_direction(self) -> None:
        # A quarter of class 0 is labelled 1; nothing else is noisy.
        rng = np.random.default_rng(5)
        truth = rng.integers(0, 3, 900)
        probs = informative_probs(truth, 3, rng)
        labels = truth.copy()
        zeros = np.flatnonzero(truth == 0)
        labels[rng.choice(zeros, zeros.size // 4, replace=False)] = 1
        joint = noise_matrix(labels, probs)
        assert joint.shape == (3, 3)
        assert joint.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(joint.sum(axis=1), np.bincount(labels) / labels.size)
        off_diagonal = np.where(np.eye(3, dtype=bool), -1.0, joint)
        # Rows are the given label, columns the true one: given 1, truly 0.
        assert tuple(map(int, np.unravel_index(np.argmax(off_diagonal), joint.shape))) == (1, 0)
        top = confused_pairs(joint, labels.size, top=1)[0]
        assert (top.given, top.suggested) == (1, 0)
        assert top.estimated_count == pytest.approx(zeros.size // 4, rel=0.35)

    def test_unused_class_is_zero(self) -> None:
        rng = np.random.default_rng(6)
        truth = rng.choice([0, 2], 300)
        probs = informative_probs(truth, 3, rng)
        joint = noise_matrix(truth, probs)
        assert joint.sum() == pytest.approx(1.0)
        assert not joint[1].any()
        assert not joint[:, 1].any()


class TestConfusedPairs:
    JOINT = np.array(
        [
            [0.50, 0.04, 0.00],
            [0.10, 0.20, 0.01],
            [0.04, 0.01, 0.10],
        ]
    )

    def test_biggest_off_diagonal_first(self) -> None:
        pairs = confused_pairs(self.JOINT, 1000)
        assert pairs == [
            ConfusedPair(given=1, suggested=0, share=0.10, estimated_count=100),
            ConfusedPair(given=0, suggested=1, share=0.04, estimated_count=40),
            ConfusedPair(given=2, suggested=0, share=0.04, estimated_count=40),
            ConfusedPair(given=1, suggested=2, share=0.01, estimated_count=10),
            ConfusedPair(given=2, suggested=1, share=0.01, estimated_count=10),
        ]

    def test_top_and_min_share(self) -> None:
        assert [(p.given, p.suggested) for p in confused_pairs(self.JOINT, 10, top=2)] == [
            (1, 0),
            (0, 1),
        ]
        assert len(confused_pairs(self.JOINT, 10, min_share=0.04)) == 3
        assert confused_pairs(self.JOINT, 10, top=0) == []
        assert confused_pairs(self.JOINT, 7, top=1)[0].estimated_count == 1  # round(0.7)

    def test_bad_input(self) -> None:
        with pytest.raises(ValueError, match="square"):
            confused_pairs(np.ones((2, 3)), 10)
        with pytest.raises(ValueError, match="n must be"):
            confused_pairs(self.JOINT, -1)
        with pytest.raises(ValueError, match="top must be"):
            confused_pairs(self.JOINT, 10, top=-1)


class TestClassImbalance:
    def test_small_class_flagged(self) -> None:
        finding = class_imbalance(np.array([1000, 1000, 20]))
        assert finding.imbalanced
        assert finding.ratio == 50.0
        assert finding.minority.tolist() == [2]
        assert finding.empty.tolist() == []
        np.testing.assert_allclose(finding.shares, [1000 / 2020, 1000 / 2020, 20 / 2020])
        assert finding.counts.dtype == np.int64

    def test_balanced(self) -> None:
        finding = class_imbalance(np.array([100, 110, 95]))
        assert not finding.imbalanced
        assert finding.ratio == pytest.approx(110 / 95)
        assert finding.minority.size == 0

    def test_ratio_alone(self) -> None:
        # 20 classes: 10 items is 3.4% of 290, above half the uniform 5%, but 100 / 10 = 10.
        finding = class_imbalance(np.array([100] + [10] * 19))
        assert finding.minority.size == 0
        assert finding.ratio == 10.0
        assert finding.imbalanced

    def test_empty_class(self) -> None:
        finding = class_imbalance(np.array([50, 50, 0]))
        assert finding.empty.tolist() == [2]
        assert finding.minority.tolist() == [2]
        assert finding.ratio == 1.0  # over the classes with items: not infinite
        assert finding.imbalanced

    def test_no_items(self) -> None:
        finding = class_imbalance(np.zeros(3, dtype=np.int64))
        assert not finding.imbalanced
        assert math.isnan(finding.ratio)
        assert finding.empty.tolist() == [0, 1, 2]

    @pytest.mark.parametrize(
        "counts", [np.array([5, -1]), np.array([[1, 2]]), np.array([1.5, 2.0]), np.array([])]
    )
    def test_bad_counts(self, counts: np.ndarray) -> None:
        with pytest.raises(ValueError):
            class_imbalance(counts)


class TestOutliers:
    def test_uniform_row_is_most_atypical(self) -> None:
        rng = np.random.default_rng(7)
        truth = rng.integers(0, 3, 200)
        probs = informative_probs(truth, 3, rng)
        probs[57] = 1.0 / 3.0
        scores = outlier_scores(truth, probs)
        assert scores.shape == (200,)
        assert scores.min() >= 0.0
        assert scores.max() <= 1.0
        assert int(np.argmin(scores)) == 57
        chosen = outliers(scores, share=0.01)
        assert chosen.dtype == np.int64
        assert chosen.size == 2  # ceil(0.01 * 200)
        assert chosen[0] == 57
        assert scores[chosen[1]] >= scores[57]

    def test_share_and_max_score(self) -> None:
        scores = np.array([0.9, 0.1, 0.5, 0.1, 0.3, 0.8, 0.7])
        assert outliers(scores, share=0.5).tolist() == [1, 3, 4, 2]  # ceil(3.5), ties by index
        assert outliers(scores, share=0.5, max_score=0.3).tolist() == [1, 3, 4]
        assert outliers(scores, share=0.0).tolist() == []
        assert outliers(np.array([0.4] * 100), share=0.07).size == 7
        with pytest.raises(ValueError, match="share"):
            outliers(scores, share=1.5)
        with pytest.raises(ValueError, match="finite"):
            outliers(np.array([0.1, np.nan]))


def judged_dataset(
    *, reviewed: np.ndarray | None = None, max_listed: int = 200, outlier_share: float = 0.01
) -> tuple[Judged, np.ndarray, list[str], np.ndarray]:
    """judge() on flipped_dataset(8) with string labels, item ids 1000.. in reverse and three
    texts made near-duplicates; returns (judged, item ids, given labels, flipped indices)."""
    codes, probs, flipped = flipped_dataset(8, n=300)
    classes = ["cat", "dog", "eel"]
    given = [classes[c] for c in codes]
    item_ids = np.arange(1299, 999, -1, dtype=np.int64)
    texts = [f"text number {k} with its own words w{k}" for k in range(300)]
    texts[3] = texts[4] = "Please add dark mode"
    texts[5] = "please add dark mode!"
    judged = judge(
        item_ids=item_ids,
        given=given,
        classes=classes,
        oof=probs,
        texts=texts,
        near_duplicate_threshold=0.8,
        outlier_share=outlier_share,
        reviewed=np.zeros(300, dtype=bool) if reviewed is None else reviewed,
        num_perm=128,
        max_listed_groups=max_listed,
        max_listed_outliers=max_listed,
    )
    return judged, item_ids, given, flipped


class TestJudge:
    def test_flags_match_the_steps(self) -> None:
        judged, _, given, flipped = judged_dataset()
        codes = label_codes(given, ["cat", "dog", "eel"])
        found = find_label_issues(codes, np.asarray(flipped_dataset(8, n=300)[1]))
        np.testing.assert_array_equal(judged.flags["label"], found.is_issue)
        assert list(judged.flags) == ["label", "near_duplicate", "outlier"]
        assert np.flatnonzero(judged.flags["near_duplicate"]).tolist() == [3, 4, 5]
        assert judged.flags["outlier"].sum() == 3  # ceil(0.01 * 300)
        np.testing.assert_array_equal(
            judged.is_issue,
            judged.flags["label"] | judged.flags["near_duplicate"] | judged.flags["outlier"],
        )
        assert judged.counts == {kind: int(flag.sum()) for kind, flag in judged.flags.items()}
        assert np.isin(flipped, np.flatnonzero(judged.flags["label"])).mean() >= 0.7
        assert judged.given is given
        assert set(judged.suggested) <= {"cat", "dog", "eel"}

    def test_rank_is_label_quality_then_item_id(self) -> None:
        judged, item_ids, _, _ = judged_dataset()
        assert sorted(judged.rank.tolist()) == list(range(1, 301))
        by_rank = np.argsort(judged.rank)
        keys = list(zip(judged.label_quality[by_rank], item_ids[by_rank], strict=True))
        assert keys == sorted(keys)

    def test_reviewed_doubts_are_counted_not_flagged(self) -> None:
        judged, _, _, _ = judged_dataset()
        doubted = np.flatnonzero(judged.flags["label"])
        reviewed = np.zeros(300, dtype=bool)
        reviewed[doubted[:4]] = True
        reviewed[~judged.flags["label"]] = True  # reviewed but not doubted: not counted
        again, _, _, _ = judged_dataset(reviewed=reviewed)
        assert not again.flags["label"][doubted[:4]].any()
        assert again.flags["label"].sum() == judged.flags["label"].sum() - 4
        assert again.findings["reviews"] == {
            "reviewed_items": int(reviewed.sum()),
            "doubted_but_reviewed": 4,
        }

    def test_findings(self) -> None:
        judged, item_ids, given, _ = judged_dataset()
        findings = judged.findings
        assert list(findings) == [
            "reviews",
            "class_imbalance",
            "noise_matrix",
            "near_duplicate_groups",
            "outliers",
        ]
        assert findings["noise_matrix"]["labels"] == ["cat", "dog", "eel"]
        assert len(findings["noise_matrix"]["joint"]) == 3
        assert [row["label"] for row in findings["class_imbalance"]["labels"]] == [
            "cat",
            "dog",
            "eel",
        ]
        assert sum(row["count"] for row in findings["class_imbalance"]["labels"]) == 300
        (group,) = findings["near_duplicate_groups"]["groups"]
        assert group["item_ids"] == item_ids[[3, 4, 5]].tolist()
        assert group["exact"]  # equal up to case, spacing and punctuation
        assert group["labels"] == sorted({given[3], given[4], given[5]})
        assert findings["near_duplicate_groups"]["n_items"] == 3
        listed = findings["outliers"]["items"]
        assert {row["item_id"] for row in listed} == set(item_ids[judged.flags["outlier"]].tolist())
        scores = [row["score"] for row in listed]
        assert scores == sorted(scores)  # most atypical first
        assert findings["outliers"]["n_items"] == 3

    def test_lists_are_capped_flags_are_not(self) -> None:
        judged, _, _, _ = judged_dataset(max_listed=1, outlier_share=0.1)
        assert judged.flags["outlier"].sum() == 30
        assert judged.findings["outliers"]["n_items"] == 30
        assert len(judged.findings["outliers"]["items"]) == 1

    def test_label_codes(self) -> None:
        codes = label_codes(["b", "a", "b"], ["a", "b"])
        assert codes.tolist() == [1, 0, 1]
        assert codes.dtype == np.int64
        with pytest.raises(KeyError):
            label_codes(["c"], ["a", "b"])
