"""The pure part of continuous labeling: the daily sample, disagreement rates, periods."""

from datetime import date, timedelta
from typing import Any

import numpy as np
import pytest

from app.ml.disagreement import (
    choose_daily_sample,
    confusions,
    disagreement_rate,
    period_starts,
    rates_by_group,
)

EPOCH = date(1970, 1, 1)


class TestChooseDailySample:
    def test_lowest_confidence_below_the_threshold_first(self) -> None:
        confidence = np.array([0.9, 0.3, 0.5, 0.2, 0.3, 0.49, 0.1])
        sample = choose_daily_sample(
            confidence, threshold=0.5, n_low_confidence=10, n_random=0, seed=1
        )
        # 0.5 is not below 0.5; the tie at 0.3 goes to the earlier candidate.
        assert sample.low_confidence.tolist() == [6, 3, 1, 4, 5]
        capped = choose_daily_sample(
            confidence, threshold=0.5, n_low_confidence=2, n_random=0, seed=1
        )
        assert capped.low_confidence.tolist() == [6, 3]
        assert sample.random.tolist() == []

    def test_fewer_low_confidence_candidates_than_places(self) -> None:
        confidence = np.array([0.9, 0.2, 0.8])
        sample = choose_daily_sample(
            confidence, threshold=0.5, n_low_confidence=10, n_random=10, seed=1
        )
        assert sample.low_confidence.tolist() == [1]
        assert sample.random.tolist() == [0, 2]  # everything left, when places suffice

    def test_random_places_go_to_the_others_and_are_seeded(self) -> None:
        rng = np.random.default_rng(0)
        confidence = rng.uniform(size=50)
        kwargs: dict[str, Any] = {"threshold": 0.3, "n_low_confidence": 5, "n_random": 10}
        first = choose_daily_sample(confidence, seed=[7, 738000, 0], **kwargs)
        again = choose_daily_sample(confidence, seed=[7, 738000, 0], **kwargs)
        other = choose_daily_sample(confidence, seed=[7, 738001, 0], **kwargs)
        assert len(first.low_confidence) == 5 and len(first.random) == 10
        assert not set(first.random.tolist()) & set(first.low_confidence.tolist())
        assert len(set(first.random.tolist())) == 10
        assert np.array_equal(first.random, again.random)
        assert not np.array_equal(first.random, other.random)
        lowest = np.sort(confidence)[:5]
        assert np.allclose(confidence[first.low_confidence], lowest)

    def test_random_places_are_uniform(self) -> None:
        """Every candidate is drawn with probability n_random / n over many days."""
        confidence = np.linspace(0.0, 1.0, 20)  # 0.0 alone is low-confidence below 0.01
        counts = np.zeros(20)
        days = 4_000
        for day in range(days):
            sample = choose_daily_sample(
                confidence, threshold=0.01, n_low_confidence=1, n_random=5, seed=[1, day]
            )
            assert sample.low_confidence.tolist() == [0]
            counts[sample.random] += 1
        assert counts[0] == 0
        expected = days * 5 / 19
        # Binomial standard deviation is about 18; 5 of them is far outside chance.
        assert np.all(np.abs(counts[1:] - expected) < 5 * np.sqrt(expected * (1 - 5 / 19)))

    def test_nothing_to_draw(self) -> None:
        empty = choose_daily_sample(
            np.zeros(0), threshold=0.5, n_low_confidence=3, n_random=3, seed=0
        )
        assert empty.low_confidence.tolist() == empty.random.tolist() == []
        none = choose_daily_sample(
            np.array([0.1, 0.9]), threshold=0.5, n_low_confidence=0, n_random=0, seed=0
        )
        assert none.low_confidence.tolist() == none.random.tolist() == []

    @pytest.mark.parametrize(
        ("confidence", "n_low", "n_random"),
        [(np.zeros((2, 2)), 1, 1), (np.zeros(3), -1, 1), (np.zeros(3), 1, -2)],
    )
    def test_bad_arguments(self, confidence: np.ndarray, n_low: int, n_random: int) -> None:
        with pytest.raises(ValueError):
            choose_daily_sample(
                confidence, threshold=0.5, n_low_confidence=n_low, n_random=n_random, seed=0
            )


class TestDisagreementRate:
    def test_rate_and_wilson_interval(self) -> None:
        decided = np.array([True] * 10 + [False] * 3)
        disagreed = np.array([True] * 3 + [False] * 10)
        rate = disagreement_rate(decided, disagreed)
        assert (rate.n_sampled, rate.n_decided, rate.n_disagreed) == (13, 10, 3)
        assert rate.rate == pytest.approx(0.3)
        # The Wilson score interval for 3 of 10 at z = 1.96, worked by hand: 0.1078 to 0.6032.
        assert rate.ci_low == pytest.approx(0.1078, abs=1e-4)
        assert rate.ci_high == pytest.approx(0.6032, abs=1e-4)

    def test_all_agree_has_a_non_zero_upper_bound(self) -> None:
        rate = disagreement_rate(np.ones(20, bool), np.zeros(20, bool))
        assert rate.rate == 0.0 and rate.ci_low == 0.0
        assert rate.ci_high == pytest.approx(0.1611, abs=1e-4)

    def test_nothing_decided_has_no_rate(self) -> None:
        rate = disagreement_rate(np.zeros(4, bool), np.zeros(4, bool))
        assert (rate.n_sampled, rate.n_decided, rate.rate, rate.ci_low, rate.ci_high) == (
            4,
            0,
            None,
            None,
            None,
        )

    def test_a_disagreement_needs_a_decision(self) -> None:
        with pytest.raises(ValueError):
            disagreement_rate(np.array([False]), np.array([True]))
        with pytest.raises(ValueError):
            disagreement_rate(np.array([True, False]), np.array([True]))


def test_rates_by_group_in_key_order() -> None:
    keys = ["b", "a", "b", "c", "a", "b"]
    decided = np.array([True, True, True, False, True, True])
    disagreed = np.array([True, False, False, False, True, True])
    groups = rates_by_group(keys, decided, disagreed)
    assert [key for key, _ in groups] == ["a", "b", "c"]
    summary = {key: (r.n_sampled, r.n_decided, r.n_disagreed) for key, r in groups}
    assert summary == {"a": (2, 2, 1), "b": (3, 3, 2), "c": (1, 0, 0)}
    assert groups[1][1].rate == pytest.approx(2 / 3)
    assert rates_by_group([], np.zeros(0, bool), np.zeros(0, bool)) == []
    with pytest.raises(ValueError):
        rates_by_group(["a"], np.zeros(2, bool), np.zeros(2, bool))


class TestPeriodStarts:
    def test_days_are_their_own_period(self) -> None:
        days = np.array([-3, 0, 20_000])
        assert period_starts(days, "day").tolist() == [-3, 0, 20_000]

    def test_weeks_start_on_monday(self) -> None:
        start = date(1969, 12, 1)
        days = np.arange(120) + (start - EPOCH).days
        mondays = period_starts(days, "week")
        for day, monday in zip(days.tolist(), mondays.tolist(), strict=True):
            as_date, week_start = EPOCH + timedelta(days=day), EPOCH + timedelta(days=monday)
            assert week_start.weekday() == 0
            assert 0 <= (as_date - week_start).days < 7

    def test_unknown_bucket(self) -> None:
        with pytest.raises(ValueError):
            period_starts(np.array([1]), "month")  # type: ignore[arg-type]


def test_confusions_most_frequent_first() -> None:
    model = ["a", "a", "a", "b", "b", "c", "c"]
    human: list[str | None] = ["b", "b", "a", "a", None, "a", "b"]
    assert confusions(model, human) == [("a", "b", 2), ("b", "a", 1), ("c", "a", 1), ("c", "b", 1)]
    with pytest.raises(ValueError):
        confusions(["a"], [])
