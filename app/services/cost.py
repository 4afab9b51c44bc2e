"""The labeling-cost report: what people were paid per tier, what one usable label cost, where
the answers went, and what auto-accepts and active learning saved."""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from app.ml import cost as pricing
from app.models.annotation import Annotation
from app.models.base import HUMAN_RESOLUTIONS, ItemStatus
from app.models.cost import (
    ActiveLearningSavings,
    AnswerBreakdown,
    AnswerSpend,
    AutoAcceptSavings,
    CostReport,
    TierSpend,
)
from app.models.item import Item
from app.models.job import Job
from app.models.project import Project
from app.services import active_learning
from app.services.stats import PAID_SOURCE, tiers_by_name

MODEL_RESOLUTION = "model"
# Annotator names quoted in the unpriced warning; the rest are counted.
NAMES_SHOWN = 5


def answer_category(
    *, abstain: bool, is_current: bool, resolved_by: str | None, status: str
) -> str:
    """Where one paid answer went (one of `ml.cost.CATEGORIES`); the first rule that applies
    wins."""
    if abstain:
        return "abstains"
    if not is_current:
        return "replaced"
    if resolved_by in HUMAN_RESOLUTIONS:
        return "useful"
    if status == ItemStatus.needs_review:
        return "disagreement"
    return "unresolved"


def cost_report(session: Session, *, project: Project) -> CostReport:
    """The reads happen here, the arithmetic in `ml.cost`, so it is tested on plain counts."""
    pid = project.id
    assert pid is not None
    prices = project.cost_per_label
    tiers = tiers_by_name(session)
    tally = pricing.tally_answers(
        _paid_answers(session, project_id=pid), tiers=tiers, cost_per_label=prices
    )
    tier_prices = pricing.price_tiers(tally.by_tier, cost_per_label=prices)
    totals = pricing.spend_totals(tier_prices)
    resolved = _resolved_items(session, project_id=pid)
    price = pricing.human_price(
        priced_spend=tally.priced_spend,
        priced_answers=totals.priced,
        cost_per_label=prices,
        annotators_per_item=project.annotators_per_item,
    )
    unpaid_usable = _usable_without_paid_answers(session, project_id=pid) if resolved.usable else 0
    return CostReport(
        project_id=pid,
        annotators_per_item=project.annotators_per_item,
        tiers=[
            TierSpend(tier=t.tier, answers=t.answers, unit_price=t.unit_price, spend=t.spend)
            for t in tier_prices
        ],
        paid_answers=totals.paid,
        priced_answers=totals.priced,
        unpriced_answers=totals.unpriced,
        total_spend=totals.total_spend,
        usable_labels=resolved.usable,
        cost_per_usable_label=pricing.money(totals.total_spend / resolved.usable)
        if resolved.usable
        else None,
        answers=_answer_breakdown(tally),
        wasted_answers=tally.wasted_answers,
        wasted_spend=tally.wasted_spend,
        human_price_per_answer=_money_or_none(price.per_answer),
        human_price_per_item=_money_or_none(price.per_item),
        human_price_basis=price.basis,
        auto_accept=AutoAcceptSavings(
            items=resolved.auto_accepted,
            in_human_review=resolved.auto_in_review,
            savings=pricing.priced(resolved.auto_accepted, price.per_item),
        ),
        active_learning=_active_learning_savings(session, project=project, per_item=price.per_item),
        warnings=_warnings(
            project,
            tally=tally,
            totals=totals,
            price=price,
            usable=resolved.usable,
            unpaid_usable=unpaid_usable,
        ),
    )


def _answer_breakdown(tally: pricing.AnswerTally) -> AnswerBreakdown:
    return AnswerBreakdown(
        **{
            name: AnswerSpend(
                answers=tally.answers[name], spend=pricing.money(tally.spend_on(name))
            )
            for name in pricing.CATEGORIES
        }
    )


def _money_or_none(amount: float | None) -> float | None:
    return pricing.money(amount) if amount is not None else None


def _paid_answers(session: Session, *, project_id: int) -> Counter[tuple[str, str]]:
    """(annotator, category) -> paid answers, from one grouped read of plain columns."""
    answered: Counter[tuple[str, str]] = Counter()
    for annotator, abstain, is_current, resolved_by, status, n in session.execute(
        sa.select(
            col(Annotation.annotator),
            col(Annotation.abstain),
            col(Annotation.is_current),
            col(Item.resolved_by),
            col(Item.status),
            func.count(),
        )
        .join(Item, col(Item.id) == col(Annotation.item_id))
        .where(col(Annotation.project_id) == project_id, col(Annotation.source) == PAID_SOURCE)
        .group_by(
            col(Annotation.annotator),
            col(Annotation.abstain),
            col(Annotation.is_current),
            col(Item.resolved_by),
            col(Item.status),
        )
    ):
        category = answer_category(
            abstain=bool(abstain),
            is_current=bool(is_current),
            resolved_by=resolved_by,
            status=status,
        )
        answered[annotator, category] += n
    return answered


@dataclass(frozen=True)
class _ResolvedItems:
    usable: int
    """Items whose label people decided (review or consensus)."""
    auto_accepted: int
    """Items labeled by an auto-accepted prediction that no human is asked to answer."""
    auto_in_review: int
    """Items with an auto-accepted label that humans are answering anyway."""


def _resolved_items(session: Session, *, project_id: int) -> _ResolvedItems:
    resolutions = _items_by_resolution(session, project_id=project_id)
    auto_accepted = resolutions.get((MODEL_RESOLUTION, ItemStatus.labeled.value), 0)
    return _ResolvedItems(
        usable=sum(n for (by, _), n in resolutions.items() if by in HUMAN_RESOLUTIONS),
        auto_accepted=auto_accepted,
        auto_in_review=sum(n for (by, _), n in resolutions.items() if by == MODEL_RESOLUTION)
        - auto_accepted,
    )


def _warnings(
    project: Project,
    *,
    tally: pricing.AnswerTally,
    totals: pricing.SpendTotals,
    price: pricing.HumanPrice,
    usable: int,
    unpaid_usable: int,
) -> list[str]:
    """What makes the amounts lower bounds or estimates, in plain language."""
    warnings: list[str] = []
    if totals.unpriced:
        warnings.append(_unpriced_warning(totals.unpriced, totals.paid, tally.unpriced_names))
    if price.basis == "price_list_mean":
        assert price.per_answer is not None
        warnings.append(
            "No human answer is priced yet, so the savings use the mean of cost_per_label "
            f"({pricing.money(price.per_answer)} per answer) x annotators_per_item "
            f"({project.annotators_per_item}) as the price of an item labeled by people."
        )
    elif price.basis is None:
        warnings.append(
            "The project has no cost_per_label: nothing is priced, so there is no spend and no "
            "savings amount. Set a price per workforce tier (PATCH the project) and give the "
            "annotators' keys that tier."
        )
    if unpaid_usable:
        warnings.append(
            f"{unpaid_usable} of the {usable} usable labels have no paid human answer (settled "
            "by imported answers or by a review alone); cost_per_usable_label spreads the spend "
            "over them too."
        )
    return warnings


def _items_by_resolution(session: Session, *, project_id: int) -> dict[tuple[str, str], int]:
    """(resolved_by, status) -> items, for the items that have a resolved label."""
    rows = session.execute(
        sa.select(col(Item.resolved_by), col(Item.status), func.count())
        .where(col(Item.project_id) == project_id, col(Item.resolved_by).is_not(None))
        .group_by(col(Item.resolved_by), col(Item.status))
    )
    return {(str(by), str(status)): int(n) for by, status, n in rows}


def _usable_without_paid_answers(session: Session, *, project_id: int) -> int:
    paid = (
        sa.select(col(Annotation.id))
        .where(col(Annotation.item_id) == col(Item.id), col(Annotation.source) == PAID_SOURCE)
        .exists()
    )
    count = session.exec(
        select(func.count())
        .select_from(Item)
        .where(
            col(Item.project_id) == project_id,
            col(Item.resolved_by).in_(HUMAN_RESOLUTIONS),
            ~paid,
        )
    ).one()
    return int(count)


def _unpriced_warning(unpriced: int, paid: int, names: Mapping[str | None, set[str]]) -> str:
    reasons = []
    tierless = sorted(names.get(None, set()))
    if tierless:
        shown = ", ".join(tierless[:NAMES_SHOWN])
        more = f" and {len(tierless) - NAMES_SHOWN} more" if len(tierless) > NAMES_SHOWN else ""
        reasons.append(f"annotators whose key has no tier ({shown}{more})")
    unnamed = sorted(tier for tier in names if tier is not None)
    if unnamed:
        reasons.append(f"tiers cost_per_label does not price ({', '.join(unnamed)})")
    return (
        f"{unpriced} of the {paid} paid human answers have no price: they come from "
        f"{' and '.join(reasons)}. They are left out of total_spend, cost_per_usable_label "
        "and the average price, which are lower bounds until these keys get a tier that "
        "cost_per_label names."
    )


def _active_learning_savings(
    session: Session, *, project: Project, per_item: float | None
) -> ActiveLearningSavings:
    job = active_learning.latest_simulation_job(session, project=project)
    if job is None:
        return ActiveLearningSavings(
            job_id=None,
            finished_at=None,
            at_labels=None,
            target_accuracy=None,
            best_strategy=None,
            random_labels=None,
            best_labels=None,
            labels_saved=None,
            saved_share=None,
            savings=None,
            note="No active-learning simulation has run for this project: POST "
            f"/v1/projects/{project.id}/active-learning/simulations replays its labels and "
            "measures how many a strategy saves against random.",
        )
    return _simulation_savings(job, per_item=per_item)


def _simulation_savings(job: Job, *, per_item: float | None) -> ActiveLearningSavings:
    """The saving a simulation job measured (its result as stored), priced per item."""
    result: dict[str, Any] = job.result or {}
    target = result.get("target_accuracy")
    at_labels = result.get("at_labels")
    saving = pricing.labels_saved(
        result.get("labels_needed") or {},
        baseline=str(result.get("baseline", active_learning.BASELINE)),
        target=target,
    )
    where = f"In the latest simulation (job {job.id}, {result.get('n_items')} labeled items)"
    return ActiveLearningSavings(
        job_id=job.id,
        finished_at=job.finished_at,
        at_labels=at_labels,
        target_accuracy=target,
        best_strategy=saving.best_strategy,
        random_labels=saving.random_labels,
        best_labels=saving.best_labels,
        labels_saved=saving.saved,
        saved_share=saving.share,
        savings=pricing.priced(saving.saved, per_item),
        note=_saving_note(
            saving, where=where, target=target, at_labels=at_labels, per_item=per_item
        ),
    )


def _saving_note(
    saving: pricing.LabelSaving,
    *,
    where: str,
    target: float | None,
    at_labels: int | None,
    per_item: float | None,
) -> str:
    if saving.outcome == "nothing_to_compare":
        return f"{where} random had no accuracy to compare against; nothing to price."
    if saving.outcome == "none_reached":
        return (
            f"{where} no strategy reached random's accuracy at {at_labels} labels "
            f"({target:.3f}) within its budget: active learning saved nothing."
        )
    if saving.outcome == "not_beaten":
        return (
            f"{where} no strategy beat random: the best ({saving.best_strategy}) needed "
            f"{saving.best_labels} labels to reach random's accuracy ({target:.3f}), random "
            f"{saving.random_labels}."
        )
    note = (
        f"{where} {saving.best_strategy} reached random's accuracy ({target:.3f}) with "
        f"{saving.best_labels} labels instead of {saving.random_labels}: {saving.saved} labels "
        "saved"
    )
    return note + (
        f", priced at {pricing.money(per_item)} per item labeled by people."
        if per_item is not None
        else "; the project has no prices, so the saving has no amount."
    )
