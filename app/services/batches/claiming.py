"""Claiming: take the planned candidates that are still eligible, atomically.

On SQLite the request is one write transaction (BEGIN IMMEDIATE), so the plan is still true
when it is claimed. On PostgreSQL the chosen rows are locked FOR UPDATE SKIP LOCKED and the
predicate is checked again after the lock, in a fresh snapshot, before any lease is written.
"""

from collections.abc import Sequence

from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from app.db import ids_param
from app.models.base import ItemStatus
from app.models.item import Item
from app.services.batches.choosing import Candidate, Plan
from app.services.batches.pool import Pool, eligible_ids

# On PostgreSQL, how many times a claim that lost its candidates to others plans further.
MORE_ROUNDS = 2

# PostgreSQL only: SQLite's claim is one BEGIN IMMEDIATE transaction.
LOCK_SKIPPING = (
    sa_select(col(Item.id))
    .where(ids_param("postgresql", col(Item.id)))
    .order_by(col(Item.id))
    .with_for_update(skip_locked=True)
)


def claim(session: Session, pool: Pool, *, plan: Plan, size: int, queue: str) -> list[Candidate]:
    """Take, in order, the first `size` candidates that are still eligible, under row locks."""
    ordered = _unique(plan.ordered)
    if session.get_bind().dialect.name == "sqlite":
        # The request is one BEGIN IMMEDIATE transaction: nobody wrote since the plan was read.
        return ordered[:size]
    return _claim_locked(session, pool, plan=plan, ordered=ordered, size=size, queue=queue)


def _unique(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates without repeated items, the first of each kept."""
    seen: set[int] = set()
    unique = []
    for candidate in candidates:
        if candidate.item_id not in seen:
            seen.add(candidate.item_id)
            unique.append(candidate)
    return unique


def _claim_locked(
    session: Session, pool: Pool, *, plan: Plan, ordered: list[Candidate], size: int, queue: str
) -> list[Candidate]:
    """PostgreSQL: lock the candidates a window at a time and keep those still eligible,
    planning further (a bounded number of times) when concurrent claims took them all."""
    statuses = (
        [ItemStatus.needs_review]
        if queue == "review"
        else [ItemStatus.unlabeled, ItemStatus.in_progress]
    )
    seen = {c.item_id for c in ordered}
    taken: list[Candidate] = []
    position = 0
    rounds = 0
    while len(taken) < size:
        if position >= len(ordered):
            # Everything planned was taken by concurrent claims (or was not eligible after
            # all): plan a little further, a bounded number of times.
            if plan.more is None or rounds >= MORE_ROUNDS:
                break
            rounds += 1
            extra = [c for c in plan.more(seen, 2 * (size - len(taken))) if c.item_id not in seen]
            if not extra:
                break
            seen.update(c.item_id for c in extra)
            ordered.extend(extra)
        window = ordered[position : position + size - len(taken)]
        position += len(window)
        taken.extend(_still_eligible(session, pool, window, queue=queue, statuses=statuses))
    return taken


def _still_eligible(
    session: Session, pool: Pool, window: list[Candidate], *, queue: str, statuses: Sequence[str]
) -> list[Candidate]:
    """The candidates of `window` this claim could lock and that are still eligible."""
    # Rows another claim holds are skipped, not waited for: it is taking them.
    locked = list(session.execute(LOCK_SKIPPING, {"ids": [c.item_id for c in window]}).scalars())
    if not locked:
        return []
    # A new statement is a new snapshot: it sees every lease and answer committed before
    # our locks were granted, and nobody can add one to these rows until we commit.
    still = eligible_ids(session, pool, queue, locked, statuses)
    return [c for c in window if c.item_id in still]
