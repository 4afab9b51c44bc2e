"""Derive an item's status and resolved label from its current annotations.

Human answers come first: until the agreement work brings better consensus, the resolved
label is a strict majority (more than half) of the non-abstaining human votes. Without one
(a tie, or a plurality such as 2 of 4) the item goes to needs_review rather than silently
picking the first label; so does an item whose allotted annotators have all answered with
too few labels among them ("I don't know"). A model's auto-accepted prelabel resolves an item
only while no human has settled it, and never counts as a vote.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import NamedTuple

from sqlmodel import Session, col, select

from app.models.annotation import Annotation
from app.models.base import AnnotationSource, ItemStatus, utcnow
from app.models.item import Item
from app.models.project import Project

CHUNK = 500
# Reasons that keep an item in the review queue until a human answers it.
REVIEW_REASONS = {"low_confidence", "audit"}


class Resolution(NamedTuple):
    status: ItemStatus
    label: str | None
    resolved_by: str | None


def derive(
    votes: Iterable[tuple[str | None, bool]],
    *,
    annotators_per_item: int,
    model_label: str | None = None,
    review_reason: str | None = None,
) -> Resolution:
    """Status and resolved label from the (label, abstain) pairs of current human annotations,
    the current auto-accepted model label, if any, and why the item was sent to review."""
    answers = list(votes)
    labels = Counter(label for label, abstain in answers if not abstain and label is not None)
    if answers and sum(labels.values()) >= annotators_per_item:
        label, top = labels.most_common(1)[0]
        if 2 * top <= labels.total():
            return Resolution(ItemStatus.needs_review, None, None)
        return Resolution(ItemStatus.labeled, label, "consensus")
    if answers and len(answers) >= annotators_per_item:
        # Everyone it was handed to has answered, but "I don't know"s leave too few labels:
        # batches will not hand it out again, so a reviewer must decide.
        if model_label is not None:
            return Resolution(ItemStatus.needs_review, model_label, "model")
        return Resolution(ItemStatus.needs_review, None, None)
    waiting_for_review = review_reason in REVIEW_REASONS
    if waiting_for_review and not labels:
        status = ItemStatus.needs_review  # only "I don't know" so far: still needs a reviewer
    elif answers:
        status = ItemStatus.in_progress
    elif model_label is not None:
        status = ItemStatus.labeled
    else:
        status = ItemStatus.unlabeled
    if model_label is not None:
        return Resolution(status, model_label, "model")
    return Resolution(status, None, None)


def refresh_items(session: Session, *, project: Project, item_ids: Iterable[int]) -> None:
    """Recompute status and resolved label of the given items (flushes, never commits)."""
    ids = sorted(set(item_ids))
    now = utcnow()
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        votes: dict[int, list[tuple[str | None, bool]]] = defaultdict(list)
        model_labels: dict[int, str | None] = {}
        rows = session.exec(
            select(
                Annotation.item_id, Annotation.label, Annotation.abstain, Annotation.source
            ).where(col(Annotation.item_id).in_(chunk), col(Annotation.is_current))
        )
        for item_id, label, abstain, source in rows:
            if source == AnnotationSource.model:
                model_labels[item_id] = label
            else:
                votes[item_id].append((label, abstain))
        items = session.exec(select(Item).where(col(Item.id).in_(chunk)))
        for item in items:
            assert item.id is not None
            resolution = derive(
                votes[item.id],
                annotators_per_item=project.annotators_per_item,
                model_label=model_labels.get(item.id),
                review_reason=item.review_reason,
            )
            current = (item.status, item.resolved_label, item.resolved_by)
            if current != (resolution.status, resolution.label, resolution.resolved_by):
                item.status, item.resolved_label = resolution.status, resolution.label
                item.resolved_by, item.updated_at = resolution.resolved_by, now
                session.add(item)
    session.flush()


def refresh_project(session: Session, *, project: Project) -> None:
    """Recompute every annotated item of a project (after annotators_per_item changes)."""
    annotated = session.exec(
        select(Annotation.item_id)
        .where(col(Annotation.project_id) == project.id, col(Annotation.is_current))
        .distinct()
    )
    refresh_items(session, project=project, item_ids=list(annotated))
