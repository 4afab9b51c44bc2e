"""Reviews: a reviewer's final word on an item. It overrides consensus and auto-accepts, is
kept with what the item resolved to before, and a later review replaces it (history kept)."""

from datetime import datetime

from sqlmodel import Session, col, select

from app.errors import ErrorDetail, Forbidden, NotFound, ValidationFailed
from app.models.base import utcnow
from app.models.batch import Batch, Lease
from app.models.item import Item
from app.models.project import Project
from app.models.review import Review, ReviewCreate, ReviewPublic
from app.pagination import PageRequest, keyset
from app.services import batches, events, item_status, policy
from app.services.api_keys import Principal


def submit_review(
    session: Session,
    *,
    project: Project,
    principal: Principal,
    data: ReviewCreate,
) -> Review:
    assert project.id is not None
    if data.label not in project.labels:
        raise ValidationFailed(
            f"Unknown label {data.label!r}; the project's labels are {project.labels}.",
            errors=[ErrorDetail(loc=["body", "label"], msg="not one of the project's labels")],
        )
    item = session.exec(
        select(Item)
        .where(col(Item.project_id) == project.id, col(Item.id) == data.item_id)
        .with_for_update()
    ).first()
    if item is None:
        raise NotFound(f"No item {data.item_id} in this project.")
    now = utcnow()
    if not policy.may_act_for_others(principal) and not _holds_review_lease(
        session, item_id=data.item_id, annotator=principal.name, now=now
    ):
        raise Forbidden(
            "An annotator key decides only items it holds from the review queue "
            '(POST .../batches with "queue": "review"); admin and service keys decide any item.'
        )
    previous = session.exec(
        select(Review).where(col(Review.item_id) == item.id, col(Review.is_current))
    ).first()
    if previous is not None:
        previous.is_current, previous.replaced_at = False, now
        session.add(previous)
        session.flush()  # the partial unique index allows one current review at a time
    review = Review(
        project_id=project.id,
        item_id=data.item_id,
        reviewer=principal.name,
        label=data.label,
        note=data.note,
        previous_label=item.resolved_label,
        previous_resolved_by=item.resolved_by,
        is_current=True,
        created_at=now,
    )
    session.add(review)
    item_status.clear_flag(item)  # the doubt is settled; the review keeps the evidence
    session.add(item)
    session.flush()
    batches.release_answered(session, answers=[(data.item_id, principal.name)])
    labeled = item_status.refresh_items(session, project=project, item_ids=[data.item_id])
    events.emit_items_labeled(session, project_id=project.id, items=labeled)
    session.commit()
    return review


def _holds_review_lease(session: Session, *, item_id: int, annotator: str, now: datetime) -> bool:
    """Whether the annotator holds a live lease on the item from a review-queue batch."""
    lease = session.exec(
        select(Lease.id)
        .join(Batch, col(Batch.id) == col(Lease.batch_id))
        .where(
            col(Lease.item_id) == item_id,
            col(Lease.annotator) == annotator,
            col(Lease.released_at).is_(None),
            col(Lease.expires_at) > now,
            col(Batch.queue) == "review",
        )
    ).first()
    return lease is not None


def review_public(review: Review, *, viewer: Principal) -> ReviewPublic:
    """The public view of a review; annotators label blind, so not what the item was before."""
    public = ReviewPublic.model_validate(review.model_dump())
    if policy.labels_blind(viewer):
        public.previous_label = public.previous_resolved_by = None
    return public


def list_reviews(
    session: Session,
    *,
    viewer: Principal,
    project_id: int,
    item_id: int | None,
    reviewer: str | None,
    include_history: bool,
    page: PageRequest,
) -> list[Review]:
    if policy.labels_blind(viewer):
        if reviewer not in (None, viewer.name):
            raise Forbidden("An annotator key lists only its own reviews.")
        reviewer = viewer.name
    query = select(Review).where(col(Review.project_id) == project_id)
    if not include_history:
        query = query.where(col(Review.is_current))
    if item_id is not None:
        query = query.where(col(Review.item_id) == item_id)
    if reviewer is not None:
        query = query.where(col(Review.reviewer) == reviewer)
    return list(session.exec(keyset(query, col(Review.id), page)))
