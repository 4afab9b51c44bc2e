"""The apply_consensus job: re-resolve a project's items under its project-wide consensus
method (Dawid-Skene, CROWDLAB), chunk by chunk, a review always winning."""

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from sqlalchemy import Row, bindparam, func, update
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from app.jobs.context import JobContext
from app.models.annotation import Annotation
from app.models.base import AnnotationSource, ConsensusMethod, ItemStatus, utcnow
from app.models.item import Item
from app.models.job import Job, JobKind
from app.models.job_kinds import ApplyConsensusResult
from app.models.review import Review
from app.services import item_status
from app.services.consensus import WRITE_CHUNK, compute, rounded_or_none
from app.services.item_status import Resolution
from app.services.project_loading import load_project


def run_apply_consensus(context: JobContext) -> ApplyConsensusResult:
    """Job function: resolve every item that has its required answers, and no review, under
    the project's consensus_method. Undecided items go to needs_review."""
    with context.database.session() as session:
        project = load_project(session, project_id=context.project_id)
        method = ConsensusMethod(project.consensus_method)
        if method == ConsensusMethod.majority:
            return ApplyConsensusResult(
                method=method, changed=0, skipped="majority is applied per item"
            )
        newer = _newer_apply_job(session, project_id=project.id or 0, job_id=context.job_id)
        if newer is not None:
            # Two requests raced past queue_apply's check: the later job does the work.
            return ApplyConsensusResult(
                method=method, changed=0, skipped=f"superseded by job {newer}"
            )
        computed = compute(session, context.database, project=project, method=method)
    context.progress(0.5, cancellable=True)
    loaded, result = computed.loaded, computed.result
    n_labels = computed.counts.sum(axis=1)
    ready = np.flatnonzero(n_labels + computed.abstentions >= project.required_annotators)
    decided = {
        int(loaded.item_ids[code]): (
            loaded.labels[result.labels[code]] if result.labels[code] >= 0 else None,
            rounded_or_none(result.quality[code]),
            int(n_labels[code]),
        )
        for code in ready
    }
    ids = sorted(decided)
    changed = 0
    for start in range(0, len(ids), WRITE_CHUNK):
        chunk = ids[start : start + WRITE_CHUNK]
        # One short transaction per chunk, so annotators' submissions wait for a chunk at most.
        with context.database.session(write=True) as session:
            changed += _apply_chunk(
                session, chunk=chunk, decided=decided, required=project.required_annotators
            )
            session.commit()
    return ApplyConsensusResult(
        method=method,
        model_version=computed.model_version,
        items_considered=len(ids),
        changed=changed,
        undecided=sum(1 for label, _, _ in decided.values() if label is None),
        converged=result.converged,
        iterations=result.iterations,
    )


def _newer_apply_job(session: Session, *, project_id: int, job_id: int) -> int | None:
    return session.exec(
        select(Job.id)
        .where(
            col(Job.project_id) == project_id,
            col(Job.kind) == JobKind.apply_consensus,
            col(Job.status) == "queued",
            col(Job.id) > job_id,
        )
        .limit(1)
    ).first()


_SET_RESOLUTION = (
    update(Item)
    .where(col(Item.id) == bindparam("item_id"))
    .values(
        status=bindparam("status"),
        resolved_label=bindparam("label"),
        resolved_by=bindparam("by"),
        consensus_quality=bindparam("quality"),
        updated_at=bindparam("now"),
        # Stamped when the item gets a label new to it (item_status.newly_trainable), else kept.
        labeled_at=func.coalesce(
            bindparam("labeled_at", type_=Item.__table__.c.labeled_at.type),  # type: ignore[attr-defined]
            col(Item.labeled_at),
        ),
    )
    .execution_options(synchronize_session=False)
)


def _apply_chunk(
    session: Session,
    *,
    chunk: list[int],
    decided: dict[int, tuple[str | None, float | None, int]],
    required: int,
) -> int:
    """Write the consensus of one chunk of items; returns how many changed.

    The items are locked first (in id order, as every writer locks them), then their reviews
    and auto-accepts (and implicit labels) are read: a review committed meanwhile is seen and
    wins.
    """
    current, reviewed, model_labels, implicit = _read_chunk(session, chunk)
    now = utcnow()
    rows = []
    for item_id, status, label, by, quality, review_reason in current:
        if item_id is None or item_id in reviewed:
            continue
        new_label, new_quality, n_labels = decided[item_id]
        new = item_status.held_for_review(
            Resolution(ItemStatus.labeled, new_label, "consensus", new_quality)
            if new_label is not None
            else item_status.unsettled(
                standby=item_status.fallback(
                    model_labels.get(item_id), item_status.implicit_label(implicit[item_id])
                ),
                n_labels=n_labels,
                required=required,
                quality=new_quality,
            ),
            review_reason,
        )
        if (status, label, by, quality) != tuple(new):
            rows.append(
                {
                    "item_id": item_id,
                    "status": new.status,
                    "label": new.label,
                    "by": new.resolved_by,
                    "quality": new.quality,
                    "now": now,
                    "labeled_at": now if item_status.newly_trainable(label, by, new) else None,
                }
            )
    if rows:
        session.connection().execute(_SET_RESOLUTION, rows)
    return len(rows)


# id, status, resolved_label, resolved_by, consensus_quality, review_reason
ItemResolution = Row[int | None, str, str | None, str | None, float | None, str | None]


def _read_chunk(
    session: Session, chunk: list[int]
) -> tuple[Sequence[ItemResolution], set[int], dict[int, str | None], dict[int, list[str | None]]]:
    """Lock the chunk's items (in id order, as every writer locks them) and read their
    resolution, then their current reviews, auto-accepts and implicit labels."""
    current = (
        session.connection()
        .execute(
            select_columns(
                col(Item.id),
                col(Item.status),
                col(Item.resolved_label),
                col(Item.resolved_by),
                col(Item.consensus_quality),
                col(Item.review_reason),
            )
            .where(col(Item.id).in_(chunk))
            .order_by(col(Item.id))
            .with_for_update()
        )
        .all()
    )
    reviewed = set(
        session.exec(
            select(Review.item_id).where(col(Review.item_id).in_(chunk), col(Review.is_current))
        )
    )
    model_labels: dict[int, str | None] = {}
    implicit: dict[int, list[str | None]] = defaultdict(list)
    for annotated_id, given, source in session.exec(
        select(Annotation.item_id, Annotation.label, Annotation.source).where(
            col(Annotation.item_id).in_(chunk),
            col(Annotation.is_current),
            col(Annotation.source).in_((AnnotationSource.model, AnnotationSource.user_behavior)),
        )
    ):
        if source == AnnotationSource.model:
            model_labels[annotated_id] = given
        else:
            implicit[annotated_id].append(given)
    return current, reviewed, model_labels, implicit
