"""Jobs as a resource: create (enqueued after commit), read, list, cancel, retry."""

from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, select

from app.errors import Conflict, NotFound
from app.jobs.context import JobRunner
from app.models.base import utcnow
from app.models.job import FINISHED, PAYLOAD_PARAM, Job, JobKind, JobStatus
from app.models.job_kinds import PARAMS_MODELS, JobParams
from app.pagination import PageRequest, keyset
from app.services import events


def new_job(
    session: Session,
    *,
    project_id: int | None,
    kind: JobKind,
    params: JobParams,
    created_by: str,
    payload: BaseModel | None = None,
) -> Job:
    """Add a queued job to the session (flushes; the caller commits, then enqueues). `payload`:
    bulk input the job reads, stored beside the params and left out of the public view."""
    assert isinstance(params, PARAMS_MODELS[kind]), (kind, type(params))
    stored = params.model_dump(mode="json")
    if payload is not None:
        stored[PAYLOAD_PARAM] = payload.model_dump(mode="json")
    return _add_job(session, project_id=project_id, kind=kind, params=stored, created_by=created_by)


def _add_job(
    session: Session,
    *,
    project_id: int | None,
    kind: JobKind,
    params: dict[str, Any],
    created_by: str,
    retry_of: int | None = None,
) -> Job:
    job = Job(
        project_id=project_id,
        kind=kind,
        status=JobStatus.queued,
        params=params,
        created_by=created_by,
        retry_of=retry_of,
    )
    session.add(job)
    session.flush()
    return job


def submit_job(
    session: Session,
    runner: JobRunner,
    *,
    project_id: int | None,
    kind: JobKind,
    params: JobParams,
    created_by: str,
    payload: BaseModel | None = None,
) -> Job:
    """Create a job, commit, and only then hand it to the runner (which re-reads it by id)."""
    job = new_job(
        session,
        project_id=project_id,
        kind=kind,
        params=params,
        created_by=created_by,
        payload=payload,
    )
    return commit_and_enqueue(session, runner, job)


def get_job(session: Session, *, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"No job with id {job_id}.")
    return job


def list_jobs(
    session: Session,
    *,
    project_id: int | None,
    status: JobStatus | None,
    kind: JobKind | None,
    page: PageRequest,
) -> list[Job]:
    query = select(Job)
    if project_id is not None:
        query = query.where(col(Job.project_id) == project_id)
    if status is not None:
        query = query.where(col(Job.status) == status)
    if kind is not None:
        query = query.where(col(Job.kind) == kind)
    return list(session.exec(keyset(query, col(Job.id), page)))


def cancel_job(session: Session, *, job_id: int) -> Job:
    """A queued job is cancelled at once; a running one stops at its next progress point."""
    job = session.exec(select(Job).where(col(Job.id) == job_id).with_for_update()).first()
    if job is None:
        raise NotFound(f"No job with id {job_id}.")
    if job.status in FINISHED:
        raise Conflict(
            f"Job {job_id} has already finished ({job.status}); there is nothing to cancel. "
            f"Its outcome is at GET /v1/jobs/{job_id}."
        )
    cancelled_now = job.status == JobStatus.queued
    if cancelled_now:
        job.status, job.finished_at = JobStatus.cancelled, utcnow()
    job.cancel_requested = True
    session.add(job)
    if cancelled_now:
        events.emit_job_finished(session, job)
    session.commit()
    return job


def retry_job(session: Session, runner: JobRunner, *, job_id: int, created_by: str) -> Job:
    """Run a failed or cancelled job again, as a new job with the same parameters (the row's,
    as stored: its payload too)."""
    old = get_job(session, job_id=job_id)
    if old.status not in (JobStatus.failed, JobStatus.cancelled):
        if old.status in (JobStatus.queued, JobStatus.running):
            todo = (
                f"wait for it to end (GET /v1/jobs/{job_id}), or cancel it first "
                f"(POST /v1/jobs/{job_id}/cancel)"
            )
        else:
            todo = "to run the same work again, start a new job the way this one was started"
        raise Conflict(
            f"Job {job_id} is {old.status}; only a failed or cancelled job can be retried: {todo}."
        )
    job = _add_job(
        session,
        project_id=old.project_id,
        kind=JobKind(old.kind),
        params=old.params,
        created_by=created_by,
        retry_of=job_id,
    )
    return commit_and_enqueue(session, runner, job)


def commit_and_enqueue(session: Session, runner: JobRunner, job: Job) -> Job:
    """Commit first, then enqueue: the runner re-reads the job by id, so it must be stored."""
    session.commit()
    assert job.id is not None
    runner.enqueue(job.id)
    return job
