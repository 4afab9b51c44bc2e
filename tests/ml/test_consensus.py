"""Consensus methods on simulated annotators of known accuracy, synthetic and on the shared
Debian descriptions, and their edge cases."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from cleanlab.multiannotator import get_label_quality_multiannotator
from scipy.stats import spearmanr
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline

from app.ml.agreement import Votes, agreement_with_others, label_counts
from app.ml.consensus import (
    PROBABILITY_FLOOR,
    Consensus,
    crowdlab,
    dawid_skene,
    label_columns,
    majority_vote,
    rows_by_item,
)

ACCURACIES = [0.85, 0.8, 0.75, 0.7, 0.3]  # the last annotator is much worse than the rest


def simulate(
    truth: np.ndarray,
    n_labels: int,
    accuracies: list[float],
    *,
    seed: int,
    coverage: float = 1.0,
    confusion: np.ndarray | None = None,
) -> Votes:
    """Each annotator gives the true label with its accuracy, otherwise a wrong one: uniform, or
    drawn with weights `confusion` (renormalised without the true label)."""
    rng = np.random.default_rng(seed)
    items, annotators, labels = [], [], []
    for annotator, accuracy in enumerate(accuracies):
        chosen = np.flatnonzero(rng.random(len(truth)) < coverage)
        correct = rng.random(len(chosen)) < accuracy
        if confusion is None:
            wrong = (truth[chosen] + rng.integers(1, n_labels, len(chosen))) % n_labels
        else:
            weights = np.tile(confusion, (len(chosen), 1))
            weights[np.arange(len(chosen)), truth[chosen]] = 0.0
            cumulative = np.cumsum(weights, axis=1)
            draw = rng.random(len(chosen)) * cumulative[:, -1]
            wrong = (cumulative < draw[:, None]).sum(axis=1)
        items.append(chosen)
        annotators.append(np.full(len(chosen), annotator))
        labels.append(np.where(correct, truth[chosen], wrong))
    return Votes(
        item=np.concatenate(items),
        annotator=np.concatenate(annotators),
        label=np.concatenate(labels),
        n_items=len(truth),
        n_annotators=len(accuracies),
        n_labels=n_labels,
    )


def accuracy(result: Consensus, truth: np.ndarray) -> float:
    """Share of items whose consensus is the truth; an undecided item (-1) counts as wrong."""
    return float(np.mean(result.labels == truth))


def simulated_accuracy(votes: Votes, truth: np.ndarray) -> np.ndarray:
    right = np.bincount(votes.annotator, weights=votes.label == truth[votes.item])
    return right / np.bincount(votes.annotator)


def test_majority_vote_never_breaks_a_tie_silently() -> None:
    votes = Votes.from_triples(
        [(0, "a", "x"), (0, "b", "y"), (1, "a", "y"), (1, "b", "y"), (1, "c", "x")],
        labels=["x", "y", "z"],
    )
    result = majority_vote(votes)
    assert list(result.labels) == [-1, 1]
    assert list(result.quality) == pytest.approx([0.5, 2 / 3])
    # A plurality is not a majority: 2 of 4 votes leave the item undecided.
    plurality = Votes.from_triples(
        [(0, "a", "x"), (0, "b", "x"), (0, "c", "y"), (0, "d", "z")], labels=["x", "y", "z"]
    )
    assert majority_vote(plurality).labels.tolist() == [-1]
    assert list(result.annotator_n) == [2, 2, 1]
    rates, _ = agreement_with_others(votes, label_counts(votes))
    assert np.array_equal(result.annotator_quality, rates, equal_nan=True)


def test_items_and_annotators_without_votes() -> None:
    votes = Votes(
        item=np.array([0, 0]),
        annotator=np.array([0, 1]),
        label=np.array([1, 1]),
        n_items=2,
        n_annotators=3,
        n_labels=2,
    )
    for result in (majority_vote(votes), dawid_skene(votes)):
        assert list(result.labels) == [1, -1]
        assert np.isnan(result.quality[1]) and np.isnan(result.annotator_quality[2])
        assert list(result.annotator_n) == [1, 1, 0]
    nobody = Votes.from_triples([], labels=["x", "y"], items=["i"], annotators=["a"])
    for result in (majority_vote(nobody), dawid_skene(nobody), crowdlab(nobody, np.ones((1, 2)))):
        assert result.labels.tolist() == [-1]
        assert np.isnan(result.quality).all() and np.isnan(result.annotator_quality).all()


def test_dawid_skene_beats_majority_when_one_annotator_is_much_worse() -> None:
    rng = np.random.default_rng(0)
    n_labels = 5
    truth = rng.choice(n_labels, size=2000, p=[0.4, 0.25, 0.15, 0.12, 0.08])
    votes = simulate(truth, n_labels, ACCURACIES, seed=1)
    majority, ds = majority_vote(votes), dawid_skene(votes, seed=0)
    assert ds.converged and 1 < ds.iterations < 100
    # Majority vote refuses to decide ties; they count as wrong.
    assert accuracy(ds, truth) > accuracy(majority, truth) + 0.02
    assert list(np.argsort(ds.annotator_quality)) == list(np.argsort(ACCURACIES))
    # Its quality estimates are close to the simulated accuracies.
    assert ds.annotator_quality == pytest.approx(simulated_accuracy(votes, truth), abs=0.03)
    assert np.all((ds.quality >= 0) & (ds.quality <= 1))
    assert dawid_skene(votes, seed=0).labels.tolist() == ds.labels.tolist()  # deterministic


def test_dawid_skene_is_stable_in_log_space_with_many_votes() -> None:
    # 1,000 annotators of accuracy 0.6 on each item: the likelihood of an item's votes is about
    # 0.6**600 * 0.2**400 ~ 1e-413, below the smallest float; a log sum does not underflow.
    truth = np.array([0, 1, 2, 1])
    votes = simulate(truth, 3, [0.6] * 1000, seed=2)
    result = dawid_skene(votes)
    assert not np.isnan(result.quality).any() and not np.isnan(result.annotator_quality).any()
    assert result.labels.tolist() == [0, 1, 2, 1]
    assert result.quality == pytest.approx([1.0] * 4)


def test_dawid_skene_reports_iterations_and_convergence() -> None:
    truth = np.random.default_rng(3).integers(0, 3, 300)
    votes = simulate(truth, 3, [0.8, 0.7, 0.6], seed=3)
    stopped = dawid_skene(votes, max_iter=1)
    assert not stopped.converged and stopped.iterations == 1
    finished = dawid_skene(votes)
    assert finished.converged and 1 < finished.iterations < 100
    # EM converges linearly: a tighter tolerance takes more iterations, or hits the cap.
    tighter = dawid_skene(votes, tol=1e-8)
    assert tighter.iterations > finished.iterations
    assert tighter.converged == (tighter.iterations < 100)
    with pytest.raises(ValueError):
        dawid_skene(votes, max_iter=0)
    with pytest.raises(ValueError):
        dawid_skene(votes, smoothing=0.0)


def test_crowdlab_beats_majority_and_ranks_annotators() -> None:
    rng = np.random.default_rng(4)
    n_labels = 4
    truth = rng.integers(0, n_labels, 1500)
    # Partial coverage: many items have two labels, and majority vote cannot settle a 1-1 split.
    votes = simulate(truth, n_labels, [0.8, 0.75, 0.3], seed=5, coverage=0.7)
    # A model that is right 70% of the time, with honest-looking probabilities.
    probabilities = rng.dirichlet(np.ones(n_labels), size=len(truth)) * 0.5
    correct = rng.random(len(truth)) < 0.7
    probabilities[np.arange(len(truth)), np.where(correct, truth, (truth + 1) % n_labels)] += 0.5
    result = crowdlab(votes, probabilities)
    assert accuracy(result, truth) > accuracy(majority_vote(votes), truth) + 0.1
    assert list(np.argsort(result.annotator_quality)) == [2, 1, 0]
    unlabelled = label_counts(votes).sum(axis=1) == 0
    assert unlabelled.any() and np.array_equal(np.isnan(result.quality), unlabelled)
    assert np.array_equal(result.labels == -1, unlabelled)
    assert np.all((result.quality[~unlabelled] >= 0) & (result.quality[~unlabelled] <= 1))
    with pytest.raises(ValueError, match="shape"):
        crowdlab(votes, probabilities[:10])
    with pytest.raises(ValueError, match="non-negative"):
        crowdlab(votes, probabilities - 1.0)


def test_crowdlab_never_picks_a_class_no_annotator_used() -> None:
    rng = np.random.default_rng(1)
    truth = rng.choice([0, 2], 60)
    labels = np.where(rng.random((60, 3)) < 0.7, truth[:, None], rng.choice([0, 2], (60, 3)))
    probabilities = np.full((60, 4), 0.02)
    probabilities[np.arange(60), truth] = 0.94
    probabilities[:10] = [0.01, 0.01, 0.01, 0.97]  # a model sure of class 3, which nobody used
    # Left alone, cleanlab's consensus picks class 3 for items whose annotators split 2-1.
    raw = get_label_quality_multiannotator(
        labels.astype(float), probabilities, verbose=False, return_detailed_quality=False
    )
    assert 3 in set(raw["label_quality"]["consensus_label"])
    votes = Votes(
        item=np.repeat(np.arange(60), 3),
        annotator=np.tile(np.arange(3), 60),
        label=labels.ravel(),
        n_items=60,
        n_annotators=3,
        n_labels=4,
    )
    result = crowdlab(votes, probabilities)
    assert set(result.labels.tolist()) <= {0, 2}
    unanimous = (labels == labels[:, :1]).all(axis=1)
    assert np.array_equal(result.labels[unanimous], labels[unanimous, 0])


def test_crowdlab_with_unvoted_items_unused_labels_and_lone_annotators() -> None:
    votes = Votes(
        item=np.array([0, 0, 1, 2, 4]),
        annotator=np.array([0, 1, 0, 1, 3]),
        label=np.array([0, 0, 1, 0, 1]),
        n_items=5,
        n_annotators=4,
        n_labels=3,  # label 2 is never chosen
    )
    probabilities = np.full((5, 3), 1 / 3)
    result = crowdlab(votes, probabilities)
    assert result.labels[3] == -1 and np.isnan(result.quality[3])
    assert np.isnan(result.annotator_quality[2])  # labelled nothing
    assert np.isnan(result.annotator_quality[3])  # labelled only an item nobody else did
    assert not np.isnan(result.annotator_quality[:2]).any()
    assert set(result.labels[[0, 1, 2, 4]].tolist()) <= {0, 1}
    assert result.annotator_n.tolist() == [2, 2, 0, 1]


def test_crowdlab_without_overlap_or_with_one_class_falls_back_to_the_votes() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1]])
    single = Votes.from_triples(
        [("i1", "a", "x"), ("i2", "b", "y"), ("i3", "a", "y")], labels=["x", "y", "z"]
    )
    result = crowdlab(single, probabilities)
    # Each item's only label, scored by the model's confidence in it (cleanlab's self-confidence).
    assert result.labels.tolist() == [0, 1, 1]
    assert result.quality == pytest.approx([0.7, 0.6, 0.4])
    assert np.isnan(result.annotator_quality).all()
    one_class = Votes.from_triples(
        [("i1", "a", "x"), ("i1", "b", "x"), ("i2", "b", "x"), ("i3", "c", "x")],
        labels=["x", "y", "z"],
    )
    result = crowdlab(one_class, probabilities)
    assert result.labels.tolist() == [0, 0, 0]
    assert result.quality == pytest.approx([0.7, 0.3, 0.5])
    assert result.annotator_quality[:2] == pytest.approx([1.0, 1.0])
    assert np.isnan(result.annotator_quality[2])


def test_crowdlab_when_annotators_never_agree() -> None:
    # cleanlab warns about this input; the agreement report says it already, so no error here.
    votes = Votes.from_triples(
        [(0, "a", "x"), (0, "b", "y"), (1, "a", "y"), (1, "b", "z"), (2, "a", "z"), (2, "b", "x")],
        labels=["x", "y", "z"],
    )
    probabilities = np.array([[0.6, 0.3, 0.1], [0.1, 0.6, 0.3], [0.3, 0.1, 0.6]])
    result = crowdlab(votes, probabilities)
    assert result.labels.tolist() == [0, 1, 2]


def test_crowdlab_breaks_unbreakable_ties_the_same_way_every_time() -> None:
    # Two annotators who disagree half the time and an uninformative model: cleanlab's majority
    # vote falls back on numpy's global RNG. Seeded inside crowdlab, the answer is stable
    # whatever state the caller left the global RNG in, and that state is restored.
    rows = [("0", "x", "y"), ("1", "x", "y"), ("2", "y", "x"), ("3", "x", "x"), ("4", "y", "y")]
    votes = Votes.from_triples(
        [(int(i), who, label) for i, a, b in rows for who, label in (("a", a), ("b", b))],
        labels=["x", "y"],
    )
    probabilities = np.full((5, 2), 0.5)
    outcomes = set()
    for seed in range(8):
        np.random.seed(seed)
        before = np.random.get_state(legacy=False)["state"]["key"].copy()
        outcomes.add(tuple(crowdlab(votes, probabilities).labels.tolist()))
        assert np.array_equal(np.random.get_state(legacy=False)["state"]["key"], before)
    assert len(outcomes) == 1


def debian_sample(path: Path, size: int, seed: int) -> tuple[list[str], np.ndarray, list[str]]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    picked = np.random.default_rng(seed).choice(len(rows), size=size, replace=False)
    sample = [rows[i] for i in picked]
    labels = sorted({row["label"] for row in sample})
    truth = np.array([labels.index(row["label"]) for row in sample])
    return [row["text"] for row in sample], truth, labels


def out_of_fold_probabilities(texts: list[str], majority: Consensus, n_labels: int) -> np.ndarray:
    """What a deployment has: 5-fold out-of-fold probabilities of TF-IDF + logistic regression
    trained on the items majority vote decided (classes with >= 10 of them), for every item."""
    decided = np.flatnonzero(majority.labels >= 0)
    frequent = np.flatnonzero(np.bincount(majority.labels[decided], minlength=n_labels) >= 10)
    probabilities = np.full((len(texts), n_labels), 1e-3)
    folds = KFold(n_splits=5, shuffle=True, random_state=0)
    documents = np.array(texts, dtype=object)
    for train, test in folds.split(documents):
        fit = train[np.isin(majority.labels[train], frequent)]
        model = make_pipeline(
            TfidfVectorizer(sublinear_tf=True, min_df=2, dtype=np.float32),
            # A loose tolerance: lbfgs to the default 1e-4 costs 2-3x the time for the same
            # predictions (FIELD-NOTES: the solver, not cleanlab, is the cost).
            LogisticRegression(C=10.0, tol=1e-3, max_iter=1000),
        )
        model.fit(list(documents[fit]), majority.labels[fit])
        classes = model.classes_.astype(np.int64)
        probabilities[np.ix_(test, classes)] += model.predict_proba(list(documents[test]))
    normalised: np.ndarray = probabilities / probabilities.sum(axis=1, keepdims=True)
    return normalised


def test_on_debian_descriptions_both_beat_majority_and_rank_annotators(
    debian_path: Path,
) -> None:
    texts, truth, labels = debian_sample(debian_path, 2000, seed=0)
    # Wrong answers lean towards the sections the maintainers use most (a plausible confusion).
    frequency = np.bincount(truth, minlength=len(labels)) / len(truth)
    accuracies = [0.8, 0.75, 0.7, 0.65, 0.3]
    votes = simulate(truth, len(labels), accuracies, seed=1, coverage=0.7, confusion=frequency)
    majority = majority_vote(votes)
    probabilities = out_of_fold_probabilities(texts, majority, len(labels))

    ds = dawid_skene(votes)
    cl = crowdlab(votes, probabilities)
    baseline = accuracy(majority, truth)
    assert ds.converged
    assert accuracy(ds, truth) > baseline + 0.02
    assert accuracy(cl, truth) > baseline + 0.02
    simulated = simulated_accuracy(votes, truth)
    for result in (ds, cl):
        assert spearmanr(result.annotator_quality, simulated).statistic == pytest.approx(1.0)


class TestRowsByItem:
    def test_rows_follow_their_items(self) -> None:
        rows = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]], dtype=np.float32)
        aligned = rows_by_item(np.array([30, 10, 20]), [20, 99, 30, 5], rows, n_columns=2)
        assert aligned.dtype == np.float64
        np.testing.assert_array_equal(aligned[0], rows[2])  # item 30
        assert np.isnan(aligned[1]).all()  # item 10 has no row
        np.testing.assert_array_equal(aligned[2], rows[0])  # item 20; 99 and 5 are not asked

    def test_nothing_to_align(self) -> None:
        none = rows_by_item(np.array([], dtype=np.int64), [1], np.ones((1, 2)), n_columns=2)
        assert none.shape == (0, 2)
        aligned = rows_by_item(np.array([1, 2]), [], np.empty((0, 3)), n_columns=3)
        assert aligned.shape == (2, 3)
        assert np.isnan(aligned).all()


class TestLabelColumns:
    def test_columns_move_to_the_project_order(self) -> None:
        model = np.array([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]])
        aligned = label_columns(model, model_labels=["b", "a", "c"], labels=["a", "b", "c"])
        np.testing.assert_allclose(aligned[0], [0.2, 0.7, 0.1])
        np.testing.assert_allclose(aligned.sum(axis=1), 1.0)
        assert aligned[1, 1] == pytest.approx(PROBABILITY_FLOOR / (1 + PROBABILITY_FLOOR))

    def test_unknown_labels_get_the_floor_dropped_ones_go(self) -> None:
        # The model knows "a" and "old" (no longer a project label); "b" is new to it.
        aligned = label_columns(
            np.array([[0.6, 0.4]]), model_labels=["a", "old"], labels=["a", "b"]
        )
        total = 0.6 + PROBABILITY_FLOOR
        np.testing.assert_allclose(aligned, [[0.6 / total, PROBABILITY_FLOOR / total]])

    def test_unreadable_items_are_uniform(self) -> None:
        model = np.array([[np.nan, np.nan], [0.9, 0.1]])
        aligned = label_columns(model, model_labels=["a", "b"], labels=["a", "b", "c"])
        np.testing.assert_allclose(aligned[0], [1 / 3, 1 / 3, 1 / 3])
        assert aligned[1, 2] < 1e-5
