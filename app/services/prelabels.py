"""Prelabels: a model predicts each unsettled item; confident predictions are auto-accepted
(annotations with source "model"), the rest go to human review with a suggestion, and an
audit share of the auto-accepts goes to review as well so their real precision is measured."""

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sqlmodel import Session, col, select

from app.errors import ErrorDetail, NoActiveModel, NoPredictions, ValidationFailed
from app.jobs.context import JobRunner
from app.ml.thresholds import (
    wilson_interval,
)
from app.models.annotation import Annotation
from app.models.base import HUMAN_RESOLUTIONS, VOTE_SOURCES, AnnotationSource
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
            raise NoActiveModel(
                "This project has no active model: train one (POST .../models with "
                '"activate": true) or name an external model_version whose predictions you '
                "have posted.",
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
        raise NoPredictions(
            f"No predictions are stored for model_version {requested!r}; post them to "
            ".../predictions first.",
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
    The items' review state is set here; the auto-accepts, and the withdrawal of earlier ones
    a prediction is no longer confident about, go through `annotation_writer`, which
    re-derives the items."""
    # Imported here: the writer imports batches, which imports this module (resolve_source);
    # it can move to the top once resolve_source leaves this module (issue 20, part 2).
    from app.services import annotation_writer

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
        _suggest(item, label, confidence, accept=accept, audit=audit, pilot=pilot)
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
    item: Item, label: str, confidence: float, *, accept: bool, audit: bool, pilot: bool
) -> None:
    """The model's suggestion on the item, and why it waits for a human, if it does: an
    audited auto-accept, or an unsure prediction (in a pilot only a suggestion)."""
    below = None if pilot else "low_confidence"
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
