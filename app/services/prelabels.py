"""Prelabels: a model predicts each unsettled item; confident predictions are auto-accepted
(annotations with source "model"), the rest go to human review with a suggestion, and an
audit share of the auto-accepts goes to review as well so their real precision is measured."""

from collections import defaultdict

from sqlmodel import Session, col, select

from app.jobs.context import JobRunner
from app.ml.thresholds import (
    wilson_interval,
)
from app.models.annotation import Annotation
from app.models.base import HUMAN_RESOLUTIONS
from app.models.item import Item
from app.models.job import Job, JobKind
from app.models.job_kinds import PrelabelParams
from app.models.prelabel import AuditVersion, PrelabelRequest
from app.models.project import Project
from app.services import jobs
from app.services.api_keys import Principal
from app.services.model_sources import resolve_source
from app.settings import Settings

# The annotator name of auto-accepts; API key names cannot contain ":", so it cannot clash.
MODEL_ANNOTATOR = "model:prelabel"


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
    pool_mode = request.target_pool_accuracy is not None
    if threshold is None and request.target_precision is None and not pool_mode:
        threshold = project.auto_accept_threshold
    audit_share = request.audit_share
    params = PrelabelParams(
        model_version=source.name,
        threshold=threshold,
        target_precision=request.target_precision,
        item_ids=request.item_ids,
        limit=request.limit,
        audit_share=settings.prelabel_audit_share if audit_share is None else audit_share,
        **({"target_pool_accuracy": request.target_pool_accuracy} if pool_mode else {}),
    )
    return jobs.submit_job(
        session,
        runner,
        project_id=project.id,
        kind=JobKind.prelabel,
        params=params,
        created_by=principal.name,
    )


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
                precision=agreed / len(reviewed) if reviewed else None,
                ci_low=float(low) if reviewed else None,
                ci_high=float(high) if reviewed else None,
            )
        )
    return report
