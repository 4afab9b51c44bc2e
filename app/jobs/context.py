"""What a job function receives: its parameters, a database, progress reporting, cancellation."""

import os
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from sqlalchemy import update
from sqlmodel import col

from app.db import Database
from app.jobs.retries import with_fault_retries
from app.models.base import utcnow
from app.models.job import PAYLOAD_PARAM, Job, JobStatus
from app.settings import Settings

Model = TypeVar("Model", bound=BaseModel)


def worker_name() -> str:
    """ "host:pid" of this process; read each time, since a pre-forking server forks after
    import."""
    return f"{socket.gethostname()}:{os.getpid()}"


class JobRunner(Protocol):
    """Runs committed, queued jobs: child processes of the API process, or procrastinate workers."""

    def enqueue(self, job_id: int) -> None:
        """Schedule a committed, queued job."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class JobCancelled(Exception):
    """Raised at a progress point after someone asked to cancel the job."""


class JobLost(Exception):
    """Raised at a progress point when the job is no longer this process's to finish (the
    stale-job sweep failed it, e.g. after its heartbeats were blocked for too long)."""


@dataclass
class JobContext:
    job_id: int
    project_id: int | None
    params: dict[str, Any]
    database: Database
    settings: Settings
    # Jobs this one created; the runner enqueues them once this job's result is committed.
    follow_ups: list[int] = field(default_factory=list)

    def read_params(self, model: type[Model]) -> Model:
        """The params as the job kind's model (app/models/job_kinds.py); the bulk payload, if
        any, is not part of them."""
        return model.model_validate({k: v for k, v in self.params.items() if k != PAYLOAD_PARAM})

    def read_payload(self, model: type[Model]) -> Model:
        """The job's bulk input (e.g. click-log sessions), kept beside its params."""
        return model.model_validate(self.params[PAYLOAD_PARAM])

    def progress(self, fraction: float, *, cancellable: bool = True) -> None:
        """Record progress (0..1) and a heartbeat; raise JobCancelled if cancel was requested
        (unless the job is past the point where it can stop cleanly). A database fault is
        waited out for LABELWISE_JOB_FAULT_RETRY_SECONDS, then raised (the job fails with it).
        """

        def record() -> Job | None:
            with self.database.session(write=True) as session:
                session.exec(
                    update(Job)
                    .where(col(Job.id) == self.job_id, col(Job.status) == JobStatus.running)
                    .values(progress=round(min(max(fraction, 0.0), 1.0), 4), heartbeat_at=utcnow())
                )
                job = session.get(Job, self.job_id)
                session.commit()
                return job

        job = with_fault_retries(
            f"job {self.job_id}: progress", record, seconds=self.settings.job_fault_retry_seconds
        )
        if job is None or job.status != JobStatus.running:
            raise JobLost()
        if cancellable and job.cancel_requested:
            raise JobCancelled()
