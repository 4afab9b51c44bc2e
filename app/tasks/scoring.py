"""Score the unlabeled pool with the active version, chunk by chunk, storing each item's
prediction and uncertainty so batch selection is an indexed query, not a rescoring.

Featurizing text is most of the work and holds the GIL (scikit-learn's analyzers are Python),
so a pool of more than a few chunks is featurized and predicted in SCORING_PROCESSES worker
processes, while this process reads the next chunks and writes the finished ones
(bench/model_speed.py). Each worker loads the version's stored artifact once.
"""

import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np
from sqlalchemy import func
from sqlmodel import Session, col, select

from app.errors import NotFound
from app.jobs.context import JobContext
from app.models.item import Item
from app.models.job_kinds import ScorePoolParams, ScorePoolResult
from app.models.model_version import ModelArtifact, ModelVersion, registry_version_name
from app.registry.algorithms import get_algorithm
from app.registry.store import load_pipeline
from app.registry.training import predict_probabilities
from app.services import model_versions
from app.services.predictions import PredictionColumns, prediction_columns, store_predictions
from app.services.project_loading import load_project
from app.services.scoring import unsettled_condition

# Worker processes for a big pool: two cores' worth (more only queue for the same cores).
SCORING_PROCESSES = min(2, os.cpu_count() or 1)
# Below this many chunks, starting workers (spawned: they import scikit-learn, about a
# second) costs more than it saves.
PARALLEL_MIN_CHUNKS = 4

Chunk = list[tuple[int, str, dict[str, Any]]]


def pool_chunks(
    session: Session,
    *,
    project_id: int,
    chunk_size: int,
    with_data: bool,
    item_ids: list[int] | None = None,
    limit: int | None = None,
) -> Iterator[list[tuple[int, str, dict[str, Any]]]]:
    """(id, text, data) of unsettled items in id order, chunk by chunk (keyset, so each chunk
    is one short indexed query and the pool is never held in memory)."""
    after = 0
    remaining = limit
    while remaining is None or remaining > 0:
        size = chunk_size if remaining is None else min(chunk_size, remaining)
        columns: list[Any] = [Item.id, Item.text, Item.data if with_data else Item.id]
        query = (
            select(*columns)
            .where(col(Item.project_id) == project_id, col(Item.id) > after, unsettled_condition())
            .order_by(col(Item.id))
            .limit(size)
        )
        if item_ids is not None:
            query = query.where(col(Item.id).in_(item_ids))
        rows = session.exec(query).all()
        if not rows:
            return
        yield [(r[0], r[1], r[2] if with_data else {}) for r in rows]
        after = rows[-1][0]
        if remaining is not None:
            remaining -= len(rows)


def count_pool(session: Session, *, project_id: int) -> int:
    return session.exec(
        select(func.count())
        .select_from(Item)
        .where(col(Item.project_id) == project_id, unsettled_condition())
    ).one()


def run_score_pool(context: JobContext) -> ScorePoolResult:
    """Job function: predict every unsettled item with the given (active) version."""
    asked = context.read_params(ScorePoolParams)
    with context.database.session() as session:
        project = load_project(session, project_id=context.project_id)
        version = model_versions.get_version(session, project=project, version=asked.version)
        total = (
            len(asked.item_ids)
            if asked.item_ids
            else count_pool(session, project_id=project.id or 0)
        )
    if not version.active:
        return ScorePoolResult(version=version.version, scored=0, superseded=True)
    algorithm = get_algorithm(version.algorithm)
    name = registry_version_name(version.version)
    chunk_size = context.settings.scoring_chunk_size
    processes = SCORING_PROCESSES if total >= PARALLEL_MIN_CHUNKS * chunk_size else 1
    scored = 0
    with context.database.session() as reader:
        chunks = (
            model_versions.version_inputs(algorithm, chunk)
            for chunk in pool_chunks(
                reader,
                project_id=version.project_id,
                chunk_size=chunk_size,
                with_data=algorithm.input == "features",
                item_ids=asked.item_ids,
            )
        )
        for ids, columns in _predicted(context, version, chunks, processes):
            scored += _store_chunk(context, version, ids, columns, name)
            context.progress(min(scored / max(total, 1), 0.99))
    return ScorePoolResult(version=version.version, model_version=name, scored=scored)


def _predicted(
    context: JobContext,
    version: ModelVersion,
    chunks: Iterable[tuple[list[int], list[str] | np.ndarray]],
    processes: int,
) -> Iterator[tuple[list[int], PredictionColumns]]:
    """(ids, prediction columns) of each chunk with items to score, in chunk order: here, or
    in `processes` worker processes with up to `processes` + 1 chunks in flight."""
    labels = list(version.labels)
    if processes <= 1:
        pipeline = model_versions.load_version(context.database, version)
        for ids, inputs in chunks:
            if ids:
                yield ids, _columns(pipeline, inputs, labels)
        return
    with context.database.session() as session:
        artifact = session.get(ModelArtifact, (version.id, model_versions.PIPELINE_ARTIFACT))
        if artifact is None:
            raise NotFound(f"Model version {version.version} has no stored pipeline.")
        content = artifact.content
    pool = ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_start,
        initargs=(content, os.getpid()),
    )
    pending: deque[tuple[list[int], Future[PredictionColumns]]] = deque()
    try:
        for ids, inputs in chunks:
            if not ids:
                continue
            pending.append((ids, pool.submit(_worker_columns, inputs, labels)))
            if len(pending) > processes:
                done_ids, done = pending.popleft()
                yield done_ids, done.result()
        while pending:
            done_ids, done = pending.popleft()
            yield done_ids, done.result()
    finally:
        # Cancelled or failed: the chunks in flight are dropped, nothing half-written.
        pool.shutdown(wait=True, cancel_futures=True)


# A worker process's pipeline, loaded once by _worker_start.
_worker: dict[str, Any] = {}


def _worker_start(content: bytes, parent_pid: int) -> None:
    _worker["pipeline"] = load_pipeline(content)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _exit_with_parent(parent_pid: int) -> None:
    """A worker never outlives its job process."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def _worker_columns(inputs: list[str] | np.ndarray, labels: list[str]) -> PredictionColumns:
    return _columns(_worker["pipeline"], inputs, labels)


def _columns(pipeline: Any, inputs: list[str] | np.ndarray, labels: list[str]) -> PredictionColumns:
    """Featurize, predict, and what each prediction stores (the costly part of a chunk)."""
    return prediction_columns(predict_probabilities(pipeline, inputs, len(labels)), labels)


def _store_chunk(
    context: JobContext,
    version: ModelVersion,
    ids: list[int],
    columns: PredictionColumns,
    name: str,
) -> int:
    # Each chunk commits on its own: a prediction is a cache of (item, version), so a
    # cancelled or failed run leaves only correct scores, and a retry overwrites them.
    with context.database.session(write=True) as writer:
        store_predictions(
            writer,
            project_id=version.project_id,
            item_ids=ids,
            columns=columns,
            model_version=name,
            source="registry",
        )
        writer.commit()
    return len(ids)
