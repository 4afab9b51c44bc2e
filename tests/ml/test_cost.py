"""The labeling-cost arithmetic on hand-made counts and price lists."""

import pytest

from app.ml.cost import (
    HumanPrice,
    LabelSaving,
    TierPrice,
    human_price,
    labels_saved,
    money,
    price_tiers,
    priced,
    spend_totals,
    tally_answers,
    unit_price,
)

PRICES = {"crowd": 0.05, "in_house": 0.5}


def test_money_and_priced() -> None:
    assert money(0.1 + 0.2) == 0.3
    assert money(1 / 3) == 0.333333
    assert priced(3, 0.1) == 0.3
    assert priced(None, 0.1) is None
    assert priced(3, None) is None


def test_unit_price() -> None:
    assert unit_price(PRICES, "crowd") == 0.05
    assert unit_price(PRICES, "offshore") is None  # a tier the price list does not name
    assert unit_price(PRICES, None) is None  # a key without a tier


def test_price_tiers_by_name_tierless_last() -> None:
    lines = price_tiers({None: 1, "offshore": 2, "in_house": 5, "crowd": 5}, cost_per_label=PRICES)
    assert lines == [
        TierPrice(tier="crowd", answers=5, unit_price=0.05, cost=0.25),
        TierPrice(tier="in_house", answers=5, unit_price=0.5, cost=2.5),
        TierPrice(tier="offshore", answers=2, unit_price=None, cost=0.0),
        TierPrice(tier=None, answers=1, unit_price=None, cost=0.0),
    ]
    assert [line.spend for line in lines] == [0.25, 2.5, None, None]
    totals = spend_totals(lines)
    assert (totals.paid, totals.priced, totals.unpriced) == (13, 10, 3)
    assert totals.total_spend == 2.75
    empty = spend_totals([])
    assert (empty.paid, empty.priced, empty.unpriced, empty.total_spend) == (0, 0, 0, 0)


ANSWERED = {
    ("ann", "useful"): 4,
    ("ann", "abstains"): 1,
    ("bob", "useful"): 2,
    ("bob", "replaced"): 3,
    ("cat", "disagreement"): 2,
    ("dan", "unresolved"): 1,
}
TIERS = {"ann": "crowd", "bob": "in_house", "cat": None, "dan": "offshore"}


class TestTallyAnswers:
    def test_counts_and_spend(self) -> None:
        tally = tally_answers(ANSWERED, tiers=TIERS, cost_per_label=PRICES)
        assert tally.by_tier == {"crowd": 5, "in_house": 5, None: 2, "offshore": 1}
        assert tally.answers == {
            "useful": 6,
            "abstains": 1,
            "replaced": 3,
            "disagreement": 2,
            "unresolved": 1,
        }
        assert tally.spend == pytest.approx({"useful": 1.2, "abstains": 0.05, "replaced": 1.5})
        assert tally.spend_on("disagreement") == 0.0  # unpriced answers only
        assert tally.priced_spend == pytest.approx(2.75)
        assert tally.unpriced_names == {None: {"cat"}, "offshore": {"dan"}}
        assert tally.wasted_answers == 6  # abstains + replaced + disagreement
        assert tally.wasted_spend == 1.55

    def test_annotator_without_a_key_is_unpriced(self) -> None:
        tally = tally_answers({("ghost", "useful"): 3}, tiers={}, cost_per_label=PRICES)
        assert tally.by_tier == {None: 3}
        assert tally.unpriced_names == {None: {"ghost"}}
        assert tally.priced_spend == 0

    def test_nothing_answered(self) -> None:
        tally = tally_answers({}, tiers=TIERS, cost_per_label=PRICES)
        assert tally.by_tier == {}
        assert tally.wasted_answers == 0
        assert tally.wasted_spend == 0.0


class TestHumanPrice:
    def test_paid_average(self) -> None:
        price = human_price(
            priced_spend=2.75, priced_answers=10, cost_per_label=PRICES, annotators_per_item=3
        )
        assert price.basis == "paid_average"
        assert price.per_answer == pytest.approx(0.275)
        assert price.per_item == pytest.approx(0.825)

    def test_price_list_mean_before_any_priced_answer(self) -> None:
        price = human_price(
            priced_spend=0.0, priced_answers=0, cost_per_label=PRICES, annotators_per_item=2
        )
        assert price == HumanPrice(per_answer=0.275, per_item=0.55, basis="price_list_mean")

    def test_no_prices(self) -> None:
        price = human_price(
            priced_spend=0.0, priced_answers=0, cost_per_label={}, annotators_per_item=2
        )
        assert price == HumanPrice(per_answer=None, per_item=None, basis=None)


class TestLabelsSaved:
    def test_saved(self) -> None:
        saving = labels_saved(
            {"random": 100, "uncertainty": 60, "margin": 60, "entropy": None},
            baseline="random",
            target=0.8,
        )
        # uncertainty and margin tie: the first listed wins.
        assert saving == LabelSaving(
            outcome="saved",
            random_labels=100,
            best_strategy="uncertainty",
            best_labels=60,
            saved=40,
        )
        assert saving.share == 0.4

    def test_not_beaten(self) -> None:
        saving = labels_saved({"random": 50, "margin": 70}, baseline="random", target=0.8)
        assert (saving.outcome, saving.saved, saving.best_strategy) == ("not_beaten", 0, "margin")
        assert saving.share == 0.0

    def test_none_reached(self) -> None:
        saving = labels_saved({"random": 50, "margin": None}, baseline="random", target=0.8)
        assert (saving.outcome, saving.saved, saving.best_labels) == ("none_reached", 0, None)

    @pytest.mark.parametrize(
        ("needed", "target"),
        [({"random": 50, "margin": 20}, None), ({"random": None, "margin": 20}, 0.8), ({}, 0.8)],
    )
    def test_nothing_to_compare(self, needed: dict[str, int | None], target: float | None) -> None:
        saving = labels_saved(needed, baseline="random", target=target)
        assert saving.outcome == "nothing_to_compare"
        assert saving.saved is None
        assert saving.share is None

    def test_other_baseline(self) -> None:
        saving = labels_saved(
            {"random": 10, "uncertainty": 100, "margin": 80}, baseline="uncertainty", target=0.7
        )
        assert (saving.best_strategy, saving.saved) == ("random", 90)
