"""The labeling-cost report: spend per workforce tier, cost per usable label, waste, and what
auto-accepts and active learning saved. Amounts are in the unit of the project's
cost_per_label (the project stores no currency) and rounded to 6 decimals."""

from datetime import datetime

from pydantic import Field

from app.ml.cost import PriceBasis
from app.models.base import ResponseModel


class TierSpend(ResponseModel):
    tier: str | None = Field(
        description="The workforce tier of the annotators' keys; null for answers given in "
        "names whose key has no tier (or that have no key, e.g. historical imports as human)."
    )
    answers: int = Field(
        description="Human answers paid for: every annotation with source human, abstentions "
        "and answers later replaced included (each was work done)."
    )
    unit_price: float | None = Field(
        description="The project's cost_per_label for this tier; null when the tier is null or "
        "cost_per_label does not name it (unpriced)."
    )
    spend: float | None = Field(
        description="answers x unit_price; null when unpriced (such answers are not in "
        "total_spend, and a warning says so)."
    )


class AnswerSpend(ResponseModel):
    answers: int = Field(description="Paid human answers in this category, priced or not.")
    spend: float = Field(description="What the priced ones among them cost.")


class AnswerBreakdown(ResponseModel):
    """Every paid human answer falls in exactly one category, checked in this order."""

    abstains: AnswerSpend = Field(
        description='"I don\'t know" answers (abstain: true), current or replaced: they never '
        "carry a label."
    )
    replaced: AnswerSpend = Field(
        description="Labels their annotator later changed (history, is_current false)."
    )
    useful: AnswerSpend = Field(
        description="Current labels on usable items (resolved_by review or consensus)."
    )
    disagreement: AnswerSpend = Field(
        description="Current labels on items that have all their answers but no winning "
        'label (a tie, a plurality, or "I don\'t know"s leaving too few labels): status '
        "needs_review, waiting for a reviewer. A review makes them useful."
    )
    unresolved: AnswerSpend = Field(
        description="Current labels on items still waiting for more answers (unlabeled or "
        "in_progress, even if a model's or an implicit label stands in meanwhile). Not waste "
        "yet: they may still become useful."
    )


class AutoAcceptSavings(ResponseModel):
    items: int = Field(
        description="Items whose label is an auto-accepted model prediction (resolved_by "
        "model) and that no human is asked to answer (status labeled)."
    )
    in_human_review: int = Field(
        description="Items with an auto-accepted label that humans are answering anyway (an "
        "audit, or answers still coming in): not counted in items, their answers are spend."
    )
    savings: float | None = Field(
        description="items x human_price_per_item: what people would have been paid to label "
        "them. Null when the project has no prices at all."
    )


class ActiveLearningSavings(ResponseModel):
    job_id: int | None = Field(
        description="The latest succeeded simulate_active_learning job (POST "
        ".../active-learning/simulations); null when none has run."
    )
    finished_at: datetime | None
    at_labels: int | None = Field(
        description="The simulation compared strategies with random's accuracy at this many labels."
    )
    target_accuracy: float | None = Field(
        description="Random's accuracy at at_labels: the accuracy every strategy had to reach."
    )
    best_strategy: str | None = Field(
        description="The strategy that reached the target with the fewest labels."
    )
    random_labels: int | None = Field(
        description="Labels random needed to reach the target (the simulation's "
        "labels_needed.random). It can be fewer than at_labels when random got there earlier; "
        "the saving counts from here, so it may be smaller than the simulation summary's."
    )
    best_labels: int | None = Field(description="Labels the best strategy needed.")
    labels_saved: int | None = Field(
        description="random_labels - best_labels, at the simulation's scale (its n_items "
        "labeled items); 0 when no strategy beat random, null without a simulation."
    )
    saved_share: float | None = Field(
        description="labels_saved / random_labels: the share of labeling a strategy saves."
    )
    savings: float | None = Field(
        description="labels_saved x human_price_per_item (one simulated label is one item's "
        "resolved label). Null without a simulation or without prices."
    )
    note: str = Field(
        description="One sentence saying where the figure comes from, or why there is none."
    )


class CostReport(ResponseModel):
    project_id: int
    annotators_per_item: int = Field(description="The project's answers per item.")
    tiers: list[TierSpend] = Field(
        description="Paid human answers per workforce tier (by name, keys without a tier last)."
    )
    paid_answers: int = Field(description="All human answers (sum of tiers[].answers).")
    priced_answers: int = Field(description="Paid answers whose tier has a price.")
    unpriced_answers: int = Field(
        description="Paid answers by keys without a tier, or with a tier cost_per_label does "
        "not name. They are left out of every amount, which are then lower bounds."
    )
    total_spend: float = Field(description="Sum of tiers[].spend (priced answers only).")
    usable_labels: int = Field(
        description="Items whose resolved label people decided (resolved_by review or "
        "consensus): not auto-accepts, not implicit labels, not items still unsettled."
    )
    cost_per_usable_label: float | None = Field(
        description="total_spend / usable_labels: what one usable label cost, abstentions, "
        "replaced answers and disagreements included. Null when there is no usable label."
    )
    answers: AnswerBreakdown = Field(description="Where the paid answers went.")
    wasted_answers: int = Field(
        description="Paid answers that produced no usable label: answers.abstains + "
        "answers.replaced + answers.disagreement (answers.unresolved are not counted: those "
        "items are still being labeled)."
    )
    wasted_spend: float = Field(description="What the priced ones among wasted_answers cost.")
    human_price_per_answer: float | None = Field(
        description="The average price of one human answer: total_spend / priced_answers, or, "
        "before any answer is priced, the mean of cost_per_label. Null without any price."
    )
    human_price_per_item: float | None = Field(
        description="human_price_per_answer x annotators_per_item: what people cost to label "
        "one item. Prices the savings below."
    )
    human_price_basis: PriceBasis | None = Field(
        description="paid_average: from the answers paid so far; price_list_mean: no answer is "
        "priced yet, so the mean of cost_per_label (a warning says so); null: no prices."
    )
    auto_accept: AutoAcceptSavings
    active_learning: ActiveLearningSavings
    warnings: list[str] = Field(
        description="Plain-language warnings: unpriced answers, a price estimated from the "
        "price list, usable labels no paid answer produced."
    )
