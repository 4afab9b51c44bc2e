"""Prelabels: a model predicts each unsettled item; confident predictions are auto-accepted
(annotations with source "model"), the rest go to human review with a suggestion, and an
audit share of the auto-accepts goes to review as well so their real precision is measured."""

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from sqlmodel import Session, col, select

from app.errors import Conflict, ErrorDetail, ValidationFailed
from app.jobs.context import JobRunner
from app.ml.thresholds import wilson_interval
from app.models.annotation import Annotation
from app.models.base import HUMAN_RESOLUTIONS, VOTE_SOURCES, AnnotationSource, utcnow
from app.models.item import Item
from app.models.job import Job, JobKind
from app.models.job_kinds import PrelabelParams
from app.models.model_version import ModelVersion, registry_version_name
from app.models.prediction import Prediction
from app.models.prelabel import AuditVersion, PrelabelRequest
from app.models.project import Project
from app.services import item_status, jobs
from app.services import models as registry
from app.services.api_keys import Principal
from app.services.predictions import REGISTRY_PREFIX, prediction_rows, upsert_predictions
from app.settings import Settings

# The annotator name of auto-accepts; API key names cannot contain ":", so it cannot clash.
MODEL_ANNOTATOR = "model:prelabel"


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
        select(Prediction.id)
        .where(col(Prediction.project_id) == project.id, col(Prediction.model_version) == requested)
        .limit(1)
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
    params = PrelabelParams(
        model_version=source.name,
        threshold=threshold,
        target_precision=request.target_precision,
        item_ids=request.item_ids,
        limit=request.limit,
        audit_share=settings.prelabel_audit_share if audit_share is None else audit_share,
    )
    return jobs.submit_job(
        session,
        runner,
        project_id=project.id,
        kind=JobKind.prelabel,
        params=params,
        created_by=principal.name,
    )


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
