"""Project statistics: counts, label distribution with imbalance warnings, where the labels
came from with selection-bias warnings, annotators, cost."""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import case
from sqlmodel import Session, col, func, select

from app.ml.cost import price_tiers
from app.models.annotation import Annotation
from app.models.api_key import ApiKey
from app.models.base import AnnotationSource, ItemSource, ItemStatus
from app.models.item import Item
from app.models.project import Project
from app.models.stats import (
    AnnotatorCount,
    CostLine,
    LabelCount,
    LabelSources,
    ProjectStats,
    SourceShare,
)

IMBALANCE_RATIO_LIMIT = 10.0
DOMINANT_SHARE_LIMIT = 0.8

# Selection bias, stated: shares of the resolved labels above which a source is said to
# dominate. Checked only from SOURCE_WARNING_MIN_LABELS resolved labels on (a share of a handful
# says nothing).
SOURCE_WARNING_MIN_LABELS = 10
# Implicit labels (resolved_by user_behavior): noisier than people's, and only about what users
# were shown and chose.
IMPLICIT_SHARE_LIMIT = 0.5
# Items from one source other than manual: what that source selects (what users clicked or
# reported, what production sampled, an old database's backlog) is not the whole population.
ITEM_SOURCE_SHARE_LIMIT = 0.5
# Sources exempt from ITEM_SOURCE_SHARE_LIMIT: manual items are the project's own choice, and
# synthetic ones have their own limit, the project's synthetic_max_ratio.
UNBIASED_ITEM_SOURCES = (ItemSource.manual, ItemSource.synthetic)
RESOLUTIONS = ("review", "consensus", "model", AnnotationSource.user_behavior.value)
# Every answer of this source was paid for, including the ones later replaced.
PAID_SOURCE = AnnotationSource.human.value


def _distribution(counts: dict[str, int], labels: list[str]) -> list[LabelCount]:
    total = sum(counts.values())
    rows = [
        LabelCount(
            label=label,
            count=counts.get(label, 0),
            share=(counts.get(label, 0) / total) if total else 0.0,
        )
        for label in labels
    ]
    return sorted(rows, key=lambda r: (-r.count, r.label))


def imbalance_warnings(counts: dict[str, int], labels: list[str]) -> tuple[float | None, list[str]]:
    """Plain-language warnings when one class dwarfs another or dominates the labels."""
    total = sum(counts.values())
    if total == 0:
        return None, []
    present = {label: n for label, n in counts.items() if n > 0}
    largest_label = max(present, key=lambda label: (present[label], label))
    smallest_label = min(present, key=lambda label: (present[label], label))
    ratio = present[largest_label] / present[smallest_label]
    warnings = []
    if ratio > IMBALANCE_RATIO_LIMIT:
        warnings.append(
            f"Class imbalance: {largest_label!r} has {present[largest_label]} labels, "
            f"{ratio:.1f}x the {present[smallest_label]} of {smallest_label!r}. A model will "
            "under-predict the small class; collect more of it or weight classes when training."
        )
    share = present[largest_label] / total
    if share > DOMINANT_SHARE_LIMIT:
        warnings.append(
            f"Dominant class: {largest_label!r} is {share:.0%} of resolved labels; accuracy will "
            "look high even for a model that always predicts it. Prefer macro-F1."
        )
    unused = sorted(set(labels) - present.keys())
    if unused and total >= 10 * len(labels):
        warnings.append(f"Labels with no resolved items yet: {unused}.")
    return ratio, warnings


def label_sources(rows: Iterable[tuple[str | None, str, int]]) -> LabelSources:
    """Shares of the resolved labels by who resolved them and by item source, from
    (resolved_by, item source, count) rows."""
    by_resolution = {name: 0 for name in RESOLUTIONS}
    by_item_source = {source.value: 0 for source in ItemSource}
    for resolved_by, source, n in rows:
        by_resolution[resolved_by or "none"] = by_resolution.get(resolved_by or "none", 0) + n
        by_item_source[source] = by_item_source.get(source, 0) + n
    total = sum(by_resolution.values())

    def shares(counts: dict[str, int]) -> list[SourceShare]:
        return [
            SourceShare(source=name, count=n, share=(n / total) if total else 0.0)
            for name, n in counts.items()
        ]

    return LabelSources(
        n_resolved=total,
        by_resolution=shares(by_resolution),
        by_item_source=shares(by_item_source),
    )


def source_warnings(sources: LabelSources, *, synthetic_max_ratio: float) -> list[str]:
    """Plain-language warnings when a biased source dominates the resolved labels."""
    total = sources.n_resolved
    if total < SOURCE_WARNING_MIN_LABELS:
        return []
    warnings = []
    implicit = next(s for s in sources.by_resolution if s.source == "user_behavior")
    if implicit.share > IMPLICIT_SHARE_LIMIT:
        warnings.append(
            f"Implicit labels: {implicit.share:.0%} of resolved labels ({implicit.count} of "
            f"{total}) were inferred from user behaviour (clicks), not given by people. They are "
            "noisier and only cover what users were shown and chose; have people label a random "
            "sample before trusting a model's metrics."
        )
    for source in sources.by_item_source:
        if source.source in UNBIASED_ITEM_SOURCES or source.share <= ITEM_SOURCE_SHARE_LIMIT:
            continue
        warnings.append(
            f"Selection bias: {source.share:.0%} of resolved labels ({source.count} of {total}) "
            f"are on {source.source!r} items, which reflect what that source selects rather than "
            "every input the model will see; label items from other sources too."
        )
    synthetic = next(s for s in sources.by_item_source if s.source == ItemSource.synthetic)
    if synthetic_max_ratio < 1 and synthetic.share > synthetic_max_ratio:
        warnings.append(
            f"Synthetic share: {synthetic.share:.0%} of resolved labels ({synthetic.count} of "
            f"{total}) are on synthetic items, above the project's synthetic_max_ratio of "
            f"{synthetic_max_ratio:.0%}; training keeps only up to that ratio, and statistics on "
            "these labels describe LLM-written texts."
        )
    return warnings


def project_stats(session: Session, *, project: Project) -> ProjectStats:
    """Items by status and source, label distributions (resolved and annotated) with their
    warnings, where the labels came from, answers per annotator and what they cost."""
    pid = project.id
    assert pid is not None
    by_status = _items_by(session, pid, Item.status, ItemStatus)
    by_source = _items_by(session, pid, Item.source, ItemSource)
    resolved, annotated = _label_counts(session, pid)
    ratio, warnings = imbalance_warnings(resolved, project.labels)
    sources = label_sources(
        session.exec(
            select(Item.resolved_by, Item.source, func.count())
            .where(col(Item.project_id) == pid, col(Item.resolved_label).is_not(None))
            .group_by(col(Item.resolved_by), col(Item.source))
        )
    )
    warnings += source_warnings(sources, synthetic_max_ratio=project.synthetic_max_ratio)
    answers = _answers_by_annotator(session, pid)
    lines = cost_lines(answers.human_by_tier, cost_per_label=project.cost_per_label)
    unpriced = sum(line.annotations for line in lines if line.unit_cost is None)
    if unpriced:
        warnings.append(
            f"{unpriced} human annotations have no price: give their annotators' keys a tier "
            "that cost_per_label names."
        )
    n_current = answers.n_current
    return ProjectStats(
        project_id=pid,
        n_items=sum(by_status.values()),
        items_by_status=by_status,
        items_by_source=by_source,
        label_distribution=_distribution(resolved, project.labels),
        annotation_label_distribution=_distribution(annotated, project.labels),
        imbalance_ratio=ratio,
        label_sources=sources,
        warnings=warnings,
        n_annotations=n_current,
        annotations_per_annotator=answers.per_annotator,
        abstain_rate=(answers.n_abstain / n_current) if n_current else None,
        cost=lines,
        cost_total=round(sum(line.cost for line in lines), 6),
    )


def _items_by(session: Session, pid: int, column: Any, values: type[StrEnum]) -> dict[str, int]:
    """The project's item count per value of `column`, every value listed (0 when none)."""
    counts = {value.value: 0 for value in values}
    for value, n in session.exec(
        select(column, func.count()).where(col(Item.project_id) == pid).group_by(col(column))
    ):
        counts[value] = n
    return counts


def _label_counts(session: Session, pid: int) -> tuple[dict[str, int], dict[str, int]]:
    """Per label, the items resolved to it and the current answers giving it."""
    resolved = _counts(
        session.exec(
            select(Item.resolved_label, func.count())
            .where(col(Item.project_id) == pid, col(Item.resolved_label).is_not(None))
            .group_by(col(Item.resolved_label))
        )
    )
    annotated = _counts(
        session.exec(
            select(Annotation.label, func.count())
            .where(
                col(Annotation.project_id) == pid,
                col(Annotation.is_current),
                col(Annotation.label).is_not(None),
            )
            .group_by(col(Annotation.label))
        )
    )
    return resolved, annotated


@dataclass
class _Answers:
    per_annotator: list[AnnotatorCount] = field(default_factory=list)
    n_current: int = 0
    n_abstain: int = 0
    human_by_tier: dict[str | None, int] = field(default_factory=lambda: defaultdict(int))


def _answers_by_annotator(session: Session, pid: int) -> _Answers:
    """Each annotator's current, abstaining and replaced answers with their tier, the totals,
    and the human answers per tier (every one paid for, including those later replaced)."""
    tiers = tiers_by_name(session)
    answers = _Answers()
    rows = session.execute(
        sa.select(
            col(Annotation.annotator),
            func.sum(case((col(Annotation.is_current), 1), else_=0)),
            func.sum(case((col(Annotation.is_current) & col(Annotation.abstain), 1), else_=0)),
            func.sum(case((col(Annotation.is_current), 0), else_=1)),
            func.sum(case((col(Annotation.source) == PAID_SOURCE, 1), else_=0)),
        )
        .where(col(Annotation.project_id) == pid)
        .group_by(col(Annotation.annotator))
        .order_by(col(Annotation.annotator))
    )
    for annotator, current, abstains, replaced, human in rows:
        tier = tiers.get(annotator)
        answers.per_annotator.append(
            AnnotatorCount(
                annotator=annotator,
                tier=tier,
                annotations=current,
                abstains=abstains,
                replaced=replaced,
            )
        )
        answers.n_current += current
        answers.n_abstain += abstains
        answers.human_by_tier[tier] += human
    return answers


def _counts(rows: Iterable[tuple[str | None, int]]) -> dict[str, int]:
    return {label: n for label, n in rows if label is not None}


def cost_lines(
    answers_by_tier: Mapping[str | None, int], *, cost_per_label: Mapping[str, float]
) -> list[CostLine]:
    """Paid answers priced per tier (`ml.cost.price_tiers`: by name, keys without a tier last).
    An unpriced tier has unit_cost None and cost 0; callers must say so."""
    return [
        CostLine(
            tier=line.tier, annotations=line.answers, unit_cost=line.unit_price, cost=line.cost
        )
        for line in price_tiers(answers_by_tier, cost_per_label=cost_per_label)
    ]


def tiers_by_name(session: Session) -> dict[str, str | None]:
    """The tier of each key name; a live key wins over revoked ones, then the newest."""
    tiers: dict[str, str | None] = {}
    rows = session.exec(
        select(ApiKey.name, ApiKey.tier).order_by(col(ApiKey.revoked_at).is_(None), col(ApiKey.id))
    )
    for name, tier in rows:
        tiers[name] = tier
    return tiers
