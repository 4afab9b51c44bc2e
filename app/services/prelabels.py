"""Prelabels: a model predicts each unsettled item; confident predictions are auto-accepted
(annotations with source "model"), the rest go to human review with a suggestion, and an
audit share of the auto-accepts goes to review as well so their real precision is measured."""

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlmodel import Session, col, select

from app.errors import Conflict, ErrorDetail, ValidationFailed
from app.jobs.context import JobContext, JobRunner
from app.ml.thresholds import (
    expected_precision,
    fixed_thresholds,
    thresholds_for_precision,
    wilson_interval,
)
from app.models.annotation import Annotation
from app.models.base import AnnotationSource, utcnow
from app.models.item import Item
from app.models.job import Job, JobKind
from app.models.model_version import ModelVersion, registry_version_name
from app.models.prediction import Prediction
from app.models.prelabel import AuditVersion, PrelabelRequest
from app.models.project import Project
from app.registry.algorithms import get_algorithm
from app.registry.training import predict_probabilities
from app.services import item_status, jobs
from app.services import models as registry
from app.services.api_keys import Principal
from app.services.predictions import REGISTRY_PREFIX, prediction_rows, upsert_predictions
from app.services.scoring import count_pool, pool_chunks
from app.settings import Settings

# The annotator name of auto-accepts; API key names cannot contain ":", so it cannot clash.
MODEL_ANNOTATOR = "model:prelabel"
CHUNK = 2_000
MIN_CALIBRATION = 20


@dataclass
class ModelSource:
    name: str
    labels: list[str]
    version: ModelVersion | None  # None for an external model's stored predictions


def resolve_source(session: Session, *, project: Project, requested: str | None) -> ModelSource:
    if requested is None:
        version = registry.active_version(session, project=project)
        if version is None:
            raise Conflict(
                "This project has no active model: train one (POST .../models with "
                '"activate": true) or name an external model_version whose predictions you '
                "have posted.",
                slug="no-active-model",
            )
        return ModelSource(registry_version_name(version.version), version.labels, version)
    if requested.startswith(REGISTRY_PREFIX):
        number = requested.removeprefix(REGISTRY_PREFIX)
        if not number.isdigit():
            raise ValidationFailed(
                f"{requested!r} is not a registry version name (registry:<number>).",
                errors=[ErrorDetail(loc=["body", "model_version"], msg="bad registry name")],
            )
        version = registry.get_version(session, project=project, version=int(number))
        return ModelSource(requested, version.labels, version)
    stored = session.exec(
        select(Prediction.id).where(
            col(Prediction.project_id) == project.id, col(Prediction.model_version) == requested
        )
    ).first()
    if stored is None:
        raise Conflict(
            f"No predictions are stored for model_version {requested!r}; post them to "
            ".../predictions first.",
            slug="no-predictions",
        )
    return ModelSource(requested, sorted(project.labels), None)


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
        oof = registry.load_oof_probabilities(session, source.version)
        y = np.array([index[label] for label in source.version.train_labels], dtype=np.int64)
        return oof.astype(np.float64), y
    rows = session.exec(
        select(Prediction.probabilities, Item.resolved_label)
        .join(Item, col(Item.id) == col(Prediction.item_id))
        .where(
            col(Prediction.project_id) == project.id,
            col(Prediction.model_version) == source.name,
            col(Item.resolved_by).in_(registry.HUMAN_RESOLUTIONS),
        )
    ).all()
    probabilities = np.zeros((len(rows), len(source.labels)))
    y = np.zeros(len(rows), dtype=np.int64)
    for row, (stored, label) in enumerate(rows):
        for name, p in stored.items():
            if name in index:
                probabilities[row, index[name]] = p
        y[row] = index.get(label or "", -1)
    known = y >= 0
    return probabilities[known], y[known]


@dataclass
class Decision:
    item_id: int
    label: str
    confidence: float
    threshold: float | None
    accept: bool


def run_prelabel(context: JobContext) -> dict[str, Any]:
    """Job function: decide every candidate item, then write all decisions in one commit."""
    params = context.params
    with context.database.session() as session:
        project = registry.load_project(session, context.project_id)
        source = resolve_source(session, project=project, requested=params["model_version"])
        thresholds, calibration = _thresholds(session, project, source, params)
    context.progress(0.05)

    decisions: list[Decision] = []
    rows: list[dict[str, Any]] = []
    skipped = 0
    pipeline = algorithm = None
    if source.version is not None:
        pipeline = registry.load_version(context.database, source.version)
        algorithm = get_algorithm(source.version.algorithm)
    with context.database.session() as reader:
        total = (
            len(params["item_ids"])
            if params["item_ids"]
            else count_pool(reader, project_id=project.id or 0)
        )
        if params["limit"]:
            total = min(total, params["limit"])
        for chunk in pool_chunks(
            reader,
            project_id=project.id or 0,
            chunk_size=CHUNK,
            with_data=algorithm is not None and algorithm.input == "features",
            item_ids=params["item_ids"],
            limit=params["limit"],
        ):
            if source.version is not None:
                assert algorithm is not None
                ids, inputs = registry.version_inputs(algorithm, chunk)
                probabilities = (
                    predict_probabilities(pipeline, inputs, len(source.labels))
                    if ids
                    else np.zeros((0, len(source.labels)))
                )
                rows.extend(
                    prediction_rows(
                        project_id=project.id or 0,
                        item_ids=ids,
                        probabilities=probabilities,
                        labels=source.labels,
                        model_version=source.name,
                        source="registry",
                    )
                )
            else:
                ids, probabilities = _stored(reader, source, [r[0] for r in chunk])
            skipped += len(chunk) - len(ids)
            decisions.extend(_decide(ids, probabilities, source.labels, thresholds))
            done = len(decisions) + skipped
            context.progress(0.05 + 0.8 * min(done / max(total, 1), 1.0))

    accepted = [d for d in decisions if d.accept]
    rng = np.random.default_rng(context.job_id)
    n_audit = int(np.ceil(params["audit_share"] * len(accepted))) if accepted else 0
    audited = {accepted[i].item_id for i in rng.choice(len(accepted), n_audit, replace=False)}

    with context.database.session(write=True) as session:
        project = registry.load_project(session, context.project_id, lock=True)
        written = _write(session, project, source, decisions, audited, rows)
        session.commit()

    per_label = Counter(source.labels.index(d.label) for d in written if d.accept)
    estimate = expected_precision(
        calibration[0],
        calibration[1],
        thresholds,
        [per_label.get(k, 0) for k in range(len(source.labels))],
    )
    return {
        "model_version": source.name,
        "mode": "target_precision" if params["target_precision"] is not None else "threshold",
        "target_precision": params["target_precision"],
        "thresholds": {label: t for label, t in zip(source.labels, thresholds, strict=True)},
        "considered": len(decisions) + skipped,
        "auto_accepted": sum(1 for d in written if d.accept),
        "needs_review": sum(1 for d in written if not d.accept),
        "audited": len(audited & {d.item_id for d in written}),
        "skipped": skipped + len(decisions) - len(written),
        "expected_precision": {
            "estimate": estimate.estimate,
            "ci_low": estimate.low,
            "ci_high": estimate.high,
            "n_calibration": estimate.n_calibration,
        },
    }


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


def _stored(
    session: Session, source: ModelSource, item_ids: list[int]
) -> tuple[list[int], np.ndarray]:
    index = {label: i for i, label in enumerate(source.labels)}
    found = session.exec(
        select(Prediction.item_id, Prediction.probabilities)
        .where(col(Prediction.model_version) == source.name, col(Prediction.item_id).in_(item_ids))
        .order_by(col(Prediction.item_id))
    ).all()
    probabilities = np.zeros((len(found), len(source.labels)))
    for row, (_, stored) in enumerate(found):
        for name, p in stored.items():
            if name in index:
                probabilities[row, index[name]] = p
    return [item_id for item_id, _ in found], probabilities


def _decide(
    ids: list[int], probabilities: np.ndarray, labels: list[str], thresholds: list[float | None]
) -> list[Decision]:
    if not ids:
        return []
    top = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    decisions = []
    for item_id, k, p in zip(ids, top.tolist(), confidence.tolist(), strict=True):
        threshold = thresholds[k]
        accept = threshold is not None and p >= threshold
        decisions.append(Decision(item_id, labels[k], round(p, 6), threshold, accept))
    return decisions


def _write(
    session: Session,
    project: Project,
    source: ModelSource,
    decisions: list[Decision],
    audited: set[int],
    rows: list[dict[str, Any]],
) -> list[Decision]:
    """Apply the decisions to items no human has answered meanwhile; return those applied."""
    now = utcnow()
    written: list[Decision] = []
    for start in range(0, len(rows), CHUNK):
        upsert_predictions(session, rows[start : start + CHUNK])
    for start in range(0, len(decisions), 500):
        chunk = decisions[start : start + 500]
        ids = [d.item_id for d in chunk]
        current = session.exec(
            select(Annotation).where(col(Annotation.item_id).in_(ids), col(Annotation.is_current))
        ).all()
        answered = {a.item_id for a in current if a.source != AnnotationSource.model}
        previous = {a.item_id: a for a in current if a.annotator == MODEL_ANNOTATOR}
        items = {i.id: i for i in session.exec(select(Item).where(col(Item.id).in_(ids)))}
        for decision in chunk:
            item = items.get(decision.item_id)
            if item is None or decision.item_id in answered:
                continue  # a human answered while the model was predicting: humans win
            old = previous.get(decision.item_id)
            keep = (
                old is not None
                and decision.accept
                and (old.label, old.model_version)
                == (
                    decision.label,
                    source.name,
                )
            )
            if old is not None and not keep:
                old.is_current, old.replaced_at = False, now
                session.add(old)
            if decision.accept:
                if not keep:
                    session.flush()  # one current annotation per (item, annotator)
                    session.add(
                        Annotation(
                            project_id=project.id or 0,
                            item_id=decision.item_id,
                            annotator=MODEL_ANNOTATOR,
                            label=decision.label,
                            abstain=False,
                            source=AnnotationSource.model,
                            model_version=source.name,
                            confidence=decision.confidence,
                            threshold=decision.threshold,
                            is_current=True,
                            created_at=now,
                        )
                    )
                item.review_reason = "audit" if decision.item_id in audited else None
            else:
                item.review_reason = "low_confidence"
            item.suggested_label, item.suggestion_confidence = decision.label, decision.confidence
            session.add(item)
            written.append(decision)
        session.flush()
    item_status.refresh_items(session, project=project, item_ids=[d.item_id for d in written])
    return written


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
        reviewed = [(label, resolved) for label, resolved, by in entries if by == "consensus"]
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
