"""Who is asking for a batch, and which items they may receive: the eligibility predicate.

The predicate and the statements around it are built once (per queue, per dialect) with bound
parameters and run with `Pool.params` (docs/design.md, "Hot paths"). Choosing and claiming
both ask it, so it lives here rather than in either.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, exists, func, or_
from sqlalchemy import select as sa_select
from sqlalchemy.sql.elements import BindParameter
from sqlmodel import Session, col, select

from app.db import ids_param
from app.models.annotation import Annotation
from app.models.base import VOTE_SOURCES
from app.models.batch import Lease, LeaseOutcome
from app.models.item import Item
from app.models.project import Project


@dataclass(frozen=True)
class Pool:
    """Who is asking, and what counts as an item they may receive right now.

    The conditions are built once per queue with bound parameters (`eligibility`), and every
    statement that uses them runs with `params`: constructing these subqueries anew cost more
    than running them, on every batch request.
    """

    project: Project
    annotator: str
    now: datetime
    skip_cooldown: timedelta

    @property
    def project_id(self) -> int:
        assert self.project.id is not None
        return self.project.id

    @property
    def params(self) -> dict[str, Any]:
        """The values of the bound parameters of `eligibility`."""
        return {
            "pool_project_id": self.project_id,
            "pool_annotator": self.annotator,
            "pool_now": self.now,
            "pool_skipped_after": self.now - self.skip_cooldown,
            "pool_required": self.project.required_annotators,
        }


@cache
def eligibility(queue: str) -> tuple[ColumnElement[bool], ...]:
    """Conditions on Item for an annotator in this queue (status excluded), the pool's values
    as bound parameters: run the statement with `Pool.params`."""
    now: BindParameter[datetime] = bindparam("pool_now")
    annotator: BindParameter[str] = bindparam("pool_annotator")
    live_lease = and_(col(Lease.released_at).is_(None), col(Lease.expires_at) > now)
    answered = exists().where(
        col(Annotation.item_id) == col(Item.id),
        col(Annotation.annotator) == annotator,
        col(Annotation.is_current),
    )
    held_or_skipped = exists().where(
        col(Lease.item_id) == col(Item.id),
        col(Lease.annotator) == annotator,
        or_(
            live_lease,
            and_(
                col(Lease.outcome) == LeaseOutcome.skipped,
                col(Lease.released_at) > bindparam("pool_skipped_after"),
            ),
        ),
    )
    live_leases = (
        select(func.count())
        .select_from(Lease)
        .where(col(Lease.item_id) == col(Item.id), live_lease)
        .scalar_subquery()
    )
    conditions = [col(Item.project_id) == bindparam("pool_project_id"), ~answered, ~held_or_skipped]
    if queue == "review":
        # One reviewer at a time; a reviewer's answer settles the item or sends it back.
        conditions.append(live_leases == 0)
    else:
        human_answers = (
            select(func.count())
            .select_from(Annotation)
            .where(
                col(Annotation.item_id) == col(Item.id),
                col(Annotation.is_current),
                col(Annotation.source).in_(VOTE_SOURCES),
            )
            .scalar_subquery()
        )
        conditions.append(human_answers + live_leases < bindparam("pool_required"))
    return tuple(conditions)


@cache
def eligible_among(dialect: str, queue: str) -> Select[Any]:
    """Which of the items `ids`, in one of the `statuses`, the pool may receive in this queue.
    Built once per dialect and queue, like every statement a batch request runs more than
    once: a statement object remembers its cache key, and building one anew, with these
    subqueries, cost more than running it. Run with `Pool.params`, `ids` and `statuses`."""
    return sa_select(col(Item.id)).where(
        ids_param(dialect, col(Item.id)),
        col(Item.status).in_(bindparam("statuses", expanding=True)),
        *eligibility(queue),
    )


def eligible_ids(
    session: Session, pool: Pool, queue: str, ids: Sequence[int], statuses: Sequence[str]
) -> set[int]:
    """The ids among `ids` the pool may receive now: one run of `eligible_among`."""
    statement = eligible_among(session.get_bind().dialect.name, queue)
    found = session.execute(statement, {**pool.params, "ids": list(ids), "statuses": statuses})
    return set(found.scalars())
