"""Consensus: one label per item from its human answers, and a quality score per annotator.

Three methods (`ml.consensus`): majority vote (a tie is undecided, never the first label),
Dawid-Skene, and cleanlab's CROWDLAB (needs the active registry model's out-of-fold
probabilities). `GET .../consensus` computes any of them on demand, cached per process until
the answers change. The project's `consensus_method` is the policy that resolves items:
majority is applied item by item as answers arrive (`item_status`); the project-wide methods
are applied by the `apply_consensus` job, queued whenever answers change.
"""

import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import bindparam, func, update
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from app.db import Database
from app.errors import Conflict
from app.jobs.context import JobContext
from app.ml import consensus as methods
from app.ml.consensus import Consensus
from app.models.annotation import Annotation
from app.models.base import AnnotationSource, ConsensusMethod, ItemStatus, utcnow
from app.models.item import Item
from app.models.job import Job, JobKind
from app.models.model_version import ModelVersion, registry_version_name
from app.models.project import Project
from app.models.quality import AnnotatorQuality, ConsensusItem, ConsensusPage
from app.models.review import Review
from app.pagination import PageRequest, encode_cursor
from app.registry.algorithms import get_algorithm
from app.registry.training import predict_probabilities
from app.services import item_status, jobs, model_versions
from app.services.item_status import Resolution
from app.services.project_loading import load_project
from app.services.votes import ProjectVotes, load_votes

DAWID_SKENE_SEED = 0
WRITE_CHUNK = 1000
CACHE_SIZE = 8


@dataclass(frozen=True)
class Computed:
    method: ConsensusMethod
    loaded: ProjectVotes
    counts: np.ndarray  # (items, labels) vote counts
    abstentions: np.ndarray  # (items,)
    result: Consensus
    model_version: str | None


class _Cache:
    """The last few computations, keyed by project, method and a fingerprint of the answers."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[Any, ...], Computed] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Computed | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], value: Computed) -> None:
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > CACHE_SIZE:
                self._entries.popitem(last=False)


_cache = _Cache()


def compute(
    session: Session, database: Database, *, project: Project, method: ConsensusMethod
) -> Computed:
    version = _crowdlab_version(session, project=project) if method == "crowdlab" else None
    count, last_id = session.exec(
        select(func.count(), func.max(Annotation.id)).where(
            col(Annotation.project_id) == project.id
        )
    ).one()
    key = (
        str(database.engine.url),  # tests and benches run several databases in one process
        project.id,
        method,
        count,
        last_id,
        tuple(project.labels),
        version and version.id,
    )
    cached = _cache.get(key)
    if cached is not None:
        return cached
    loaded = load_votes(session, project=project)
    votes = loaded.votes
    model_version = None
    if method == ConsensusMethod.majority:
        result = methods.majority_vote(votes)
    elif method == ConsensusMethod.dawid_skene:
        result = methods.dawid_skene(votes, seed=DAWID_SKENE_SEED)
    else:
        assert version is not None
        probabilities = _out_of_fold_probabilities(session, database, project, version, loaded)
        result = methods.crowdlab(votes, probabilities)
        model_version = registry_version_name(version.version)
    counts = np.zeros((votes.n_items, votes.n_labels), dtype=np.int64)
    np.add.at(counts, (votes.item, votes.label), 1)
    computed = Computed(
        method=method,
        loaded=loaded,
        counts=counts,
        abstentions=np.bincount(loaded.abstain_item, minlength=votes.n_items),
        result=result,
        model_version=model_version,
    )
    _cache.put(key, computed)
    return computed


def _crowdlab_version(session: Session, *, project: Project) -> ModelVersion:
    version = model_versions.active_version(session, project=project)
    if version is None:
        raise Conflict(
            "CROWDLAB needs a trained model's out-of-fold probabilities and this project has "
            "no active model version; train one (POST .../models) or use majority or "
            "dawid_skene.",
            slug="no-active-model",
        )
    return version


def _out_of_fold_probabilities(
    session: Session,
    database: Database,
    project: Project,
    version: ModelVersion,
    loaded: ProjectVotes,
) -> np.ndarray:
    """(items, labels) held-out probabilities in the project's label order: the version's
    out-of-fold rows for items it trained on, its predictions for the rest (which it never
    saw); columns of labels the model does not know get a small floor before renormalising."""
    n_labels = len(loaded.labels)
    column = {label: i for i, label in enumerate(loaded.labels)}
    model_columns = [column.get(label, -1) for label in version.labels]
    raw = np.full((len(loaded.item_ids), len(version.labels)), np.nan, dtype=np.float64)
    position = {int(item_id): code for code, item_id in enumerate(loaded.item_ids)}
    oof = model_versions.load_oof_probabilities(session, version)
    for row, item_id in enumerate(version.train_item_ids):
        code = position.get(item_id)
        if code is not None:
            raw[code] = oof[row]
    unseen = [int(loaded.item_ids[c]) for c in np.flatnonzero(np.isnan(raw[:, 0]))]
    if unseen:
        algorithm = get_algorithm(version.algorithm)
        pipeline = model_versions.load_version(database, version)
        for start in range(0, len(unseen), WRITE_CHUNK):
            rows = session.exec(
                select(Item.id, Item.text, Item.data).where(
                    col(Item.id).in_(unseen[start : start + WRITE_CHUNK])
                )
            ).all()
            ids, inputs = model_versions.version_inputs(
                algorithm, [(i, str(t), dict(d)) for i, t, d in rows if i is not None]
            )
            if ids:
                predicted = predict_probabilities(pipeline, inputs, len(version.labels))
                for item_id, probabilities in zip(ids, predicted, strict=True):
                    raw[position[item_id]] = probabilities
    probabilities = np.zeros((len(loaded.item_ids), n_labels), dtype=np.float64)
    known = [(m, p) for m, p in enumerate(model_columns) if p >= 0]
    for model_column, project_column in known:
        probabilities[:, project_column] = raw[:, model_column]
    # Items the model cannot read (no features) carry no evidence: a uniform row.
    probabilities[np.isnan(probabilities).any(axis=1)] = 1.0 / n_labels
    probabilities = np.maximum(probabilities, 1e-6)
    normalized: np.ndarray = probabilities / probabilities.sum(axis=1, keepdims=True)
    return normalized


def consensus_page(computed: Computed, page: PageRequest, *, required: int) -> ConsensusPage:
    """One page of items in id order, with every annotator's quality. `required` is the
    project's required answers per item: majority applies item_status's rule (the winner
    needs more than half of the required answers too), and `complete` says whether the item
    has its answers, i.e. whether this label resolves it."""
    loaded, result = computed.loaded, computed.result
    start = 0
    if page.after_id is not None:
        start = int(np.searchsorted(loaded.item_ids, page.after_id, side="right"))
    codes = range(start, min(start + page.limit, len(loaded.item_ids)))
    items = [
        ConsensusItem(
            item_id=int(loaded.item_ids[code]),
            label=_label(computed, code, required),
            quality=_finite(result.quality[code]),
            votes={
                loaded.labels[label]: int(computed.counts[code, label])
                for label in np.flatnonzero(computed.counts[code])
            },
            abstentions=int(computed.abstentions[code]),
            complete=bool(computed.counts[code].sum() + computed.abstentions[code] >= required),
        )
        for code in codes
    ]
    more = start + page.limit < len(loaded.item_ids)
    return ConsensusPage(
        items=items,
        next_cursor=encode_cursor(items[-1].item_id) if more and items else None,
        method=computed.method,
        converged=result.converged,
        iterations=result.iterations,
        model_version=computed.model_version,
        annotators=sorted(
            (
                AnnotatorQuality(
                    annotator=name,
                    quality=_finite(result.annotator_quality[code]),
                    n=int(result.annotator_n[code]),
                )
                for code, name in enumerate(loaded.annotators)
            ),
            key=lambda a: (a.quality is None, -(a.quality or 0.0), a.annotator),
        ),
    )


def _label(computed: Computed, code: int, required: int) -> str | None:
    winner = int(computed.result.labels[code])
    if winner < 0:
        return None
    complete = computed.counts[code].sum() + computed.abstentions[code] >= required
    if (
        computed.method == ConsensusMethod.majority
        and complete
        and not 2 * computed.counts[code, winner] > required
    ):
        return None  # "I don't know"s left too few labels (item_status.derive's rule)
    return computed.loaded.labels[winner]


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)


def check_method(session: Session, *, project: Project, method: ConsensusMethod) -> None:
    """Refuse a policy the project cannot run (CROWDLAB without a model)."""
    if method == ConsensusMethod.crowdlab:
        _crowdlab_version(session, project=project)


def queue_apply(session: Session, *, project: Project, created_by: str) -> Job | None:
    """A job re-resolving the project under a project-wide method, unless one is already
    queued (flushes; the caller commits, then enqueues)."""
    if project.consensus_method == ConsensusMethod.majority:
        return None
    pending = session.exec(
        select(Job.id)
        .where(
            col(Job.project_id) == project.id,
            col(Job.kind) == JobKind.apply_consensus,
            col(Job.status) == "queued",
        )
        .limit(1)
    ).first()
    if pending is not None:
        return None
    return jobs.new_job(
        session,
        project_id=project.id,
        kind=JobKind.apply_consensus,
        params={},
        created_by=created_by,
    )


def run_apply_consensus(context: JobContext) -> dict[str, Any]:
    """Job function: resolve every item that has its required answers, and no review, under
    the project's consensus_method. Undecided items go to needs_review."""
    with context.database.session() as session:
        project = load_project(session, project_id=context.project_id)
        method = ConsensusMethod(project.consensus_method)
        if method == ConsensusMethod.majority:
            return {"method": method, "changed": 0, "skipped": "majority is applied per item"}
        newer = _newer_apply_job(session, project_id=project.id or 0, job_id=context.job_id)
        if newer is not None:
            # Two requests raced past queue_apply's check: the later job does the work.
            return {"method": method, "changed": 0, "skipped": f"superseded by job {newer}"}
        computed = compute(session, context.database, project=project, method=method)
    context.progress(0.5, cancellable=True)
    loaded, result = computed.loaded, computed.result
    n_labels = computed.counts.sum(axis=1)
    ready = np.flatnonzero(n_labels + computed.abstentions >= project.required_annotators)
    decided = {
        int(loaded.item_ids[code]): (
            loaded.labels[result.labels[code]] if result.labels[code] >= 0 else None,
            _finite(result.quality[code]),
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
    return {
        "method": method,
        "model_version": computed.model_version,
        "items_considered": len(ids),
        "changed": changed,
        "undecided": sum(1 for label, _, _ in decided.values() if label is None),
        "converged": result.converged,
        "iterations": result.iterations,
    }


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
                }
            )
    if rows:
        session.connection().execute(_SET_RESOLUTION, rows)
    return len(rows)
