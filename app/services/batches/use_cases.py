"""Use cases: fetch a batch (choose, claim, lease), read it, release it, skip items, and close
the leases of answered items. Who may act for whom is checked here."""

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import update
from sqlmodel import Session, col, select

from app.db import Database, id_in, insert_rows
from app.errors import (
    AlreadyAnswered,
    ErrorDetail,
    Forbidden,
    LeaseHeldByAnother,
    NotFound,
    ValidationFailed,
)
from app.models.base import utcnow
from app.models.batch import Batch, BatchCreate, BatchPublic, Lease, LeaseOutcome
from app.models.project import Project
from app.services import policy
from app.services.api_keys import Principal
from app.services.batches.choosing import Candidate, Plan, plan_label_batch, plan_review_batch
from app.services.batches.claiming import claim
from app.services.batches.pool import Pool
from app.services.batches.responses import LeaseView, batch_public
from app.settings import Settings

LEASE_TABLE = Lease.__table__  # type: ignore[attr-defined]


def create_batch(
    session: Session,
    database: Database,
    *,
    project: Project,
    principal: Principal,
    request: BatchCreate,
    settings: Settings,
) -> BatchPublic:
    """Choose, claim and lease a batch in one transaction, and answer with it. When nothing
    is available, nothing is stored: the answer has no id and no items."""
    pool = Pool(
        project=project,
        annotator=_annotator_for(principal, request.annotator),
        now=utcnow(),
        skip_cooldown=timedelta(seconds=settings.skip_cooldown_seconds),
    )
    plan = _plan(session, database, pool, request=request, settings=settings)
    chosen = claim(session, pool, plan=plan, size=request.size, queue=request.queue)
    if not chosen:
        session.rollback()  # nothing written: end the claim's transaction and its locks
        return BatchPublic.model_validate(
            {
                "id": None,
                "project_id": pool.project_id,
                "annotator": pool.annotator,
                "queue": request.queue,
                "strategy": plan.strategy,
                "requested_strategy": request.strategy,
                "model_version": plan.model_version,
                "ranked_by": plan.ranked_by,
                "lease_expires_at": None,
                "created_at": pool.now,
                "released_at": None,
                "items": [],
            }
        )
    lease_seconds = request.lease_seconds or settings.lease_seconds
    expires_at = pool.now + timedelta(seconds=lease_seconds)
    batch = Batch(
        project_id=pool.project_id,
        annotator=pool.annotator,
        queue=request.queue,
        requested_strategy=request.strategy,
        strategy=plan.strategy,
        model_version=plan.model_version,
        ranked_by=plan.ranked_by,
        size=request.size,
        lease_expires_at=expires_at,
        created_at=pool.now,
    )
    session.add(batch)
    session.flush()
    leases = _write_leases(session, batch, chosen, expires_at=expires_at)
    # The response is read before the commit, in the claim's own snapshot: after it, a read
    # would open a second transaction for the session to roll back.
    public = batch_public(session, batch, leases, now=pool.now, viewer=principal)
    session.commit()
    return public


def _annotator_for(principal: Principal, requested: str | None) -> str:
    if requested is None or requested == principal.name:
        return principal.name
    if not policy.may_act_for_others(principal):
        raise Forbidden(
            f"An annotator key fetches batches only for itself ({principal.name!r}), "
            f"not for {requested!r}."
        )
    return requested


def _plan(
    session: Session, database: Database, pool: Pool, *, request: BatchCreate, settings: Settings
) -> Plan:
    """The candidates of the requested queue, in preference order."""
    if request.queue == "review":
        return plan_review_batch(session, pool, size=request.size)
    random_share = (
        settings.batch_random_share if request.random_share is None else request.random_share
    )
    return plan_label_batch(
        session,
        database,
        pool,
        request=request,
        random_share=random_share,
        rng=np.random.default_rng(),
    )


def _write_leases(
    session: Session, batch: Batch, chosen: list[Candidate], *, expires_at: datetime
) -> list[LeaseView]:
    """A lease per chosen item, in batch order, and the leases as the response reads them."""
    assert batch.id is not None
    batch_id, project_id, annotator = batch.id, batch.project_id, batch.annotator
    leases = [
        LeaseView(c.item_id, c.score, c.is_random, c.predicted_label, c.confidence, expires_at)
        for c in chosen
    ]
    # One COPY on PostgreSQL: a hundred ORM objects, or an executemany of single-row INSERTs,
    # would cost more than the whole claim.
    insert_rows(
        session,
        LEASE_TABLE,
        [
            {
                "batch_id": batch_id,
                "project_id": project_id,
                "item_id": lease.item_id,
                "annotator": annotator,
                "position": position,
                "score": lease.score,
                "is_random": lease.is_random,
                "predicted_label": lease.predicted_label,
                "confidence": lease.confidence,
                "expires_at": expires_at,
            }
            for position, lease in enumerate(leases)
        ],
    )
    return leases


def _load_batch(session: Session, *, project: Project, batch_id: int) -> Batch:
    batch = session.get(Batch, batch_id)
    if batch is None or batch.project_id != project.id:
        raise NotFound(f"No batch {batch_id} in project {project.id}.")
    return batch


def _check_owner(principal: Principal, batch: Batch) -> None:
    if not policy.may_act_as(principal, batch.annotator):
        raise LeaseHeldByAnother(
            f"Batch {batch.id} is leased to {batch.annotator!r}; an annotator key uses only "
            "its own batches."
        )


def _leases(session: Session, batch_id: int) -> list[Lease]:
    return list(
        session.exec(
            select(Lease).where(col(Lease.batch_id) == batch_id).order_by(col(Lease.position))
        )
    )


def get_batch(
    session: Session, *, project: Project, principal: Principal, batch_id: int
) -> BatchPublic:
    batch = _load_batch(session, project=project, batch_id=batch_id)
    _check_owner(principal, batch)
    return batch_public(session, batch, _leases(session, batch_id), now=utcnow(), viewer=principal)


def release_batch(
    session: Session, *, project: Project, principal: Principal, batch_id: int
) -> None:
    """Give every unanswered item of the batch back to the pool (idempotent)."""
    batch = _load_batch(session, project=project, batch_id=batch_id)
    _check_owner(principal, batch)
    now = utcnow()
    session.exec(
        update(Lease)
        .where(col(Lease.batch_id) == batch_id, col(Lease.released_at).is_(None))
        .values(released_at=now, outcome=LeaseOutcome.released)
    )
    if batch.released_at is None:
        batch.released_at = now
        session.add(batch)
    session.commit()


def renew_batch(
    session: Session,
    *,
    project: Project,
    principal: Principal,
    batch_id: int,
    lease_seconds: int,
) -> BatchPublic:
    """Extend the batch's live leases to now + lease_seconds (a front-end keeping the items it
    shows). An expired lease stays expired: its item may be someone else's by now, and the
    answer says so; an answer on it is still kept (release_answered)."""
    batch = _load_batch(session, project=project, batch_id=batch_id)
    _check_owner(principal, batch)
    now = utcnow()
    expires_at = now + timedelta(seconds=lease_seconds)
    leases = _leases(session, batch_id)
    live = [lease for lease in leases if lease.released_at is None and lease.expires_at > now]
    for lease in live:
        lease.expires_at = expires_at
        session.add(lease)
    if live:
        batch.lease_expires_at = expires_at
        session.add(batch)
    public = batch_public(session, batch, leases, now=now, viewer=principal)
    session.commit()
    return public


def skip_items(
    session: Session,
    *,
    project: Project,
    principal: Principal,
    batch_id: int,
    item_ids: list[int],
) -> BatchPublic:
    """Release items without answering; they are not offered to this annotator again soon."""
    batch = _load_batch(session, project=project, batch_id=batch_id)
    _check_owner(principal, batch)
    leases = _leases(session, batch_id)
    by_item = {lease.item_id: lease for lease in leases}
    errors = [
        ErrorDetail(loc=["body", "item_ids", i], msg=f"item {item_id} is not in batch {batch_id}")
        for i, item_id in enumerate(item_ids)
        if item_id not in by_item
    ]
    if errors:
        raise ValidationFailed(
            f"{len(errors)} of the items are not in batch {batch_id}; nothing was skipped.",
            errors=errors,
        )
    answered = sorted(i for i in item_ids if by_item[i].outcome == LeaseOutcome.answered)
    if answered:
        raise AlreadyAnswered(
            f"Items {answered} are already answered; resubmit an annotation to change it."
        )
    now = utcnow()
    for item_id in set(item_ids):
        lease = by_item[item_id]
        if lease.outcome != LeaseOutcome.skipped:
            lease.released_at, lease.outcome = now, LeaseOutcome.skipped
            session.add(lease)
    public = batch_public(session, batch, leases, now=now, viewer=principal)
    session.commit()
    return public


def release_answered(session: Session, *, answers: Sequence[tuple[int, str]]) -> None:
    """Close the leases of (item, annotator) pairs that were just answered (one Core UPDATE
    per annotator; no lease objects are loaded where this runs).

    Late answers close expired leases too, so the payoff report still counts them. The item
    ids name the project: a project condition as well let PostgreSQL, with stale statistics,
    read the project's whole lease history instead of the annotator's (item, annotator) index.
    """
    by_annotator: dict[str, set[int]] = defaultdict(set)
    for item_id, annotator in answers:
        by_annotator[annotator].add(item_id)
    now = utcnow()
    for annotator, item_ids in by_annotator.items():
        session.execute(
            update(LEASE_TABLE)
            .where(
                LEASE_TABLE.c.annotator == annotator,
                id_in(session, LEASE_TABLE.c.item_id, sorted(item_ids)),
                LEASE_TABLE.c.released_at.is_(None),
            )
            .values(released_at=now, outcome=LeaseOutcome.answered)
        )
