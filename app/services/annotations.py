"""Submit annotations in bulk (written by `annotation_writer`: one current per item and
annotator, history kept) and list them."""

from sqlmodel import Session, col, select

from app.errors import Forbidden
from app.jobs.context import JobRunner
from app.models.annotation import (
    Annotation,
    AnnotationIn,
    AnnotationReport,
)
from app.models.base import AnnotationSource
from app.models.job import Job
from app.models.project import Project
from app.pagination import PageRequest, keyset
from app.services import (
    annotation_writer,
    consensus,
    policy,
)
from app.services.api_keys import Principal


def _authorize(principal: Principal, entries: list[AnnotationIn]) -> None:
    """Annotator keys write only in their own name and only as humans; checked before any write."""
    if policy.may_act_for_others(principal):
        return
    for index, entry in enumerate(entries):
        if not policy.may_act_as(principal, entry.annotator):
            raise Forbidden(
                f"Entry {index}: an annotator key submits only as itself ({principal.name!r}), "
                f"not as {entry.annotator!r}."
            )
        if entry.source not in (None, AnnotationSource.human):
            raise Forbidden(f"Entry {index}: only admin and service keys may set source.")


def submit_annotations(
    session: Session,
    runner: JobRunner,
    *,
    project: Project,
    principal: Principal,
    entries: list[AnnotationIn],
) -> AnnotationReport:
    _authorize(principal, entries)
    report = annotation_writer.write_annotations(
        session, project=project, default_annotator=principal.name, entries=entries
    )
    follow_ups = (
        queue_follow_ups(session, project=project) if report.created or report.replaced else []
    )
    session.commit()
    for job in follow_ups:
        if job.id is not None:
            runner.enqueue(job.id)
    return report


def queue_follow_ups(session: Session, *, project: Project) -> list[Job]:
    """The jobs new answers call for (project-wide consensus); flushes, the caller commits and
    then enqueues them. Automatic retraining is decided off the request path
    (services/retrain_watch.py)."""
    job = consensus.queue_apply(session, project=project, created_by="consensus")
    return [job] if job is not None else []


def list_annotations(
    session: Session,
    *,
    viewer: Principal,
    project_id: int,
    annotator: str | None,
    item_id: int | None,
    source: AnnotationSource | None,
    include_history: bool,
    page: PageRequest,
) -> list[Annotation]:
    if policy.labels_blind(viewer):
        # Annotators label blind: they never see a colleague's answers.
        if annotator not in (None, viewer.name):
            raise Forbidden("An annotator key lists only its own annotations.")
        annotator = viewer.name
    query = select(Annotation).where(col(Annotation.project_id) == project_id)
    if not include_history:
        query = query.where(col(Annotation.is_current))
    if annotator is not None:
        query = query.where(col(Annotation.annotator) == annotator)
    if item_id is not None:
        query = query.where(col(Annotation.item_id) == item_id)
    if source is not None:
        query = query.where(col(Annotation.source) == source)
    return list(session.exec(keyset(query, col(Annotation.id), page)))
