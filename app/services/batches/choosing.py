"""Choosing: which items a batch offers, in preference order, before anything is claimed.

A label batch is built in three steps: items other annotators already started
(`in_progress`, oldest first) so work finishes; then the strategy's picks among the active
model's stored predictions (an indexed read, never a rescoring); and a marked share drawn
uniformly from the whole pool. Without a model the picks are a diverse cold start. A review
batch is the review queue in its order. Every read asks the pool's eligibility predicate
(`pool.eligibility`), built once.
"""

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sqlalchemy import and_, bindparam, func, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from app.db import Database, id_in
from app.errors import Conflict
from app.ml.features import hashed_text_features
from app.ml.selection import choose_batch, cold_start
from app.models.base import ItemStatus
from app.models.batch import BatchCreate
from app.models.item import Item
from app.models.job import JobStatus
from app.models.model_version import ModelVersion, registry_version_name
from app.models.prediction import Prediction
from app.models.project import Project
from app.registry.algorithms import get_algorithm
from app.registry.training import featurize
from app.services import model_versions
from app.services.batches.pool import Pool, eligibility, eligible_ids
from app.services.model_sources import ModelSource, resolve_source

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
# Rejection sampling of random ids: rounds before falling back to ORDER BY random().
RANDOM_ROUNDS = 4
MAX_RANDOM_DRAWS = 20_000


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


@dataclass
class Plan:
    strategy: str
    model_version: str | None
    ordered: list[Candidate]  # in preference order, more than needed when there is a fallback
    # More candidates, none of the given ids, when concurrent claims took the ones planned.
    more: Callable[[set[int], int], list[Candidate]] | None = None
    ranked_by: str | None = None  # BatchRanking: whose scores ranked the picks


IN_PROGRESS = (
    sa_select(col(Item.id))
    .where(col(Item.status) == ItemStatus.in_progress, *eligibility("label"))
    .order_by(col(Item.id))
    .limit(bindparam("limit"))
)


def _in_progress(session: Session, pool: Pool, limit: int) -> list[int]:
    return list(session.execute(IN_PROGRESS, {**pool.params, "limit": limit}).scalars())


def _ids(rows: Iterable[int | None]) -> list[int]:
    return [int(i) for i in rows if i is not None]


# --- uniform draws ----------------------------------------------------------------------------


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
    id_range = _id_range(session, pool, status)
    if id_range is None:
        return []
    queue = "label" if status != ItemStatus.needs_review else "review"
    found = _sampled_ids(
        session, pool, queue=queue, status=status, id_range=id_range, n=n, rng=rng, exclude=exclude
    )
    if len(found) < n:
        # Ids seen but not found were ineligible a moment ago; only the excluded and the
        # found need excluding (and the IN list stays far below the bound-parameter limits).
        found += _shuffled_ids(
            session,
            pool,
            queue=queue,
            status=status,
            n=n - len(found),
            exclude=exclude | set(found),
        )
    return found[:n]


def _id_range(session: Session, pool: Pool, status: ItemStatus) -> tuple[int, int] | None:
    """The smallest and largest id among the project's items in `status`; None if it has none."""
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
        return None
    return low, high


def _sampled_ids(
    session: Session,
    pool: Pool,
    *,
    queue: str,
    status: ItemStatus,
    id_range: tuple[int, int],
    n: int,
    rng: np.random.Generator,
    exclude: set[int],
) -> list[int]:
    """Up to n eligible ids by rejection sampling: a few rounds of random ids in `id_range`,
    each round sized by the previous round's hit rate and checked in one query."""
    low, high = id_range
    found: list[int] = []
    seen = set(exclude)
    hit_rate = 1.0
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
        rows = eligible_ids(session, pool, queue, draws, [status])
        hit_rate = max(len(rows) / len(draws), 1e-4)
        found.extend(d for d in draws if d in rows)  # in draw order: still a uniform sample
    return found


def _shuffled_ids(
    session: Session, pool: Pool, *, queue: str, status: ItemStatus, n: int, exclude: set[int]
) -> list[int]:
    """Up to n eligible ids, none of `exclude`, by ORDER BY random(): for a sparse pool."""
    rest = session.exec(
        select(Item.id)
        .where(col(Item.status) == status, *eligibility(queue), col(Item.id).not_in(exclude))
        .order_by(func.random())
        .limit(n),
        params=pool.params,
    )
    return _ids(rest)


# --- ranking by stored predictions ------------------------------------------------------------


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
        eligible = (
            eligible_ids(session, pool, "label", ids, [ItemStatus.unlabeled]) if ids else set()
        )
        for item_id, value, label, confidence in rows:
            if item_id in eligible:
                priority = ranker.priority(float(value))
                ranked.append((Candidate(int(item_id), priority, label, confidence), priority))
        if len(ranked) >= limit or len(rows) < page:
            break
        after = (float(rows[-1][1]), int(rows[-1][0]))
        page = min(2 * page, MAX_RANK_PAGE)
    return ranked[:limit]


# --- features for spreading a batch -----------------------------------------------------------


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
    ids, inputs = model_versions.version_inputs(algorithm, _inputs(session, item_ids))
    if len(ids) != len(item_ids):  # some items lack the feature vector the model reads
        return None
    return featurize(model_versions.load_version(database, version), inputs)


# --- the label plan, step by step -------------------------------------------------------------


def plan_label_batch(
    session: Session,
    database: Database,
    pool: Pool,
    *,
    request: BatchCreate,
    random_share: float,
    rng: np.random.Generator,
) -> Plan:
    """Started items first, then the picks with the explorers at random places among them,
    then the runners-up of the picks as a fallback for rows lost to concurrent claims."""
    source, ranked_by = _model_source(session, pool.project, request.model_version)
    strategy = _strategy(request.strategy, source)
    ranker = RANKERS.get(strategy)
    started = _in_progress(session, pool, CANDIDATE_FACTOR * request.size)
    n_random, n_picks = _shares(
        request.size - min(len(started), request.size), strategy=strategy, random_share=random_share
    )
    # Explorers are drawn first, from the whole unlabeled pool, so they stay a uniform sample
    # (the picks skip them, not the other way round).
    explorer_ids = random_items(
        session, pool, status=ItemStatus.unlabeled, n=n_random, rng=rng, exclude=set()
    )
    taken = set(explorer_ids)
    picks, fallback = _picks(
        session,
        database,
        pool,
        source=source,
        strategy=strategy,
        ranker=ranker,
        n=n_picks,
        skip=taken,
        rng=rng,
    )
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
    first, explorers = _first_and_explorers(
        session, source=source, ranker=ranker, started=started, explorer_ids=explorer_ids
    )
    return Plan(
        strategy,
        source.name if source is not None else None,
        first + _interleave(picks, explorers, rng) + fallback,
        _planner_of_more(session, pool, source=source, strategy=strategy, ranker=ranker, rng=rng),
        ranked_by if ranker is not None and source is not None and strategy != "random" else None,
    )


def _model_source(
    session: Session, project: Project, requested: str | None
) -> tuple[ModelSource | None, str | None]:
    """The model whose stored predictions rank the pool (None when there is none yet), and
    what that is (BatchRanking). While the active version's pool scoring runs, the items it
    has not reached yet have no score of it: the previously active version's complete scores
    rank the batch instead, else the active version's scores so far, never silently random."""
    try:
        source = resolve_source(session, project=project, requested=requested)
    except Conflict:
        if requested is None:  # no active model: a cold start, not an error
            return None, None
        raise
    if requested is not None:
        return source, "requested_model"
    assert source.version is not None  # the active version
    scored = _has_scores(session, project, source.name)
    status = model_versions.activation_scoring_status(
        session, project=project, version=source.version
    )
    if status not in (JobStatus.queued, JobStatus.running):
        # Scoring done (or failed): the active version's stored scores, if it left any.
        return (source, "active_model") if scored else (None, None)
    previous = _previous_scored_version(session, project, source.version)
    if previous is not None:
        return previous, "previous_model"
    # No earlier scores: the active version's so far, else a cold start (the strategy says so).
    return (source, "partial_scores") if scored else (None, None)


def _has_scores(session: Session, project: Project, name: str) -> bool:
    stored = session.exec(
        select(Prediction.id)
        .where(col(Prediction.project_id) == project.id, col(Prediction.model_version) == name)
        .limit(1)
    ).first()
    return stored is not None


def _previous_scored_version(
    session: Session, project: Project, active: ModelVersion
) -> ModelSource | None:
    """The version active before `active` (the latest activated other one), if it has
    stored scores."""
    previous = session.exec(
        select(ModelVersion)
        .where(
            col(ModelVersion.project_id) == project.id,
            col(ModelVersion.id) != active.id,
            col(ModelVersion.activated_at).is_not(None),
        )
        .order_by(col(ModelVersion.activated_at).desc())
        .limit(1)
    ).first()
    if previous is None:
        return None
    name = registry_version_name(previous.version)
    if not _has_scores(session, project, name):
        return None
    return ModelSource(name, previous.labels, previous)


def _strategy(requested: str | None, source: ModelSource | None) -> str:
    """The strategy the batch really uses: margin by default, a cold start without a model."""
    strategy = requested or "margin"
    if source is None and strategy != "random":
        return "cold_start"
    return strategy


def _shares(remaining: int, *, strategy: str, random_share: float) -> tuple[int, int]:
    """How many of the `remaining` places go to explorers and how many to the strategy's picks."""
    if strategy == "random":
        return remaining, 0
    # The tolerance keeps 0.1 * 30 = 3.0000000000000004 from rounding up.
    n_random = min(remaining, math.ceil(random_share * remaining - 1e-9))
    return n_random, remaining - n_random


def _picks(
    session: Session,
    database: Database,
    pool: Pool,
    *,
    source: ModelSource | None,
    strategy: str,
    ranker: Ranker | None,
    n: int,
    skip: set[int],
    rng: np.random.Generator,
) -> tuple[list[Candidate], list[Candidate]]:
    """The strategy's n picks, none of `skip`, and the runners-up it did not pick."""
    if n <= 0:
        return [], []
    if ranker is not None and source is not None:
        return _ranked_picks(
            session,
            database,
            pool,
            source=source,
            strategy=strategy,
            ranker=ranker,
            n=n,
            skip=skip,
            rng=rng,
        )
    return _cold_start_picks(session, pool, n=n, skip=skip, rng=rng)


def _ranked_picks(
    session: Session,
    database: Database,
    pool: Pool,
    *,
    source: ModelSource,
    strategy: str,
    ranker: Ranker,
    n: int,
    skip: set[int],
    rng: np.random.Generator,
) -> tuple[list[Candidate], list[Candidate]]:
    """The n picks among the highest-priority candidates (diverse_margin reads more of them and
    spreads the batch over their features); the candidates not picked are the fallback."""
    factor = DIVERSE_CANDIDATE_FACTOR if strategy == "diverse_margin" else CANDIDATE_FACTOR
    ranked = _ranked_candidates(
        session, pool, model_version=source.name, ranker=ranker, limit=factor * n, skip=skip
    )
    features = None
    if strategy == "diverse_margin" and len(ranked) > n:
        features = _item_features(session, database, source.version, [c.item_id for c, _ in ranked])
    chosen, _ = choose_batch(
        np.array([p for _, p in ranked], dtype=np.float64),
        n,
        strategy=strategy,
        rng=rng,
        random_share=0.0,
        features=features,
    )
    chosen_set = {int(i) for i in chosen}
    picks = [ranked[int(i)][0] for i in chosen]
    fallback = [c for i, (c, _) in enumerate(ranked) if i not in chosen_set]
    return picks, fallback


def _cold_start_picks(
    session: Session, pool: Pool, *, n: int, skip: set[int], rng: np.random.Generator
) -> tuple[list[Candidate], list[Candidate]]:
    """Without a model: n picks spread over a uniform sample of the pool (k-center on hashed
    text); the rest of the sample is the fallback."""
    sample = random_items(
        session,
        pool,
        status=ItemStatus.unlabeled,
        n=min(COLD_START_FACTOR * n, COLD_START_MAX_SAMPLE),
        rng=rng,
        exclude=skip,
    )
    spread = (
        [int(i) for i in cold_start(hashed_text(session, sample), n, rng=rng)]
        if len(sample) > n
        else list(range(len(sample)))
    )
    picks = [Candidate(sample[i]) for i in spread]
    fallback = [Candidate(s) for i, s in enumerate(sample) if i not in set(spread)]
    return picks, fallback


def _first_and_explorers(
    session: Session,
    *,
    source: ModelSource | None,
    ranker: Ranker | None,
    started: list[int],
    explorer_ids: list[int],
) -> tuple[list[Candidate], list[Candidate]]:
    """The started items and the explorers as candidates, with the model's prediction for
    each when there is a model (one read for both)."""
    first = [Candidate(i) for i in started]
    explorers = [Candidate(i, is_random=True) for i in explorer_ids]
    if source is None:
        return first, explorers
    found = _predictions(session, model_version=source.name, item_ids=started + explorer_ids)
    return (
        [_with_prediction(c, found.get(c.item_id), ranker) for c in first],
        [_with_prediction(c, found.get(c.item_id), ranker) for c in explorers],
    )


def _interleave(
    picks: list[Candidate], explorers: list[Candidate], rng: np.random.Generator
) -> list[Candidate]:
    """Explorers at random places among the picks, so their position does not give them away."""
    merged = list(picks)
    for explorer in explorers:
        merged.insert(int(rng.integers(len(merged) + 1)), explorer)
    return merged


def _planner_of_more(
    session: Session,
    pool: Pool,
    *,
    source: ModelSource | None,
    strategy: str,
    ranker: Ranker | None,
    rng: np.random.Generator,
) -> Callable[[set[int], int], list[Candidate]]:
    """`Plan.more` for a label batch: further ranked candidates when there is a model to rank
    by, else further uniform draws (marked as explorers under the random strategy)."""

    def more(tried: set[int], n: int) -> list[Candidate]:
        if ranker is not None and source is not None and strategy != "random":
            ranked = _ranked_candidates(
                session, pool, model_version=source.name, ranker=ranker, limit=n, skip=tried
            )
            return [candidate for candidate, _ in ranked]
        ids = random_items(session, pool, status=ItemStatus.unlabeled, n=n, rng=rng, exclude=tried)
        return [Candidate(i, is_random=strategy == "random") for i in ids]

    return more


# --- the review plan --------------------------------------------------------------------------


def plan_review_batch(session: Session, pool: Pool, *, size: int) -> Plan:
    """The review queue in its order: unlabeled items oldest first, then the doubted labels."""
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
