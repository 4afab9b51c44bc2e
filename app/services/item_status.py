"""Derive an item's status and resolved label from its current annotations.

Until the agreement work brings better consensus, the resolved label is a strict
majority (more than half) of the non-abstaining votes. Without one (a tie, or a
plurality such as 2 of 4) the item goes to needs_review rather than silently
picking the first label.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable

from sqlmodel import Session, col, select

from app.models.annotation import Annotation
from app.models.base import ItemStatus, utcnow
from app.models.item import Item
from app.models.project import Project

CHUNK = 500


def derive(
    votes: Iterable[tuple[str | None, bool]], *, annotators_per_item: int
) -> tuple[ItemStatus, str | None]:
    """Status and resolved label from (label, abstain) pairs of current annotations."""
    answers = list(votes)
    labels = Counter(label for label, abstain in answers if not abstain and label is not None)
    if not answers:
        return ItemStatus.unlabeled, None
    if sum(labels.values()) < annotators_per_item:
        return ItemStatus.in_progress, None
    label, top = labels.most_common(1)[0]
    if 2 * top <= labels.total():
        return ItemStatus.needs_review, None
    return ItemStatus.labeled, label


def refresh_items(session: Session, *, project: Project, item_ids: Iterable[int]) -> None:
    """Recompute status and resolved label of the given items (flushes, never commits)."""
    ids = sorted(set(item_ids))
    now = utcnow()
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        votes: dict[int, list[tuple[str | None, bool]]] = defaultdict(list)
        rows = session.exec(
            select(Annotation.item_id, Annotation.label, Annotation.abstain).where(
                col(Annotation.item_id).in_(chunk), col(Annotation.is_current)
            )
        )
        for item_id, label, abstain in rows:
            votes[item_id].append((label, abstain))
        items = session.exec(select(Item).where(col(Item.id).in_(chunk)))
        for item in items:
            assert item.id is not None
            status, label = derive(votes[item.id], annotators_per_item=project.annotators_per_item)
            if (item.status, item.resolved_label) != (status, label):
                item.status, item.resolved_label, item.updated_at = status, label, now
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
