"""The prelabel job: a model predicts each unsettled item; confident predictions are
auto-accepted, the rest go to review with a suggestion (app/services/prelabels.py has the
request side: queueing and the audit report). Each chunk's auto-accepts go through the one
annotation writer (app/services/annotation_writer.py)."""

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlmodel import Session, col, func, select

from app.errors import NotEnoughLabels
from app.jobs.context import JobContext
from app.ml.completion import (
    accept_within_budget,
    calibration_from_probabilities,
    error_budget,
    expected_errors,
)
from app.ml.thresholds import (
    expected_precision,
    fixed_thresholds,
    thresholds_for_precision,
)
from app.models.annotation import Annotation
from app.models.base import HUMAN_RESOLUTIONS, VOTE_SOURCES, AnnotationSource, Phase
from app.models.item import Item
from app.models.job_kinds import (
    ExpectedPrecision,
    PoolBudget,
    PrelabelMode,
    PrelabelParams,
    PrelabelResult,
)
from app.models.prediction import Prediction
from app.models.project import Project
from app.registry.algorithms import Algorithm, get_algorithm
from app.registry.training import predict_probabilities
from app.services import annotation_writer, item_status, model_versions
from app.services.model_sources import ModelSource, resolve_source
from app.services.predictions import prediction_rows, upsert_predictions
from app.services.prelabels import MODEL_ANNOTATOR
from app.services.project_loading import load_project
from app.tasks.scoring import count_pool, pool_chunks

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

CHUNK = 2_000
MIN_CALIBRATION = 20


@dataclass
class ChunkDecisions:
    """One chunk's predictions, decided in the read phase; compact so a 1M pool fits."""

    ids: np.ndarray
    top: np.ndarray
    confidence: np.ndarray
    accept: np.ndarray
    # Registry predictions computed now (no stored score yet), to store in the write phase.
    new_ids: list[int]
    new_probabilities: np.ndarray | None


def calibration_set(
    session: Session, *, project: Project, source: ModelSource
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out (probabilities, true label index) pairs on human labels for this model.

    A registry version brings its own out-of-fold probabilities; for an external model they
    are its stored predictions on items humans have resolved.
    """
    index = {label: i for i, label in enumerate(source.labels)}
    if source.version is not None:
        oof = model_versions.load_oof_probabilities(session, source.version)
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
        project = load_project(session, project_id=context.project_id)
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
    pool_budget = None
    if asked.target_pool_accuracy is not None:
        with context.database.session() as session:
            thresholds, pool_budget = _spend_pool_budget(
                session, project, chunks, calibration, allowed, asked.target_pool_accuracy, pilot
            )
    accepted_ids = np.concatenate([c.ids[c.accept] for c in chunks] or [np.zeros(0, np.int64)])
    rng = np.random.default_rng(context.job_id)
    n_audit = int(np.ceil(asked.audit_share * len(accepted_ids)))
    audited = set(rng.choice(accepted_ids, n_audit, replace=False).tolist()) if n_audit else set()
    context.progress(0.7)  # past this point the job finishes what it started

    # Unsure predictions wait for review, except in a pilot (a suggestion only) and in the
    # hands-off loop, whose unsure items stay in the label queue for batches to rank.
    suggest_only = pilot or not asked.unsure_to_review
    counts, per_label = _write_phase(
        context, project, source, chunks, audited, thresholds, suggest_only
    )

    estimate = expected_precision(
        calibration[0], calibration[1], thresholds, [per_label[k] for k in range(len(cutoffs))]
    )
    considered = sum(len(c.ids) for c in chunks) + skipped
    if pool_budget is not None:
        pool_budget.unsettled -= counts["auto_accepted"]
        if pool_budget.unsettled == 0:
            errors = pool_budget.committed_errors + pool_budget.expected_errors
            pool_budget.expected_pool_accuracy = round(1 - errors / pool_budget.pool_size, 4)
    mode: PrelabelMode = (
        "target_pool_accuracy"
        if asked.target_pool_accuracy is not None
        else "target_precision"
        if asked.target_precision is not None
        else "threshold"
    )
    return PrelabelResult(
        model_version=source.name,
        mode=mode,
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
        **({} if pool_budget is None else {"pool_budget": pool_budget}),
    )


def _spend_pool_budget(
    session: Session,
    project: Project,
    chunks: list[ChunkDecisions],
    calibration: tuple[np.ndarray, np.ndarray],
    allowed: np.ndarray,
    target: float,
    pilot: bool,
) -> tuple[list[float | None], PoolBudget]:
    """Mode target_pool_accuracy: decide every candidate's auto-accept at once, the most
    probably correct first, within the pool's error budget (app/ml/completion.py). Human
    answers count as correct; the model's current auto-accepts this run does not re-decide
    (outside item_ids or limit) count with their expected errors. Sets the chunks' accept
    masks; returns the confidence cut as every allowed label's threshold, and the budget."""
    probabilities, y = calibration
    calibrated = calibration_from_probabilities(np.where(allowed, probabilities, 0.0), y)
    confidence = np.concatenate([c.confidence for c in chunks] or [np.zeros(0)])
    ids = np.concatenate([c.ids for c in chunks] or [np.zeros(0, np.int64)])
    p_correct = calibrated(confidence)
    pool_size = session.exec(
        select(func.count()).select_from(Item).where(col(Item.project_id) == project.id)
    ).one()
    human = pool_size - count_pool(session, project_id=project.id or 0)
    earlier = session.exec(
        select(Annotation.item_id, Annotation.confidence).where(
            col(Annotation.project_id) == project.id,
            col(Annotation.is_current),
            col(Annotation.source) == AnnotationSource.model,
        )
    ).all()
    candidates = set(ids.tolist())
    kept = [confidence or 0.0 for item_id, confidence in earlier if item_id not in candidates]
    committed = expected_errors(calibrated(np.asarray(kept, dtype=np.float64)))
    budget = error_budget(pool_size=pool_size, target=target, committed_errors=committed)
    accepted = np.zeros(ids.shape[0], dtype=bool)
    if not pilot:
        accepted[accept_within_budget(p_correct, budget)] = True
    start = 0
    for chunk in chunks:
        chunk.accept = accepted[start : start + len(chunk.ids)]
        start += len(chunk.ids)
    cut = round(float(confidence[accepted].min()), 6) if accepted.any() else None
    thresholds = [cut if allowed[k] else None for k in range(allowed.shape[0])]
    return thresholds, PoolBudget(
        target_pool_accuracy=target,
        pool_size=pool_size,
        human_answered=human,
        error_budget=round((1 - target) * pool_size, 4),
        committed_errors=round(committed, 4),
        expected_errors=round(expected_errors(p_correct[accepted]), 4),
        expected_pool_accuracy=None,
        unsettled=pool_size - human - len(kept),
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
        pipeline = model_versions.load_version(context.database, source.version)
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
        new_ids, inputs = model_versions.version_inputs(
            algorithm, [r for r in rows if r[0] not in have]
        )
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
    suggest_only: bool,
) -> tuple[Counter[str], Counter[int]]:
    """Apply the decisions chunk by chunk, one short transaction each (no longer
    cancellable); returns the counts by outcome and the auto-accepts per label index."""
    counts: Counter[str] = Counter()
    per_label: Counter[int] = Counter()
    for index, chunk in enumerate(chunks):
        with context.database.session(write=True) as session:
            applied = _write_chunk(
                session, project, source, chunk, audited, thresholds, suggest_only=suggest_only
            )
            session.commit()
        for top, accept, audit in applied:
            outcome = "auto_accepted" if accept else "suggested" if suggest_only else "needs_review"
            counts[outcome] += 1
            counts["audited"] += audit
            per_label[top] += accept
        context.progress(0.7 + 0.3 * (index + 1) / len(chunks), cancellable=False)
    return counts, per_label


def _thresholds(
    session: Session, project: Project, source: ModelSource, asked: PrelabelParams
) -> tuple[list[float | None], tuple[np.ndarray, np.ndarray]]:
    calibration = calibration_set(session, project=project, source=source)
    target = asked.target_precision
    if asked.target_pool_accuracy is not None:
        if len(calibration[1]) < MIN_CALIBRATION:
            raise NotEnoughLabels(
                f"target_pool_accuracy needs at least {MIN_CALIBRATION} human-labeled items "
                f"with predictions from {source.name} to calibrate on; there are "
                f"{len(calibration[1])}. Answer more of the items it predicted (or use "
                "threshold, which needs no calibration)."
            )
        # Decided for the whole pool at once after the read phase: nothing before.
        return [None] * len(source.labels), calibration
    if target is None:
        assert asked.threshold is not None  # start_prelabel fills it in when no target is given
        return fixed_thresholds(asked.threshold, len(source.labels)), calibration
    if len(calibration[1]) < MIN_CALIBRATION:
        raise NotEnoughLabels(
            f"target_precision needs at least {MIN_CALIBRATION} human-labeled items with "
            f"predictions from {source.name} to calibrate on; there are {len(calibration[1])}. "
            "Answer more of the items it predicted (or use threshold, which needs no "
            "calibration)."
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


def _write_chunk(
    session: Session,
    project: Project,
    source: ModelSource,
    chunk: ChunkDecisions,
    audited: set[int],
    thresholds: list[float | None],
    *,
    suggest_only: bool,
) -> list[tuple[int, bool, bool]]:
    """Apply one chunk's decisions; return (label index, accepted, audited) per applied item.
    The items' review state is set here; the auto-accepts, and the withdrawal of earlier ones
    a prediction is no longer confident about, go through `annotation_writer`, which
    re-derives the items."""

    _store_new_predictions(session, project, source, chunk)
    ids = chunk.ids.tolist()
    # Items first, in id order (as annotation submits lock them), then their answers.
    items = {
        item.id: item
        for item in session.exec(
            select(Item).where(col(Item.id).in_(ids)).order_by(col(Item.id)).with_for_update()
        )
    }
    answered, implicit = _answered_items(session, ids)
    applied: list[tuple[int, bool, bool]] = []
    accepted: list[annotation_writer.MachineAnswer] = []
    unsure: list[tuple[int, str]] = []  # an earlier auto-accept of these is withdrawn
    for item, top, confidence, accept in _applicable(chunk, items, answered, implicit):
        assert item.id is not None
        label, audit = source.labels[top], accept and item.id in audited
        if accept:
            accepted.append(
                annotation_writer.MachineAnswer(
                    item_id=item.id,
                    annotator=MODEL_ANNOTATOR,
                    label=label,
                    source=AnnotationSource.model,
                    model_version=source.name,
                    confidence=confidence,
                    threshold=thresholds[top],
                )
            )
        else:
            unsure.append((item.id, MODEL_ANNOTATOR))
        _suggest(item, label, confidence, accept=accept, audit=audit, suggest_only=suggest_only)
        session.add(item)
        applied.append((top, accept, audit))
    session.flush()  # the review state the writer derives the items' status from
    # An auto-accept of the same label by the same model keeps the earlier one (and its
    # confidence), any other replaces it; an unsure prediction withdraws it.
    annotation_writer.write_annotations(
        session,
        project=project,
        default_annotator=MODEL_ANNOTATOR,
        entries=accepted,
        withdraw=unsure,
        refresh=[i for i in ids if i in items and i not in answered],
    )
    return applied


def _suggest(
    item: Item, label: str, confidence: float, *, accept: bool, audit: bool, suggest_only: bool
) -> None:
    """The model's suggestion on the item, and why it waits for a human, if it does: an
    audited auto-accept, or an unsure prediction (only a suggestion in a pilot and in the
    hands-off loop, whose unsure items stay in the label queue)."""
    below = None if suggest_only else "low_confidence"
    item.review_reason = ("audit" if audit else None) if accept else below
    item.suggested_label, item.suggestion_confidence = label, confidence


def _store_new_predictions(
    session: Session, project: Project, source: ModelSource, chunk: ChunkDecisions
) -> None:
    """The registry predictions the read phase computed, stored for later runs and reports."""
    if chunk.new_probabilities is None:
        return
    upsert_predictions(
        session,
        prediction_rows(
            project_id=project.id or 0,
            item_ids=chunk.new_ids,
            probabilities=chunk.new_probabilities,
            labels=source.labels,
            model_version=source.name,
            source="registry",
        ),
    )


def _applicable(
    chunk: ChunkDecisions, items: dict[int | None, Item], answered: set[int], implicit: set[int]
) -> Iterator[tuple[Item, int, float, bool]]:
    """The chunk's decisions that still apply, as (item, label index, confidence, accepted):
    not for an item gone or answered by a human since, nor an auto-accept over an implicit
    label, nor for a production sample."""
    for item_id, top, confidence, accept in zip(
        chunk.ids.tolist(),
        chunk.top.tolist(),
        chunk.confidence.tolist(),
        chunk.accept.tolist(),
        strict=True,
    ):
        item = items.get(item_id)
        if item is None or item_id in answered:
            continue  # a human answered while the model was predicting: humans win
        if accept and item_id in implicit:
            continue
        if item.review_reason in item_status.PRODUCTION_REASONS:
            continue  # a production sample waits for its reviewer: it measures that model
        yield item, top, round(confidence, 6), accept


def _answered_items(session: Session, item_ids: list[int]) -> tuple[set[int], set[int]]:
    """Of these items, those with a human (a vote's) answer, and those with an implicit label.
    An auto-accept would outrank users' implicit label and take the item out of the training
    set, so a confident prediction leaves such an item alone; an unsure one still sends it to
    review."""
    current = session.exec(
        select(Annotation.item_id, Annotation.source).where(
            col(Annotation.item_id).in_(item_ids), col(Annotation.is_current)
        )
    ).all()
    answered = {item_id for item_id, source in current if source in VOTE_SOURCES}
    implicit = {item_id for item_id, source in current if source == AnnotationSource.user_behavior}
    return answered, implicit
