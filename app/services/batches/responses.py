"""Responses: a batch as its viewer sees it (`BatchPublic`), from stored or just-written leases."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlmodel import Session, col, select

from app.db import id_in
from app.models.annotation import Annotation
from app.models.base import ItemStatus
from app.models.batch import Batch, BatchItem, BatchPublic
from app.models.item import Item
from app.services import item_status, policy
from app.services.api_keys import Principal
from app.services.items import item_public


class LeaseLike(Protocol):
    @property
    def item_id(self) -> int: ...
    @property
    def score(self) -> float | None: ...
    @property
    def is_random(self) -> bool: ...
    @property
    def predicted_label(self) -> str | None: ...
    @property
    def confidence(self) -> float | None: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def outcome(self) -> str | None: ...


@dataclass(frozen=True)
class LeaseView:
    """A lease just written, as the response needs it (a stored one is a Lease row)."""

    item_id: int
    score: float | None
    is_random: bool
    predicted_label: str | None
    confidence: float | None
    expires_at: datetime
    outcome: str | None = None


def batch_public(
    session: Session,
    batch: Batch,
    leases: Sequence[LeaseLike],
    *,
    now: datetime,
    viewer: Principal,
) -> BatchPublic:
    """The batch with its items in lease order. A label batch suggests what the model said when
    the item was handed out (stored on the lease); a review batch, the item's current
    suggestion, which annotator keys do not see where it would give the votes away."""
    items = {
        i.id: i
        for i in session.exec(
            select(Item).where(id_in(session, col(Item.id), [le.item_id for le in leases]))
        )
    }
    review = batch.queue == "review"
    reasons = _review_reasons(session, list(items.values())) if review else {}
    entries = []
    for lease in leases:
        item = items[lease.item_id]
        suggested, confidence = lease.predicted_label, lease.confidence
        if review:
            suggested, confidence = item.suggested_label, item.suggestion_confidence
            if policy.labels_blind(viewer) and item_status.hides_suggestion(item):
                suggested = confidence = None
        entries.append(
            BatchItem(
                item=item_public(item, viewer=viewer),
                score=lease.score,
                suggested_label=suggested,
                confidence=confidence,
                review_reason=reasons.get(lease.item_id),
                exploration=lease.is_random,
                lease=_lease_state(lease, now),
            )
        )
    return BatchPublic.model_validate({**batch.model_dump(), "items": entries})


def _lease_state(lease: LeaseLike, now: datetime) -> str:
    if lease.outcome is not None:
        return lease.outcome
    return "live" if lease.expires_at > now else "expired"


def _review_reasons(session: Session, items: list[Item]) -> dict[int, str]:
    """Why each needs_review item is there: its stored reason, else what its votes show."""
    unexplained = [
        i.id for i in items if i.review_reason is None and i.status == ItemStatus.needs_review
    ]
    abstained: set[int] = set()
    if unexplained:
        abstained = set(
            session.exec(
                select(Annotation.item_id).where(
                    col(Annotation.item_id).in_(unexplained),
                    col(Annotation.is_current),
                    col(Annotation.abstain),
                )
            )
        )
    reasons = {}
    for item in items:
        assert item.id is not None
        if item.review_reason is not None:
            reasons[item.id] = item.review_reason
        elif item.status == ItemStatus.needs_review:
            reasons[item.id] = "abstained" if item.id in abstained else "disagreement"
    return reasons
