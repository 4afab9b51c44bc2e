"""The labeling-cost report: what people were paid per tier, what one usable label cost, where
the answers went, and what auto-accepts and active learning saved."""

from collections import Counter, defaultdict
from collections.abc import Mapping
from statistics import fmean
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from app.models.annotation import Annotation
from app.models.base import HUMAN_RESOLUTIONS, ItemStatus
from app.models.cost import (
    ActiveLearningSavings,
    AnswerBreakdown,
    AnswerSpend,
    AutoAcceptSavings,
    CostReport,
    PriceBasis,
    TierSpend,
)
from app.models.item import Item
from app.models.project import Project
from app.services import active_learning
from app.services.stats import PAID_SOURCE, cost_lines, tiers_by_name, unit_price

MODEL_RESOLUTION = "model"
CATEGORIES = ("abstains", "replaced", "useful", "disagreement", "unresolved")
WASTE = ("abstains", "replaced", "disagreement")
# Annotator names quoted in the unpriced warning; the rest are counted.
NAMES_SHOWN = 5


def _money(amount: float) -> float:
    return round(amount, 6)


def answer_category(
    *, abstain: bool, is_current: bool, resolved_by: str | None, status: str
) -> str:
    """Where one paid answer went; the first rule that applies wins."""
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
    pid = project.id
    assert pid is not None
    prices = project.cost_per_label
    tiers = tiers_by_name(session)

    # (annotator, category) -> paid answers, from one grouped read of plain columns.
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
        .where(col(Annotation.project_id) == pid, col(Annotation.source) == PAID_SOURCE)
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

    by_tier: dict[str | None, int] = defaultdict(int)
    category_answers: Counter[str] = Counter()
    category_spend: dict[str, float] = defaultdict(float)
    unpriced_names: dict[str | None, set[str]] = defaultdict(set)
    for (annotator, category), n in answered.items():
        tier = tiers.get(annotator)
        by_tier[tier] += n
        category_answers[category] += n
        unit = unit_price(prices, tier)
        if unit is None:
            unpriced_names[tier].add(annotator)
        else:
            category_spend[category] += unit * n

    lines = [
        TierSpend(
            tier=line.tier,
            answers=line.annotations,
            unit_price=line.unit_cost,
            spend=line.cost if line.unit_cost is not None else None,
        )
        for line in cost_lines(by_tier, cost_per_label=prices)
    ]
    paid = sum(line.answers for line in lines)
    priced = sum(line.answers for line in lines if line.unit_price is not None)
    unpriced = paid - priced
    spend = sum(category_spend.values())
    total_spend = _money(sum(line.spend or 0.0 for line in lines))

    resolutions = _items_by_resolution(session, project_id=pid)
    usable = sum(n for (by, _), n in resolutions.items() if by in HUMAN_RESOLUTIONS)
    auto_accepted = resolutions.get((MODEL_RESOLUTION, ItemStatus.labeled.value), 0)
    auto_in_review = sum(n for (by, _), n in resolutions.items() if by == MODEL_RESOLUTION)
    auto_in_review -= auto_accepted

    warnings: list[str] = []
    if unpriced:
        warnings.append(_unpriced_warning(unpriced, paid, unpriced_names))

    per_answer: float | None = None
    basis: PriceBasis | None = None
    if priced:
        per_answer, basis = spend / priced, "paid_average"
    elif prices:
        per_answer, basis = fmean(prices.values()), "price_list_mean"
        warnings.append(
            "No human answer is priced yet, so the savings use the mean of cost_per_label "
            f"({_money(per_answer)} per answer) x annotators_per_item "
            f"({project.annotators_per_item}) as the price of an item labeled by people."
        )
    else:
        warnings.append(
            "The project has no cost_per_label: nothing is priced, so there is no spend and no "
            "savings amount. Set a price per workforce tier (PATCH the project) and give the "
            "annotators' keys that tier."
        )
    per_item = per_answer * project.annotators_per_item if per_answer is not None else None

    unpaid_usable = _usable_without_paid_answers(session, project_id=pid) if usable else 0
    if unpaid_usable:
        warnings.append(
            f"{unpaid_usable} of the {usable} usable labels have no paid human answer (settled "
            "by imported answers or by a review alone); cost_per_usable_label spreads the spend "
            "over them too."
        )

    breakdown = {
        name: AnswerSpend(answers=category_answers[name], spend=_money(category_spend[name]))
        for name in CATEGORIES
    }
    return CostReport(
        project_id=pid,
        annotators_per_item=project.annotators_per_item,
        tiers=lines,
        paid_answers=paid,
        priced_answers=priced,
        unpriced_answers=unpriced,
        total_spend=total_spend,
        usable_labels=usable,
        cost_per_usable_label=_money(total_spend / usable) if usable else None,
        answers=AnswerBreakdown(**breakdown),
        wasted_answers=sum(category_answers[name] for name in WASTE),
        wasted_spend=_money(sum(category_spend[name] for name in WASTE)),
        human_price_per_answer=_money(per_answer) if per_answer is not None else None,
        human_price_per_item=_money(per_item) if per_item is not None else None,
        human_price_basis=basis,
        auto_accept=AutoAcceptSavings(
            items=auto_accepted,
            in_human_review=auto_in_review,
            savings=_money(auto_accepted * per_item) if per_item is not None else None,
        ),
        active_learning=_active_learning_savings(session, project=project, per_item=per_item),
        warnings=warnings,
    )


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
    result: dict[str, Any] = job.result or {}
    baseline = str(result.get("baseline", active_learning.BASELINE))
    needed: dict[str, int | None] = result.get("labels_needed") or {}
    target = result.get("target_accuracy")
    at_labels = result.get("at_labels")
    random_labels = needed.get(baseline)
    reached = [(n, s) for s, n in needed.items() if s != baseline and n is not None]
    best_labels, best = min(reached, key=lambda r: r[0]) if reached else (None, None)
    where = f"In the latest simulation (job {job.id}, {result.get('n_items')} labeled items)"

    saved: int | None = None
    if target is None or random_labels is None:
        note = f"{where} random had no accuracy to compare against; nothing to price."
    elif best_labels is None:
        saved = 0
        note = (
            f"{where} no strategy reached random's accuracy at {at_labels} labels "
            f"({target:.3f}) within its budget: active learning saved nothing."
        )
    elif best_labels >= random_labels:
        saved = 0
        note = (
            f"{where} no strategy beat random: the best ({best}) needed {best_labels} labels "
            f"to reach random's accuracy ({target:.3f}), random {random_labels}."
        )
    else:
        saved = random_labels - best_labels
        note = (
            f"{where} {best} reached random's accuracy ({target:.3f}) with {best_labels} "
            f"labels instead of {random_labels}: {saved} labels saved"
        )
        note += (
            f", priced at {_money(per_item)} per item labeled by people."
            if per_item is not None
            else "; the project has no prices, so the saving has no amount."
        )
    return ActiveLearningSavings(
        job_id=job.id,
        finished_at=job.finished_at,
        at_labels=at_labels,
        target_accuracy=target,
        best_strategy=best,
        random_labels=random_labels,
        best_labels=best_labels,
        labels_saved=saved,
        saved_share=(saved / random_labels) if saved is not None and random_labels else None,
        savings=_money(saved * per_item) if saved is not None and per_item is not None else None,
        note=note,
    )
