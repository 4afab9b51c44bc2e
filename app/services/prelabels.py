"""Prelabels: a model predicts each unsettled item; confident predictions are auto-accepted
(annotations with source "model"), the rest go to human review with a suggestion, and an
audit share of the auto-accepts goes to review as well so their real precision is measured."""

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlmodel import Session, col, select

from app.errors import Conflict
from app.jobs.context import JobContext, JobRunner
from app.ml.thresholds import (
    expected_precision,
    fixed_thresholds,
    thresholds_for_precision,
    wilson_interval,
)
from app.models.annotation import Annotation
from app.models.base import HUMAN_RESOLUTIONS, VOTE_SOURCES, AnnotationSource, Phase, utcnow
from app.models.item import Item
from app.models.job import Job, JobKind
from app.models.prediction import Prediction
from app.models.prelabel import AuditVersion, PrelabelRequest
from app.models.project import Project
from app.registry.algorithms import get_algorithm
from app.registry.training import predict_probabilities
from app.services import item_status, jobs, model_versions
from app.services.api_keys import Principal
from app.services.model_sources import ModelSource, resolve_source
from app.services.predictions import prediction_rows, upsert_predictions
from app.services.project_loading import load_project
from app.services.scoring import count_pool, pool_chunks
from app.settings import Settings

# The annotator name of auto-accepts; API key names cannot contain ":", so it cannot clash.
MODEL_ANNOTATOR = "model:prelabel"
CHUNK = 2_000
MIN_CALIBRATION = 20


def start_prelabel(
    session: Session,
    runner: JobRunner,
    *,
    project: Project,
    principal: Principal,
    request: PrelabelRequest,
    settings: Settings,
) -> Job:
    source = resolve_source(session, project=project, requested=request.model_version)
    threshold = request.threshold
    if threshold is None and request.target_precision is None:
        threshold = project.auto_accept_threshold
    audit_share = request.audit_share
    params = {
        "model_version": source.name,
        "threshold": threshold,
        "target_precision": request.target_precision,
        "item_ids": request.item_ids,
        "limit": request.limit,
        "audit_share": settings.prelabel_audit_share if audit_share is None else audit_share,
    }
    return jobs.submit_job(
        session,
        runner,
        project_id=project.id,
        kind=JobKind.prelabel,
        params=params,
        created_by=principal.name,
    )


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


def run_prelabel(context: JobContext) -> dict[str, Any]:
    """Job function. Read phase: predict and decide every candidate (cancellable, writes
    nothing). Write phase: apply the decisions chunk by chunk, each chunk one short
    transaction that locks its items, so annotators are never blocked for long; an item a
    human answered meanwhile is left alone. A re-run after a failed write phase is a no-op
    for the items already written."""
    params = context.params
    with context.database.session() as session:
        project = load_project(session, project_id=context.project_id)
        source = resolve_source(session, project=project, requested=params["model_version"])
        thresholds, calibration = _thresholds(session, project, source, params)
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

    chunks, skipped = _read_phase(context, project, source, allowed, cutoffs)
    accepted_ids = np.concatenate([c.ids[c.accept] for c in chunks] or [np.zeros(0, np.int64)])
    rng = np.random.default_rng(context.job_id)
    n_audit = int(np.ceil(params["audit_share"] * len(accepted_ids)))
    audited = set(rng.choice(accepted_ids, n_audit, replace=False).tolist()) if n_audit else set()
    context.progress(0.7)  # past this point the job finishes what it started

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

    estimate = expected_precision(
        calibration[0], calibration[1], thresholds, [per_label[k] for k in range(len(cutoffs))]
    )
    considered = sum(len(c.ids) for c in chunks) + skipped
    return {
        "model_version": source.name,
        "mode": "target_precision" if params["target_precision"] is not None else "threshold",
        "target_precision": params["target_precision"],
        "thresholds": dict(zip(source.labels, thresholds, strict=True)),
        "considered": considered,
        "auto_accepted": counts["auto_accepted"],
        "needs_review": counts["needs_review"],
        "suggested": counts["suggested"],
        "pilot": pilot,
        "audited": counts["audited"],
        "skipped": considered
        - counts["auto_accepted"]
        - counts["needs_review"]
        - counts["suggested"],
        "expected_precision": {
            "estimate": estimate.estimate,
            "ci_low": estimate.low,
            "ci_high": estimate.high,
            "n_calibration": estimate.n_calibration,
        },
    }


def _read_phase(
    context: JobContext,
    project: Project,
    source: ModelSource,
    allowed: np.ndarray,
    cutoffs: np.ndarray,
) -> tuple[list[ChunkDecisions], int]:
    """Predictions for every candidate: stored ones where they exist, else the registry
    version computes them. Returns the decided chunks and how many candidates had none."""
    params = context.params
    pipeline = algorithm = None
    if source.version is not None:
        pipeline = model_versions.load_version(context.database, source.version)
        algorithm = get_algorithm(source.version.algorithm)
    chunks: list[ChunkDecisions] = []
    skipped = done = 0
    with context.database.session() as reader:
        total = (
            len(params["item_ids"])
            if params["item_ids"]
            else count_pool(reader, project_id=project.id or 0)
        )
        if params["limit"]:
            total = min(total, params["limit"])
        for rows in pool_chunks(
            reader,
            project_id=project.id or 0,
            chunk_size=CHUNK,
            with_data=algorithm is not None and algorithm.input == "features",
            item_ids=params["item_ids"],
            limit=params["limit"],
        ):
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
            chunks.append(
                ChunkDecisions(
                    ids=np.asarray(ids, dtype=np.int64),
                    top=top,
                    confidence=confidence,
                    accept=confidence >= cutoffs[top],
                    new_ids=new_ids,
                    new_probabilities=None
                    if new_probabilities is None
                    else new_probabilities.astype(np.float32),
                )
            )
            skipped += len(rows) - len(ids)
            done += len(rows)
            context.progress(0.05 + 0.65 * min(done / max(total, 1), 1.0))
    return chunks, skipped


def _thresholds(
    session: Session, project: Project, source: ModelSource, params: dict[str, Any]
) -> tuple[list[float | None], tuple[np.ndarray, np.ndarray]]:
    calibration = calibration_set(session, project=project, source=source)
    target = params["target_precision"]
    if target is None:
        return fixed_thresholds(params["threshold"], len(source.labels)), calibration
    if len(calibration[1]) < MIN_CALIBRATION:
        raise Conflict(
            f"target_precision needs at least {MIN_CALIBRATION} human-labeled items with "
            f"predictions from {source.name} to calibrate on; there are {len(calibration[1])}.",
            slug="not-enough-labels",
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
    pilot: bool,
) -> list[tuple[int, bool, bool]]:
    """Apply one chunk's decisions; return (label index, accepted, audited) per applied item.
    In a pilot a prediction below the threshold is a suggestion, not a review case."""
    if chunk.new_probabilities is not None:
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
    ids = chunk.ids.tolist()
    # Items first, in id order (as annotation submits lock them), then their answers.
    items = {
        item.id: item
        for item in session.exec(
            select(Item).where(col(Item.id).in_(ids)).order_by(col(Item.id)).with_for_update()
        )
    }
    current = session.exec(
        select(Annotation).where(col(Annotation.item_id).in_(ids), col(Annotation.is_current))
    ).all()
    answered = {a.item_id for a in current if a.source in VOTE_SOURCES}
    # An auto-accept would outrank users' implicit label and take the item out of the training
    # set, so a confident prediction leaves it alone; an unsure one still sends it to review.
    implicit = {a.item_id for a in current if a.source == AnnotationSource.user_behavior}
    previous = {a.item_id: a for a in current if a.annotator == MODEL_ANNOTATOR}
    now = utcnow()
    applied: list[tuple[int, bool, bool]] = []
    new_annotations: list[Annotation] = []
    for item_id, top, confidence, accept in zip(
        ids, chunk.top.tolist(), chunk.confidence.tolist(), chunk.accept.tolist(), strict=True
    ):
        item = items.get(item_id)
        if item is None or item_id in answered:
            continue  # a human answered while the model was predicting: humans win
        if accept and item_id in implicit:
            continue
        if item.review_reason in item_status.PRODUCTION_REASONS:
            continue  # a production sample waits for its reviewer: it measures that model
        label, confidence = source.labels[top], round(confidence, 6)
        old = previous.get(item_id)
        keep = accept and old is not None and (old.label, old.model_version) == (label, source.name)
        if old is not None and not keep:
            old.is_current, old.replaced_at = False, now
            session.add(old)
        if accept and not keep:
            new_annotations.append(
                Annotation(
                    project_id=project.id or 0,
                    item_id=item_id,
                    annotator=MODEL_ANNOTATOR,
                    label=label,
                    abstain=False,
                    source=AnnotationSource.model,
                    model_version=source.name,
                    confidence=confidence,
                    threshold=thresholds[top],
                    is_current=True,
                    created_at=now,
                )
            )
        audit = accept and item_id in audited
        below = None if pilot else "low_confidence"
        item.review_reason = ("audit" if audit else None) if accept else below
        item.suggested_label, item.suggestion_confidence = label, confidence
        session.add(item)
        applied.append((top, accept, audit))
    session.flush()  # retire replaced answers first: one current annotation per annotator
    session.add_all(new_annotations)
    session.flush()
    item_status.refresh_items(
        session, project=project, item_ids=[i for i in ids if i in items and i not in answered]
    )
    return applied


def audit_report(session: Session, *, project: Project) -> list[AuditVersion]:
    """Per model version: audited auto-accepts, how many humans have answered, and the
    precision the answers measure (with a 95% Wilson interval)."""
    rows = session.exec(
        select(Annotation.model_version, Annotation.label, Item.resolved_label, Item.resolved_by)
        .join(Item, col(Item.id) == col(Annotation.item_id))
        .where(
            col(Annotation.project_id) == project.id,
            col(Annotation.annotator) == MODEL_ANNOTATOR,
            col(Annotation.is_current),
            col(Item.review_reason) == "audit",
        )
    ).all()
    by_version: dict[str, list[tuple[str | None, str | None, str | None]]] = defaultdict(list)
    for version, label, resolved, resolved_by in rows:
        by_version[version or ""].append((label, resolved, resolved_by))
    report = []
    for version, entries in sorted(by_version.items()):
        reviewed = [(label, resolved) for label, resolved, by in entries if by in HUMAN_RESOLUTIONS]
        agreed = sum(1 for label, resolved in reviewed if label == resolved)
        low, high = wilson_interval(agreed, len(reviewed))
        report.append(
            AuditVersion(
                model_version=version,
                audited=len(entries),
                reviewed=len(reviewed),
                agreed=agreed,
                precision=round(agreed / len(reviewed), 4) if reviewed else None,
                ci_low=round(low, 4) if reviewed else None,
                ci_high=round(high, 4) if reviewed else None,
            )
        )
    return report
