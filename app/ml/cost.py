"""The labeling-cost arithmetic, on counts and prices already read: what each workforce tier's
answers cost, where the paid answers went, the price of one item labeled by people, and the
labels an active-learning strategy saved against random.

Amounts are in the unit of the price list and rounded by `money` (6 decimals) where they are
reported; sums are taken over the unrounded amounts.
"""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import fmean
from typing import Literal

from typing_extensions import TypeAliasType

# Where a paid answer went (the order answers are checked in, and reported in).
CATEGORIES = ("abstains", "replaced", "useful", "disagreement", "unresolved")
# The categories that produced no usable label.
WASTE = ("abstains", "replaced", "disagreement")

PriceBasis = TypeAliasType("PriceBasis", Literal["paid_average", "price_list_mean"])
SavingOutcome = Literal["nothing_to_compare", "none_reached", "not_beaten", "saved"]


def money(amount: float) -> float:
    return round(amount, 6)


def priced(count: int | None, unit: float | None) -> float | None:
    """count x unit as money; None when either is missing."""
    return money(count * unit) if count is not None and unit is not None else None


def unit_price(cost_per_label: Mapping[str, float], tier: str | None) -> float | None:
    """The price of one answer by an annotator of this tier; None when it has no price."""
    return cost_per_label.get(tier) if tier is not None else None


@dataclass(frozen=True)
class TierPrice:
    tier: str | None
    answers: int
    unit_price: float | None
    cost: float
    """answers x unit_price as money; 0 when unpriced."""

    @property
    def spend(self) -> float | None:
        """cost, or None when the tier has no price (unpriced answers cost unknown, not 0)."""
        return self.cost if self.unit_price is not None else None


def price_tiers(
    answers_by_tier: Mapping[str | None, int], *, cost_per_label: Mapping[str, float]
) -> list[TierPrice]:
    """Paid answers priced per tier, by tier name, answers of keys without a tier last."""
    lines = []
    for tier, n in sorted(answers_by_tier.items(), key=lambda kv: (kv[0] is None, kv[0] or "")):
        unit = unit_price(cost_per_label, tier)
        lines.append(
            TierPrice(tier=tier, answers=n, unit_price=unit, cost=money((unit or 0.0) * n))
        )
    return lines


@dataclass(frozen=True)
class SpendTotals:
    paid: int
    priced: int
    unpriced: int
    total_spend: float
    """The priced tiers' cost, as money."""


def spend_totals(tiers: list[TierPrice]) -> SpendTotals:
    paid = sum(line.answers for line in tiers)
    priced = sum(line.answers for line in tiers if line.unit_price is not None)
    return SpendTotals(
        paid=paid,
        priced=priced,
        unpriced=paid - priced,
        total_spend=money(sum(line.spend or 0.0 for line in tiers)),
    )


@dataclass(frozen=True, eq=False)
class AnswerTally:
    """Paid answers counted per tier and per category, and what the priced ones cost."""

    by_tier: dict[str | None, int]
    answers: Counter[str]
    """Paid answers per category, priced or not."""
    spend: dict[str, float]
    """The priced answers' cost per category (unrounded), in the order categories were met."""
    unpriced_names: dict[str | None, set[str]]
    """The annotators with unpriced answers, by tier (None: their key has no tier)."""

    def spend_on(self, category: str) -> float:
        return self.spend.get(category, 0.0)

    @property
    def priced_spend(self) -> float:
        return sum(self.spend.values())

    @property
    def wasted_answers(self) -> int:
        return sum(self.answers[name] for name in WASTE)

    @property
    def wasted_spend(self) -> float:
        return money(sum(self.spend_on(name) for name in WASTE))


def tally_answers(
    answered: Mapping[tuple[str, str], int],
    *,
    tiers: Mapping[str, str | None],
    cost_per_label: Mapping[str, float],
) -> AnswerTally:
    """answered maps (annotator, category) to paid answers; tiers an annotator name to the
    tier of their key (absent or None: no tier, so unpriced)."""
    by_tier: dict[str | None, int] = {}
    answers: Counter[str] = Counter()
    spend: dict[str, float] = {}
    unpriced_names: dict[str | None, set[str]] = {}
    for (annotator, category), n in answered.items():
        tier = tiers.get(annotator)
        by_tier[tier] = by_tier.get(tier, 0) + n
        answers[category] += n
        unit = unit_price(cost_per_label, tier)
        if unit is None:
            unpriced_names.setdefault(tier, set()).add(annotator)
        else:
            spend[category] = spend.get(category, 0.0) + unit * n
    return AnswerTally(by_tier=by_tier, answers=answers, spend=spend, unpriced_names=unpriced_names)


@dataclass(frozen=True)
class HumanPrice:
    """What people cost: one answer, and one item (annotators_per_item answers)."""

    per_answer: float | None
    per_item: float | None
    basis: PriceBasis | None
    """paid_average: the priced answers' average; price_list_mean: nothing is priced yet, so
    the mean of the price list; None: no prices at all."""


def human_price(
    *,
    priced_spend: float,
    priced_answers: int,
    cost_per_label: Mapping[str, float],
    annotators_per_item: int,
) -> HumanPrice:
    per_answer: float
    basis: PriceBasis
    if priced_answers:
        per_answer, basis = priced_spend / priced_answers, "paid_average"
    elif cost_per_label:
        per_answer, basis = fmean(cost_per_label.values()), "price_list_mean"
    else:
        return HumanPrice(per_answer=None, per_item=None, basis=None)
    return HumanPrice(per_answer=per_answer, per_item=per_answer * annotators_per_item, basis=basis)


@dataclass(frozen=True)
class LabelSaving:
    """How many labels the best strategy of an active-learning replay saved against the
    baseline (random), to reach the accuracy random had."""

    outcome: SavingOutcome
    """nothing_to_compare: random had no accuracy (or needed no count); none_reached: no
    strategy reached it; not_beaten: none needed fewer labels; saved."""
    random_labels: int | None
    best_strategy: str | None
    best_labels: int | None
    saved: int | None
    """random_labels - best_labels; 0 unless saved; None when there is nothing to compare."""

    @property
    def share(self) -> float | None:
        """saved / random_labels."""
        if self.saved is None or not self.random_labels:
            return None
        return self.saved / self.random_labels


def labels_saved(
    labels_needed: Mapping[str, int | None], *, baseline: str, target: float | None
) -> LabelSaving:
    """labels_needed maps each strategy (the baseline included) to the labels it needed to reach
    the target accuracy, None when it never did. The best strategy needed the fewest (the first
    listed on a tie)."""
    random_labels = labels_needed.get(baseline)
    reached = [(n, s) for s, n in labels_needed.items() if s != baseline and n is not None]
    best_labels, best = min(reached, key=lambda r: r[0]) if reached else (None, None)
    outcome: SavingOutcome
    saved: int | None = 0
    if target is None or random_labels is None:
        outcome, saved = "nothing_to_compare", None
    elif best_labels is None:
        outcome = "none_reached"
    elif best_labels >= random_labels:
        outcome = "not_beaten"
    else:
        outcome, saved = "saved", random_labels - best_labels
    return LabelSaving(
        outcome=outcome,
        random_labels=random_labels,
        best_strategy=best,
        best_labels=best_labels,
        saved=saved,
    )
