"""The prelabel job: a model predicts each unsettled item; confident predictions are
auto-accepted, the rest go to review with a suggestion (app/services/prelabels.py has the
request side and the write of each chunk)."""

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlmodel import Session, col, select

from app.errors import NotEnoughLabels
from app.jobs.context import JobContext
from app.ml.thresholds import expected_precision, fixed_thresholds, thresholds_for_precision
from app.models.base import HUMAN_RESOLUTIONS, Phase
from app.models.item import Item
from app.models.job_kinds import ExpectedPrecision, PrelabelParams, PrelabelResult
from app.models.prediction import Prediction
from app.models.project import Project
from app.registry.algorithms import Algorithm, get_algorithm
from app.registry.training import predict_probabilities
from app.services import models as registry
from app.services.prelabels import ChunkDecisions, ModelSource, _write_chunk, resolve_source
from app.tasks.scoring import count_pool, pool_chunks

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

CHUNK = 2_000
MIN_CALIBRATION = 20


def calibration_set(
    session: Session, *, project: Project, source: ModelSource
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out (probabilities, true label index) pairs on human labels for this model.

    A registry version brings its own out-of-fold probabilities; for an external model they
    are its stored predictions on items humans have resolved.
    """
    index = {label: i for i, label in enumerate(source.labels)}
    if source.version is not None:
        oof = registry.load_oof_probabilities(session, source.version)
        y = np.array([index[label] for label in source.version.train_labels], dtype=np.int64)
        return oof.astype(np.float64), y
    rows = session.exec(
        select(Prediction.probabilities, Item.resolved_label)
        .join(Item, col(Item.id) == col(Prediction.item_id))
        .where(
            col(Prediction.project_id) == project.id,
            col(Prediction.model_version) == source.name,
            col(Item.resolved_by).in_(HUMAN_RESOLUTIONS),
        )
    ).all()
    probabilities = probability_matrix([stored for stored, _ in rows], source.labels)
    y = np.array([index.get(label or "", -1) for _, label in rows], dtype=np.int64)
    known = y >= 0
    return probabilities[known], y[known]


def run_prelabel(context: JobContext) -> PrelabelResult:
    """Job function. Read phase: predict and decide every candidate (cancellable, writes
    nothing). Write phase: apply the decisions chunk by chunk, each chunk one short
    transaction that locks its items, so annotators are never blocked for long; an item a
    human answered meanwhile is left alone. A re-run after a failed write phase is a no-op
    for the items already written."""
    asked = context.read_params(PrelabelParams)
    with context.database.session() as session:
        project = registry.load_project(session, context.project_id)
        source = resolve_source(session, project=project, requested=asked.model_version)
        thresholds, calibration = _thresholds(session, project, source, asked)
    # A label removed from the project since the model was trained is never written.
    allowed = np.array([label in project.labels for label in source.labels])
    thresholds = [t if allowed[k] else None for k, t in enumerate(thresholds)]
    cutoffs = np.array([np.inf if t is None else t for t in thresholds])
    # A pilot measures human agreement: every item needs two human answers, so nothing is
    # auto-accepted and a prediction is only a suggestion (the item stays in the label queue).
    pilot = project.phase == Phase.pilot
    if pilot:
        cutoffs = np.full_like(cutoffs, np.inf)
    context.progress(0.05)

    chunks, skipped = _read_phase(context, asked, project, source, allowed, cutoffs)
    accepted_ids = np.concatenate([c.ids[c.accept] for c in chunks] or [np.zeros(0, np.int64)])
    rng = np.random.default_rng(context.job_id)
    n_audit = int(np.ceil(asked.audit_share * len(accepted_ids)))
    audited = set(rng.choice(accepted_ids, n_audit, replace=False).tolist()) if n_audit else set()
    context.progress(0.7)  # past this point the job finishes what it started

    counts, per_label = _write_phase(context, project, source, chunks, audited, thresholds, pilot)

    estimate = expected_precision(
        calibration[0], calibration[1], thresholds, [per_label[k] for k in range(len(cutoffs))]
    )
    considered = sum(len(c.ids) for c in chunks) + skipped
    return PrelabelResult(
        model_version=source.name,
        mode="target_precision" if asked.target_precision is not None else "threshold",
        target_precision=asked.target_precision,
        thresholds=dict(zip(source.labels, thresholds, strict=True)),
        considered=considered,
        auto_accepted=counts["auto_accepted"],
        needs_review=counts["needs_review"],
        suggested=counts["suggested"],
        pilot=pilot,
        audited=counts["audited"],
        skipped=considered - counts["auto_accepted"] - counts["needs_review"] - counts["suggested"],
        expected_precision=ExpectedPrecision(
            estimate=estimate.estimate,
            ci_low=estimate.low,
            ci_high=estimate.high,
            n_calibration=estimate.n_calibration,
        ),
    )


def _read_phase(
    context: JobContext,
    asked: PrelabelParams,
    project: Project,
    source: ModelSource,
    allowed: np.ndarray,
    cutoffs: np.ndarray,
) -> tuple[list[ChunkDecisions], int]:
    """Predictions for every candidate: stored ones where they exist, else the registry
    version computes them. Returns the decided chunks and how many candidates had none."""
    pipeline = algorithm = None
    if source.version is not None:
        pipeline = registry.load_version(context.database, source.version)
        algorithm = get_algorithm(source.version.algorithm)
    chunks: list[ChunkDecisions] = []
    skipped = done = 0
    with context.database.session() as reader:
        total = (
            len(asked.item_ids)
            if asked.item_ids
            else count_pool(reader, project_id=project.id or 0)
        )
        if asked.limit:
            total = min(total, asked.limit)
        for rows in pool_chunks(
            reader,
            project_id=project.id or 0,
            chunk_size=CHUNK,
            with_data=algorithm is not None and algorithm.input == "features",
            item_ids=asked.item_ids,
            limit=asked.limit,
        ):
            chunk = _decide(reader, source, rows, pipeline, algorithm, allowed, cutoffs)
            chunks.append(chunk)
            skipped += len(rows) - len(chunk.ids)
            done += len(rows)
            context.progress(0.05 + 0.65 * min(done / max(total, 1), 1.0))
    return chunks, skipped


def _decide(
    reader: Session,
    source: ModelSource,
    rows: list[tuple[int, str, dict[str, Any]]],
    pipeline: "Pipeline | None",
    algorithm: Algorithm | None,
    allowed: np.ndarray,
    cutoffs: np.ndarray,
) -> ChunkDecisions:
    """One chunk's predictions (stored, or computed by the registry version for the items
    without one) and what to do with each item: its top allowed label, accepted or not."""
    ids, probabilities = _stored(reader, source, [r[0] for r in rows])
    new_ids: list[int] = []
    new_probabilities = None
    if pipeline is not None and algorithm is not None:
        have = set(ids)
        new_ids, inputs = registry.version_inputs(algorithm, [r for r in rows if r[0] not in have])
        if new_ids:
            new_probabilities = predict_probabilities(pipeline, inputs, len(source.labels))
            ids = ids + new_ids
            probabilities = np.vstack([probabilities, new_probabilities])
    masked = np.where(allowed, probabilities, 0.0)
    top = masked.argmax(axis=1) if len(ids) else np.zeros(0, np.int64)
    confidence = masked.max(axis=1) if len(ids) else np.zeros(0)
    return ChunkDecisions(
        ids=np.asarray(ids, dtype=np.int64),
        top=top,
        confidence=confidence,
        accept=confidence >= cutoffs[top],
        new_ids=new_ids,
        new_probabilities=None
        if new_probabilities is None
        else new_probabilities.astype(np.float32),
    )


def _write_phase(
    context: JobContext,
    project: Project,
    source: ModelSource,
    chunks: list[ChunkDecisions],
    audited: set[int],
    thresholds: list[float | None],
    pilot: bool,
) -> tuple[Counter[str], Counter[int]]:
    """Apply the decisions chunk by chunk, one short transaction each (no longer
    cancellable); returns the counts by outcome and the auto-accepts per label index."""
    counts: Counter[str] = Counter()
    per_label: Counter[int] = Counter()
    for index, chunk in enumerate(chunks):
        with context.database.session(write=True) as session:
            applied = _write_chunk(
                session, project, source, chunk, audited, thresholds, pilot=pilot
            )
            session.commit()
        for top, accept, audit in applied:
            counts["auto_accepted" if accept else "suggested" if pilot else "needs_review"] += 1
            counts["audited"] += audit
            per_label[top] += accept
        context.progress(0.7 + 0.3 * (index + 1) / len(chunks), cancellable=False)
    return counts, per_label


def _thresholds(
    session: Session, project: Project, source: ModelSource, asked: PrelabelParams
) -> tuple[list[float | None], tuple[np.ndarray, np.ndarray]]:
    calibration = calibration_set(session, project=project, source=source)
    target = asked.target_precision
    if target is None:
        assert asked.threshold is not None  # start_prelabel fills it in when no target is given
        return fixed_thresholds(asked.threshold, len(source.labels)), calibration
    if len(calibration[1]) < MIN_CALIBRATION:
        raise NotEnoughLabels(
            f"target_precision needs at least {MIN_CALIBRATION} human-labeled items with "
            f"predictions from {source.name} to calibrate on; there are {len(calibration[1])}."
        )
    return thresholds_for_precision(calibration[0], calibration[1], target), calibration


def probability_matrix(stored: Sequence[Mapping[str, float]], labels: list[str]) -> np.ndarray:
    """Stored {label: p} maps as an (n, len(labels)) matrix; labels not in `labels` drop."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(stored), len(labels)))
    for row, probabilities in enumerate(stored):
        for name, p in probabilities.items():
            if name in index:
                matrix[row, index[name]] = p
    return matrix


def _stored(
    session: Session, source: ModelSource, item_ids: list[int]
) -> tuple[list[int], np.ndarray]:
    found = session.exec(
        select(Prediction.item_id, Prediction.probabilities)
        .where(col(Prediction.model_version) == source.name, col(Prediction.item_id).in_(item_ids))
        .order_by(col(Prediction.item_id))
    ).all()
    probabilities = probability_matrix([stored for _, stored in found], source.labels)
    return [item_id for item_id, _ in found], probabilities
