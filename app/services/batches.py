"""Batches: choose what an annotator labels next and lease it, so no work is duplicated.

A label batch is built in three steps: items other annotators already started
(`in_progress`, oldest first) so work finishes; then the strategy's picks among the active
model's stored predictions (an indexed read, never a rescoring); and a marked share drawn
uniformly from the whole pool. Without a model the picks are a diverse cold start.

Eligibility is one SQL predicate: the item is in the queue's status, the annotator has not
answered it, holds it, or recently skipped it, and its human annotations plus live leases
leave room under the project's `required_annotators` (review: nobody else holds it).
The claim is atomic: on SQLite the request is one write transaction (BEGIN IMMEDIATE); on
PostgreSQL the chosen rows are locked FOR UPDATE SKIP LOCKED and the predicate is checked
again after the lock, in a fresh snapshot, before any lease is written.
"""

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    exists,
    func,
    or_,
    update,
)
from sqlalchemy import select as sa_select
from sqlalchemy.sql.elements import BindParameter
from sqlmodel import Session, col, select

from app.db import Database, id_in, ids_param, insert_rows
from app.errors import Conflict, ErrorDetail, Forbidden, NotFound, ValidationFailed
from app.ml.features import hashed_text_features
from app.ml.selection import choose_batch, cold_start
from app.models.annotation import Annotation
from app.models.base import VOTE_SOURCES, ItemStatus, Role, utcnow
from app.models.batch import (
    Batch,
    BatchCreate,
    BatchItem,
    BatchPublic,
    Lease,
    LeaseOutcome,
)
from app.models.item import Item
from app.models.model_version import ModelVersion
from app.models.prediction import Prediction
from app.models.project import Project
from app.registry.algorithms import get_algorithm
from app.registry.training import featurize
from app.services import item_status
from app.services import models as registry
from app.services.api_keys import Principal
from app.services.items import item_public
from app.services.prelabels import ModelSource, resolve_source
from app.settings import Settings

# Candidates read per item wanted: spares for rows lost to concurrent claims, and for
# diverse_margin the room to spread the batch over.
CANDIDATE_FACTOR = 2
DIVERSE_CANDIDATE_FACTOR = 5
# Cold start spreads the batch over a uniform sample of this many times its size (bounded).
COLD_START_FACTOR = 20
COLD_START_MAX_SAMPLE = 4_000
# Ranking walks the score index in pages from max(2 x candidates, MIN_RANK_PAGE) rows, doubling
# up to MAX_RANK_PAGE, at most MAX_RANK_PAGES of them (about 150,000 rows).
MIN_RANK_PAGE = 500
MAX_RANK_PAGE = 10_000
MAX_RANK_PAGES = 20
# On PostgreSQL, how many times a claim that lost its candidates to others plans further.
MORE_ROUNDS = 2
# Rejection sampling of random ids: rounds before falling back to ORDER BY random().
RANDOM_ROUNDS = 4
MAX_RANDOM_DRAWS = 20_000
ON_BEHALF_ROLES = {Role.admin, Role.service}
LEASE_TABLE = Lease.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Candidate:
    item_id: int
    score: float | None = None
    predicted_label: str | None = None
    confidence: float | None = None
    is_random: bool = False


@dataclass(frozen=True)
class Ranker:
    """The stored-prediction column a strategy orders by, and its priority (higher = sooner)."""

    column: Any
    ascending: bool

    def priority(self, value: float) -> float:
        return 1.0 - value if self.ascending else value


RANKERS = {
    "least_confidence": Ranker(Prediction.confidence, ascending=True),
    "margin": Ranker(Prediction.margin, ascending=True),
    "diverse_margin": Ranker(Prediction.margin, ascending=True),
    "entropy": Ranker(Prediction.entropy, ascending=False),
}


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


def _eligible(
    session: Session, pool: Pool, queue: str, ids: Sequence[int], statuses: Sequence[str]
) -> set[int]:
    statement = eligible_among(session.get_bind().dialect.name, queue)
    found = session.execute(statement, {**pool.params, "ids": list(ids), "statuses": statuses})
    return set(found.scalars())


# PostgreSQL only: SQLite's claim is one BEGIN IMMEDIATE transaction.
LOCK_SKIPPING = (
    sa_select(col(Item.id))
    .where(ids_param("postgresql", col(Item.id)))
    .order_by(col(Item.id))
    .with_for_update(skip_locked=True)
)
IN_PROGRESS = (
    sa_select(col(Item.id))
    .where(col(Item.status) == ItemStatus.in_progress, *eligibility("label"))
    .order_by(col(Item.id))
    .limit(bindparam("limit"))
)


# --- choosing ---------------------------------------------------------------------------------


def _annotator_for(principal: Principal, requested: str | None) -> str:
    if requested is None or requested == principal.name:
        return principal.name
    if principal.role not in ON_BEHALF_ROLES:
        raise Forbidden(
            f"An annotator key fetches batches only for itself ({principal.name!r}), "
            f"not for {requested!r}."
        )
    return requested


def _in_progress(session: Session, pool: Pool, limit: int) -> list[int]:
    return list(session.execute(IN_PROGRESS, {**pool.params, "limit": limit}).scalars())


def _ids(rows: Iterable[int | None]) -> list[int]:
    return [int(i) for i in rows if i is not None]


def random_items(
    session: Session,
    pool: Pool,
    *,
    status: ItemStatus,
    n: int,
    rng: np.random.Generator,
    exclude: set[int],
) -> list[int]:
    """Up to n eligible item ids drawn uniformly without replacement.

    Rejection sampling on random ids between the smallest and largest id of the status: each
    round is one indexed IN query, so a million-item pool costs what a thousand-item one does.
    A sparse pool (most ids taken by other projects or settled) falls back to ORDER BY random().
    """
    if n <= 0:
        return []
    base = [col(Item.project_id) == pool.project_id, col(Item.status) == status]
    # One round trip, two subqueries: SQLite answers a lone min() or max() from the index (both
    # in one aggregate would scan), and so does PostgreSQL.
    low, high = session.execute(
        sa_select(
            select(func.min(Item.id)).where(*base).scalar_subquery(),
            select(func.max(Item.id)).where(*base).scalar_subquery(),
        )
    ).one()
    if low is None or high is None:
        return []
    found: list[int] = []
    seen = set(exclude)
    hit_rate = 1.0
    queue = "label" if status != ItemStatus.needs_review else "review"
    conditions = [col(Item.status) == status, *eligibility(queue)]
    for _ in range(RANDOM_ROUNDS):
        need = n - len(found)
        if need <= 0:
            break
        size = min(MAX_RANDOM_DRAWS, math.ceil(2 * need / max(hit_rate, 0.01)), high - low + 1)
        draws = [int(d) for d in rng.choice(high - low + 1, size=size, replace=False) + low]
        draws = [d for d in draws if d not in seen]
        if not draws:
            break
        seen.update(draws)
        rows = _eligible(session, pool, queue, draws, [status])
        hit_rate = max(len(rows) / len(draws), 1e-4)
        found.extend(d for d in draws if d in rows)  # in draw order: still a uniform sample
    if len(found) < n:
        rest = session.exec(
            select(Item.id)
            # Ids seen but not found were ineligible a moment ago; only the excluded and the
            # found need excluding (and the IN list stays far below the bound-parameter limits).
            .where(*conditions, col(Item.id).not_in(set(exclude) | set(found)))
            .order_by(func.random())
            .limit(n - len(found)),
            params=pool.params,
        )
        found.extend(_ids(rest))
    return found[:n]


def _predictions(
    session: Session, *, model_version: str, item_ids: Sequence[int]
) -> dict[int, Prediction]:
    if not item_ids:
        return {}
    rows = session.exec(
        select(Prediction).where(
            col(Prediction.model_version) == model_version,
            id_in(session, col(Prediction.item_id), item_ids),
        )
    )
    return {p.item_id: p for p in rows}


def _with_prediction(
    candidate: Candidate, prediction: Prediction | None, ranker: Ranker | None
) -> Candidate:
    if prediction is None:
        return candidate
    score = None if ranker is None else ranker.priority(getattr(prediction, ranker.column.key))
    return replace(
        candidate,
        score=score,
        predicted_label=prediction.label,
        confidence=prediction.confidence,
    )


def _ranked_candidates(
    session: Session, pool: Pool, *, model_version: str, ranker: Ranker, limit: int, skip: set[int]
) -> list[tuple[Candidate, float]]:
    """The `limit` highest-priority eligible items, walking the version's score index.

    The walk is explicit, page by page, because a single joined query lets the planner start
    from the item table and sort the whole pool (SQLite did, at a cost linear in the pool).
    Pages are keyset ranges of the index (an OFFSET re-reads every skipped row) and double in
    size, so even many thousands of items held by other annotators cost a few pages; each
    page is one eligibility check of its ids.
    """
    column = ranker.column
    order = column.asc() if ranker.ascending else column.desc()
    page = max(2 * limit, MIN_RANK_PAGE)
    ranked: list[tuple[Candidate, float]] = []
    after: tuple[float, int] | None = None
    for _ in range(MAX_RANK_PAGES):
        query = select(Prediction.item_id, column, Prediction.label, Prediction.confidence).where(
            col(Prediction.project_id) == pool.project_id,
            col(Prediction.model_version) == model_version,
        )
        if after is not None:
            value, item_id = after
            beyond = column > value if ranker.ascending else column < value
            same = column >= value if ranker.ascending else column <= value
            query = query.where(
                same, or_(beyond, and_(column == value, col(Prediction.item_id) > item_id))
            )
        rows = session.exec(query.order_by(order, col(Prediction.item_id)).limit(page)).all()
        ids = [row[0] for row in rows if row[0] not in skip]
        eligible = _eligible(session, pool, "label", ids, [ItemStatus.unlabeled]) if ids else set()
        for item_id, value, label, confidence in rows:
            if item_id in eligible:
                priority = ranker.priority(float(value))
                ranked.append((Candidate(int(item_id), priority, label, confidence), priority))
        if len(ranked) >= limit or len(rows) < page:
            break
        after = (float(rows[-1][1]), int(rows[-1][0]))
        page = min(2 * page, MAX_RANK_PAGE)
    return ranked[:limit]


def _inputs(session: Session, item_ids: list[int]) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, text, data) of the items, in the order of item_ids."""
    rows = session.exec(
        select(Item.id, Item.text, Item.data).where(id_in(session, col(Item.id), item_ids))
    )
    by_id = {r[0]: (r[0], r[1], dict(r[2])) for r in rows if r[0] is not None}
    return [(i, *by_id[i][1:]) for i in item_ids]


def hashed_text(session: Session, item_ids: list[int]) -> Any:
    return hashed_text_features([text for _, text, _ in _inputs(session, item_ids)])


def _item_features(
    session: Session, database: Database, version: ModelVersion | None, item_ids: list[int]
) -> Any:
    """Feature rows for k-center spreading: the model's own features, else hashed text."""
    if version is None:
        return hashed_text(session, item_ids)
    algorithm = get_algorithm(version.algorithm)
    ids, inputs = registry.version_inputs(algorithm, _inputs(session, item_ids))
    if len(ids) != len(item_ids):  # some items lack the feature vector the model reads
        return None
    return featurize(registry.load_version(database, version), inputs)


def _interleave(
    picks: list[Candidate], explorers: list[Candidate], rng: np.random.Generator
) -> list[Candidate]:
    """Explorers at random places among the picks, so their position does not give them away."""
    merged = list(picks)
    for explorer in explorers:
        merged.insert(int(rng.integers(len(merged) + 1)), explorer)
    return merged


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


@dataclass
class Plan:
    strategy: str
    model_version: str | None
    ordered: list[Candidate]  # in preference order, more than needed when there is a fallback
    # More candidates, none of the given ids, when concurrent claims took the ones planned.
    more: Callable[[set[int], int], list[Candidate]] | None = None


def _plan_label_batch(
    session: Session,
    database: Database,
    pool: Pool,
    *,
    request: BatchCreate,
    random_share: float,
    rng: np.random.Generator,
) -> Plan:
    size = request.size
    source = _model_source(session, pool.project, request.model_version)
    strategy: str = request.strategy or "margin"
    if source is None and strategy != "random":
        strategy = "cold_start"
    ranker = RANKERS.get(strategy)

    started = _in_progress(session, pool, CANDIDATE_FACTOR * size)
    remaining = size - min(len(started), size)
    if strategy == "random":
        n_random, n_picks = remaining, 0
    else:
        # The tolerance keeps 0.1 * 30 = 3.0000000000000004 from rounding up.
        n_random = min(remaining, math.ceil(random_share * remaining - 1e-9))
        n_picks = remaining - n_random
    # Explorers are drawn first, from the whole unlabeled pool, so they stay a uniform sample
    # (the picks skip them, not the other way round).
    explorer_ids = random_items(
        session, pool, status=ItemStatus.unlabeled, n=n_random, rng=rng, exclude=set()
    )
    taken = set(explorer_ids)

    picks: list[Candidate] = []
    fallback: list[Candidate] = []
    if n_picks > 0 and ranker is not None and source is not None:
        ranked = _ranked_candidates(
            session,
            pool,
            model_version=source.name,
            ranker=ranker,
            limit=(DIVERSE_CANDIDATE_FACTOR if strategy == "diverse_margin" else CANDIDATE_FACTOR)
            * n_picks,
            skip=taken,
        )
        features = None
        if strategy == "diverse_margin" and len(ranked) > n_picks:
            features = _item_features(
                session, database, source.version, [c.item_id for c, _ in ranked]
            )
        chosen, _ = choose_batch(
            np.array([p for _, p in ranked], dtype=np.float64),
            n_picks,
            strategy=strategy,
            rng=rng,
            random_share=0.0,
            features=features,
        )
        picks = [ranked[int(i)][0] for i in chosen]
        chosen_set = {int(i) for i in chosen}
        fallback = [c for i, (c, _) in enumerate(ranked) if i not in chosen_set]
    elif n_picks > 0:  # cold start: spread over a uniform sample of the pool
        sample = random_items(
            session,
            pool,
            status=ItemStatus.unlabeled,
            n=min(COLD_START_FACTOR * n_picks, COLD_START_MAX_SAMPLE),
            rng=rng,
            exclude=taken,
        )
        spread = (
            [int(i) for i in cold_start(hashed_text(session, sample), n_picks, rng=rng)]
            if len(sample) > n_picks
            else list(range(len(sample)))
        )
        picks = [Candidate(sample[i]) for i in spread]
        fallback = [Candidate(s) for i, s in enumerate(sample) if i not in set(spread)]
    if len(picks) < n_picks:
        # Fewer ranked items than asked for (e.g. items added since the pool was scored):
        # top up with more uniform draws, marked as such.
        taken.update(c.item_id for c in picks + fallback)
        explorer_ids += random_items(
            session,
            pool,
            status=ItemStatus.unlabeled,
            n=n_picks - len(picks),
            rng=rng,
            exclude=taken,
        )

    first = [Candidate(i) for i in started]
    explorers = [Candidate(i, is_random=True) for i in explorer_ids]
    if source is not None:
        found = _predictions(session, model_version=source.name, item_ids=started + explorer_ids)
        first = [_with_prediction(c, found.get(c.item_id), ranker) for c in first]
        explorers = [_with_prediction(c, found.get(c.item_id), ranker) for c in explorers]
    ordered = first + _interleave(picks, explorers, rng) + fallback

    def more(tried: set[int], n: int) -> list[Candidate]:
        if ranker is not None and source is not None and strategy != "random":
            ranked = _ranked_candidates(
                session, pool, model_version=source.name, ranker=ranker, limit=n, skip=tried
            )
            return [candidate for candidate, _ in ranked]
        ids = random_items(session, pool, status=ItemStatus.unlabeled, n=n, rng=rng, exclude=tried)
        return [Candidate(i, is_random=strategy == "random") for i in ids]

    return Plan(strategy, source.name if source is not None else None, ordered, more)


def _model_source(session: Session, project: Project, requested: str | None) -> ModelSource | None:
    """The model whose stored predictions rank the pool, or None when there is none yet."""
    try:
        source = resolve_source(session, project=project, requested=requested)
    except Conflict:
        if requested is None:  # no active model: a cold start, not an error
            return None
        raise
    if requested is None:
        stored = session.exec(
            select(Prediction.id)
            .where(
                col(Prediction.project_id) == project.id,
                col(Prediction.model_version) == source.name,
            )
            .limit(1)
        ).first()
        if stored is None:  # activated, pool not scored yet: behave as a cold start
            return None
    return source


def _plan_review_batch(session: Session, pool: Pool, *, size: int) -> Plan:
    query = (
        select(col(Item.id))
        .where(col(Item.status) == ItemStatus.needs_review, *eligibility("review"))
        # Items without a label (ties, low confidence) first, oldest first; then labels a
        # report doubts, worst first (review_priority is their label quality).
        .order_by(col(Item.review_priority).is_not(None), col(Item.review_priority), col(Item.id))
        .limit(CANDIDATE_FACTOR * size)
    )
    return Plan(
        "review", None, [Candidate(i) for i in _ids(session.exec(query, params=pool.params))]
    )


# --- claiming ---------------------------------------------------------------------------------


def _claim(session: Session, pool: Pool, *, plan: Plan, size: int, queue: str) -> list[Candidate]:
    """Take, in order, the first `size` candidates that are still eligible, under row locks."""
    seen: set[int] = set()
    ordered = []
    for candidate in plan.ordered:
        if candidate.item_id not in seen:
            seen.add(candidate.item_id)
            ordered.append(candidate)
    if session.get_bind().dialect.name == "sqlite":
        # The request is one BEGIN IMMEDIATE transaction: nobody wrote since the plan was read.
        return ordered[:size]
    statuses = (
        [ItemStatus.needs_review]
        if queue == "review"
        else [ItemStatus.unlabeled, ItemStatus.in_progress]
    )
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
        # Rows another claim holds are skipped, not waited for: it is taking them.
        locked = list(
            session.execute(LOCK_SKIPPING, {"ids": [c.item_id for c in window]}).scalars()
        )
        if not locked:
            continue
        # A new statement is a new snapshot: it sees every lease and answer committed before
        # our locks were granted, and nobody can add one to these rows until we commit.
        still = _eligible(session, pool, queue, locked, statuses)
        taken.extend(c for c in window if c.item_id in still)
    return taken


# --- use cases --------------------------------------------------------------------------------


def create_batch(
    session: Session,
    database: Database,
    *,
    project: Project,
    principal: Principal,
    request: BatchCreate,
    settings: Settings,
) -> BatchPublic:
    assert project.id is not None
    pool = Pool(
        project=project,
        annotator=_annotator_for(principal, request.annotator),
        now=utcnow(),
        skip_cooldown=timedelta(seconds=settings.skip_cooldown_seconds),
    )
    rng = np.random.default_rng()
    random_share = (
        settings.batch_random_share if request.random_share is None else request.random_share
    )
    if request.queue == "review":
        plan = _plan_review_batch(session, pool, size=request.size)
    else:
        plan = _plan_label_batch(
            session, database, pool, request=request, random_share=random_share, rng=rng
        )
    chosen = _claim(session, pool, plan=plan, size=request.size, queue=request.queue)
    lease_seconds = request.lease_seconds or settings.lease_seconds
    expires_at = pool.now + timedelta(seconds=lease_seconds)
    batch = Batch(
        project_id=project.id,
        annotator=pool.annotator,
        queue=request.queue,
        requested_strategy=request.strategy,
        strategy=plan.strategy,
        model_version=plan.model_version,
        size=request.size,
        lease_expires_at=expires_at,
        created_at=pool.now,
    )
    session.add(batch)
    session.flush()
    assert batch.id is not None
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
                "batch_id": batch.id,
                "project_id": project.id,
                "item_id": lease.item_id,
                "annotator": pool.annotator,
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
    # The response is read before the commit, in the claim's own snapshot: after it, a read
    # would open a second transaction for the session to roll back.
    public = _public(session, batch, leases, now=pool.now, viewer=principal)
    session.commit()
    return public


def _load_batch(session: Session, *, project: Project, batch_id: int) -> Batch:
    batch = session.get(Batch, batch_id)
    if batch is None or batch.project_id != project.id:
        raise NotFound(f"No batch {batch_id} in project {project.id}.")
    return batch


def _check_owner(principal: Principal, batch: Batch) -> None:
    if principal.role not in ON_BEHALF_ROLES and batch.annotator != principal.name:
        raise Conflict(
            f"Batch {batch.id} is leased to {batch.annotator!r}; an annotator key uses only "
            "its own batches.",
            slug="lease-held-by-another",
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
    return _public(session, batch, _leases(session, batch_id), now=utcnow(), viewer=principal)


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
        raise Conflict(
            f"Items {answered} are already answered; resubmit an annotation to change it.",
            slug="already-answered",
        )
    now = utcnow()
    for item_id in set(item_ids):
        lease = by_item[item_id]
        if lease.outcome != LeaseOutcome.skipped:
            lease.released_at, lease.outcome = now, LeaseOutcome.skipped
            session.add(lease)
    public = _public(session, batch, leases, now=now, viewer=principal)
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


# --- responses --------------------------------------------------------------------------------


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


def _public(
    session: Session,
    batch: Batch,
    leases: Sequence[LeaseLike],
    *,
    now: datetime,
    viewer: Principal,
) -> BatchPublic:
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
            if viewer.role == Role.annotator and item_status.hides_suggestion(item):
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
