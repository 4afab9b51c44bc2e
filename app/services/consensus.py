"""Consensus: one label per item from its human answers, and a quality score per annotator.

Three methods (`ml.consensus`): majority vote (a tie is undecided, never the first label),
Dawid-Skene, and cleanlab's CROWDLAB (needs the active registry model's out-of-fold
probabilities). `GET .../consensus` computes any of them on demand, cached per process until
the answers change. The project's `consensus_method` is the policy that resolves items:
majority is applied item by item as answers arrive (`item_status`); the project-wide methods
are applied by the `apply_consensus` job, queued whenever answers change.
"""

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func
from sqlmodel import Session, col, select

from app.db import Database
from app.errors import NoActiveModel
from app.ml import consensus as methods
from app.ml.consensus import Consensus
from app.models.annotation import Annotation
from app.models.base import ConsensusMethod
from app.models.item import Item
from app.models.job import Job, JobKind
from app.models.job_kinds import ApplyConsensusParams
from app.models.model_version import ModelVersion, registry_version_name
from app.models.project import Project
from app.models.quality import AnnotatorQuality, ConsensusItem, ConsensusPage
from app.pagination import PageRequest, encode_cursor
from app.registry.algorithms import get_algorithm
from app.registry.training import predict_probabilities
from app.services import jobs, model_versions
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
        raise NoActiveModel(
            "CROWDLAB needs a trained model's out-of-fold probabilities and this project has "
            "no active model version; train one (POST .../models) or use majority or "
            "dawid_skene.",
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
    saw); columns of labels the model does not know get a small floor before renormalising
    (`ml.consensus.label_columns`)."""
    n_columns = len(version.labels)
    oof = model_versions.load_oof_probabilities(session, version)
    raw = methods.rows_by_item(loaded.item_ids, version.train_item_ids, oof, n_columns=n_columns)
    unseen = np.flatnonzero(np.isnan(raw[:, 0]))
    if unseen.size:
        unseen_ids = loaded.item_ids[unseen]
        ids, predicted = _predictions(session, database, version, unseen_ids.tolist())
        raw[unseen] = methods.rows_by_item(unseen_ids, ids, predicted, n_columns=n_columns)
    return methods.label_columns(raw, model_labels=version.labels, labels=loaded.labels)


def _predictions(
    session: Session, database: Database, version: ModelVersion, item_ids: list[int]
) -> tuple[list[int], np.ndarray]:
    """The version's probabilities (model label order) for the items it can read, with their
    ids; items without the features it needs are left out."""
    algorithm = get_algorithm(version.algorithm)
    pipeline = model_versions.load_version(database, version)
    predicted_ids: list[int] = []
    predicted: list[np.ndarray] = [np.empty((0, len(version.labels)))]
    for start in range(0, len(item_ids), WRITE_CHUNK):
        rows = session.exec(
            select(Item.id, Item.text, Item.data).where(
                col(Item.id).in_(item_ids[start : start + WRITE_CHUNK])
            )
        ).all()
        ids, inputs = model_versions.version_inputs(
            algorithm, [(i, str(t), dict(d)) for i, t, d in rows if i is not None]
        )
        if ids:
            predicted_ids.extend(ids)
            predicted.append(predict_probabilities(pipeline, inputs, len(version.labels)))
    return predicted_ids, np.concatenate(predicted)


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
            quality=finite_or_none(result.quality[code]),
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
                    quality=finite_or_none(result.annotator_quality[code]),
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


def rounded_or_none(value: float) -> float | None:
    """A quality as stored on an item (6 decimals); None where it is NaN (undefined)."""
    return None if np.isnan(value) else round(float(value), 6)


def finite_or_none(value: float) -> float | None:
    """A quality as answered (full precision); None where it is NaN (undefined)."""
    return None if np.isnan(value) else float(value)


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
        params=ApplyConsensusParams(),
        created_by=created_by,
    )
