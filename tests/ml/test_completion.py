"""The auto-accept rule that completes a pool, and the pool-completion replay."""

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from app.ml.completion import (
    accept_within_budget,
    calibration_from_probabilities,
    error_budget,
    expected_errors,
    fit_calibration,
    out_of_fold_probabilities,
)
from app.ml.simulation import complete_pool, summarize_completion


def logistic() -> Any:
    return LogisticRegression(max_iter=1000)


class TestCalibration:
    def test_levels_are_shrunk_by_one_pseudo_error_and_stay_monotone(self) -> None:
        # 1,000 confident items all right, 10 middling items all right, 100 unsure half right.
        confidence = np.concatenate([np.full(100, 0.4), np.full(10, 0.7), np.full(1000, 0.99)])
        correct = np.concatenate([np.arange(100) % 2 == 0, np.ones(1010, bool)])
        calibration = fit_calibration(confidence, correct)
        p = calibration(np.array([0.1, 0.4, 0.5, 0.7, 0.8, 0.99, 1.0]))
        # Below the first edge: the lowest level. Isotonic merges 0.7 and 0.99 (both all
        # right) into one level of 1,010 items: 1010 / 1011.
        assert p[0] == p[1] == p[2] == pytest.approx(50 / 101)
        assert p[3] == p[4] == p[5] == p[6] == pytest.approx(1010 / 1011)
        assert np.all(np.diff(p) >= 0)
        assert calibration.n_calibration == 1110

    def test_a_thin_top_level_cannot_claim_certainty(self) -> None:
        confidence = np.concatenate([np.linspace(0.3, 0.8, 200), np.full(3, 0.999)])
        correct = np.concatenate([np.arange(200) % 4 != 0, np.ones(3, bool)])
        p = fit_calibration(confidence, correct)(np.array([0.999]))
        assert p[0] < 0.9  # a handful of right answers say little: shrunk well below 1

    def test_no_data_makes_every_accept_cost_a_whole_error(self) -> None:
        calibration = fit_calibration(np.zeros(0), np.zeros(0, bool))
        p = calibration(np.array([0.99, 1.0]))
        assert p.tolist() == [0.0, 0.0]
        assert accept_within_budget(p, 1.5).shape == (1,)

    def test_bad_input_is_refused(self) -> None:
        with pytest.raises(ValueError, match="same length"):
            fit_calibration(np.zeros(3), np.zeros(2, bool))
        with pytest.raises(ValueError, match="shrink"):
            fit_calibration(np.zeros(3), np.zeros(3, bool), shrink=-1)
        with pytest.raises(ValueError, match="target"):
            error_budget(pool_size=10, target=1.5)

    def test_from_probabilities_uses_the_top_label(self) -> None:
        probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
        calibration = calibration_from_probabilities(probabilities, np.array([0, 1, 1]), shrink=0.0)
        # Right at 0.8 and 0.9, wrong at 0.6: a step from 0 to 1.
        assert calibration(np.array([0.6, 0.85])).tolist() == [0.0, 1.0]


class TestRule:
    def test_budget_is_the_pool_share_minus_committed_errors(self) -> None:
        assert error_budget(pool_size=1000, target=0.95) == pytest.approx(50.0)
        assert error_budget(pool_size=1000, target=0.95, committed_errors=12.5) == pytest.approx(
            37.5
        )

    def test_accepts_the_most_probably_correct_prefix_within_the_budget(self) -> None:
        p = np.array([0.9, 0.99, 0.5, 0.9, 0.95])
        # Without the spread term: 0.01 + 0.05 + 0.1 + 0.1 = 0.26 fits 0.3, adding 0.5 does not.
        assert accept_within_budget(p, 0.3, z=0.0).tolist() == [1, 4, 0, 3]
        # With it the same budget holds fewer.
        assert accept_within_budget(p, 0.3).shape[0] < 4
        assert accept_within_budget(np.ones(5), 0.0).shape[0] == 5  # certain items are free
        assert accept_within_budget(p, -1.0).shape[0] == 0
        assert expected_errors(p) == pytest.approx(0.76)


def test_out_of_fold_probabilities_score_each_item_without_it() -> None:
    x, y = make_classification(
        n_samples=120, n_features=6, n_classes=3, n_informative=4, random_state=1
    )
    oof = out_of_fold_probabilities(x, y, 3, make_classifier=logistic, folds=3, seed=0)
    assert oof.shape == (120, 3)
    assert np.allclose(oof.sum(axis=1), 1.0)
    # Held out, yet informative: better than chance by far.
    assert float(np.mean(oof.argmax(axis=1) == y)) > 0.5  # chance: 1/3


def _data(flip: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(
        n_samples=600,
        n_features=10,
        n_informative=6,
        n_classes=3,
        class_sep=2.0,
        flip_y=flip,
        random_state=seed,
    )
    return x, y


class TestCompletePool:
    def test_a_learnable_pool_completes_at_the_target_with_fewer_human_answers(self) -> None:
        x, y = _data(flip=0.0)
        runs = [
            complete_pool(
                x,
                y,
                strategy="margin",
                target=0.95,
                seed_size=30,
                batch_size=30,
                make_classifier=logistic,
                seed=seed,
            )
            for seed in range(2)
        ]
        for run in runs:
            assert run.human_answers is not None and run.human_answers < 600 * 0.6
            assert run.pool_accuracy is not None and run.pool_accuracy >= 0.95
            assert run.auto_accepted == 600 - run.human_answers
            assert run.points[-1].labels == run.human_answers
            assert [p.labels for p in run.points] == sorted({p.labels for p in run.points})
        summary = summarize_completion(runs)
        assert summary.completed == 2
        assert summary.worst_pool_accuracy == min(r.pool_accuracy or 0 for r in runs)

    def test_noise_the_model_cannot_learn_is_left_to_humans(self) -> None:
        # Labels flipped at random on 60% of the items: no model gets 95% of them right, so
        # honest completion needs (almost) everything by hand.
        x, y = _data(flip=0.6, seed=2)
        run = complete_pool(
            x,
            y,
            strategy="margin",
            target=0.95,
            seed_size=30,
            batch_size=60,
            make_classifier=logistic,
        )
        assert run.human_answers is not None and run.human_answers >= 0.8 * 600
        assert run.pool_accuracy is not None and run.pool_accuracy >= 0.95

    def test_max_labels_stops_an_unfinished_replay_and_says_so(self) -> None:
        x, y = _data(flip=0.6, seed=3)
        run = complete_pool(
            x,
            y,
            strategy="random",
            target=0.99,
            seed_size=30,
            batch_size=30,
            make_classifier=logistic,
            max_labels=90,
        )
        assert (run.human_answers, run.human_share, run.pool_accuracy) == (None, None, None)
        assert [p.labels for p in run.points] == [30, 60, 90]
        assert summarize_completion([run]).completed == 0
