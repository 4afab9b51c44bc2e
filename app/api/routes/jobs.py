"""Jobs: poll, list, cancel and retry long-running work."""

from typing import Any

from fastapi import Response

from app.api.routing import ProblemRouter
from app.deps import IdPath, IdQuery, PageDep, RunnerDep, SessionDep, WriterDep
from app.errors import (
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
    problem_responses,
)
from app.models.job import Job, JobKind, JobPublic, JobStatus
from app.pagination import Page, make_page
from app.services import jobs

router = ProblemRouter(
    prefix="/v1/jobs",
    tags=["jobs"],
    responses=problem_responses(Unauthorized, Forbidden, ValidationFailed),
)


ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted: the work runs as a job; poll the Location.",
        "headers": {
            "Location": {"description": "/v1/jobs/{id} of the job", "schema": {"type": "string"}}
        },
    }
}


def accepted(response: Response, job: Job) -> JobPublic:
    """The 202 answer for work that continues in the background: the job and its Location."""
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobPublic.of(job)


@router.get("/{job_id}", responses=problem_responses(NotFound))
def get_job(principal: WriterDep, session: SessionDep, job_id: IdPath) -> JobPublic:
    """Poll a job: status, progress, result or problem (admin and service keys: annotators
    start no jobs, and a job's params can hold an import's SQL or file names)."""
    return JobPublic.of(jobs.get_job(session, job_id=job_id))


@router.get("")
def list_jobs(
    principal: WriterDep,
    session: SessionDep,
    page: PageDep,
    project_id: IdQuery = None,
    status: JobStatus | None = None,
    kind: JobKind | None = None,
) -> Page[JobPublic]:
    """List jobs in creation order, optionally by project, status and kind (admin and service
    keys)."""
    rows = jobs.list_jobs(session, project_id=project_id, status=status, kind=kind, page=page)
    return make_page(rows, page, JobPublic.of)


@router.post("/{job_id}/cancel", responses=problem_responses(NotFound, Conflict))
def cancel_job(principal: WriterDep, session: SessionDep, job_id: IdPath) -> JobPublic:
    """Cancel a job: at once if queued, at its next progress point if running (409 if done)."""
    return JobPublic.of(jobs.cancel_job(session, job_id=job_id))


@router.post(
    "/{job_id}/retry",
    status_code=202,
    responses={**ACCEPTED, **problem_responses(NotFound, Conflict)},
)
def retry_job(
    principal: WriterDep, session: SessionDep, runner: RunnerDep, job_id: IdPath, response: Response
) -> JobPublic:
    """Re-run a failed or cancelled job as a new job with the same parameters."""
    job = jobs.retry_job(session, runner, job_id=job_id, created_by=principal.name)
    return accepted(response, job)
