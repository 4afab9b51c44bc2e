"""Score the unlabeled pool with the active version, chunk by chunk, storing each item's
prediction and uncertainty so batch selection is an indexed query, not a rescoring."""

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from app.jobs.context import JobContext
from app.models.item import Item
from app.models.job_kinds import ScorePoolParams, ScorePoolResult
from app.models.model_version import ModelVersion, registry_version_name
from app.registry.algorithms import Algorithm, get_algorithm
from app.registry.training import predict_probabilities
from app.services import model_versions
from app.services.predictions import prediction_rows, upsert_predictions
from app.services.project_loading import load_project
from app.services.scoring import unsettled_condition

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


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
    pipeline = model_versions.load_version(context.database, version)
    algorithm = get_algorithm(version.algorithm)
    name = registry_version_name(version.version)
    scored = 0
    with context.database.session() as reader:
        for chunk in pool_chunks(
            reader,
            project_id=version.project_id,
            chunk_size=context.settings.scoring_chunk_size,
            with_data=algorithm.input == "features",
            item_ids=asked.item_ids,
        ):
            scored += _score_chunk(context, version, pipeline, algorithm, chunk, name)
            context.progress(min(scored / max(total, 1), 0.99))
    return ScorePoolResult(version=version.version, model_version=name, scored=scored)


def _score_chunk(
    context: JobContext,
    version: ModelVersion,
    pipeline: "Pipeline",
    algorithm: Algorithm,
    chunk: list[tuple[int, str, dict[str, Any]]],
    name: str,
) -> int:
    ids, inputs = model_versions.version_inputs(algorithm, chunk)
    if not ids:
        return 0
    probabilities = predict_probabilities(pipeline, inputs, len(version.labels))
    rows = prediction_rows(
        project_id=version.project_id,
        item_ids=ids,
        probabilities=probabilities,
        labels=version.labels,
        model_version=name,
        source="registry",
    )
    # Each chunk commits on its own: a prediction is a cache of (item, version), so a
    # cancelled or failed run leaves only correct scores, and a retry overwrites them.
    with context.database.session(write=True) as writer:
        upsert_predictions(writer, rows)
        writer.commit()
    return len(ids)
