"""Jobs: long work (training, prelabelling, pool scoring, imports) answered with 202 and polled."""

from datetime import datetime
from enum import StrEnum
from typing import Any

import pydantic
import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.errors import Problem
from app.models.base import ResponseModel, timestamp_column, utcnow
from app.models.job_kinds import PARAMS_MODELS, RESULT_MODELS, JobParams, JobResult


class JobKind(StrEnum):
    train_model = "train_model"
    prelabel = "prelabel"
    score_pool = "score_pool"
    simulate_active_learning = "simulate_active_learning"
    apply_consensus = "apply_consensus"
    label_issues = "label_issues"
    synthetic = "synthetic"
    import_file = "import_file"
    import_sql = "import_sql"
    import_click_logs = "import_click_logs"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINISHED = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
# The job's bulk input (e.g. click-log sessions) lives in params under this key: kept in the row
# so the job (and a retry) can read it, left out of the public view so polling stays small.
PAYLOAD_PARAM = "payload"


class Job(SQLModel, table=True):
    __tablename__ = "job"
    __table_args__ = (
        sa.Index("ix_job_project_id", "project_id", "id"),
        sa.Index("ix_job_status", "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, sa.ForeignKey("project.id"))
    )
    kind: str = Field(sa_column=sa.Column(sa.String(30), nullable=False))
    status: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    progress: float = Field(default=0.0, sa_column=sa.Column(sa.Float, nullable=False))
    params: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    result: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON))
    error: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON))
    created_by: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    retry_of: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, sa.ForeignKey("job.id"))
    )
    cancel_requested: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False))
    # "host:pid" of the process running it; a dead owner means the job was interrupted.
    worker: str | None = Field(default=None, sa_column=sa.Column(sa.String(200)))
    heartbeat_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    started_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    finished_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class JobPublic(ResponseModel):
    id: int
    project_id: int | None
    kind: JobKind
    status: JobStatus
    progress: float = pydantic.Field(ge=0, le=1)
    params: JobParams = pydantic.Field(
        description="What the job was asked to do (bulk input such as click-log sessions left out)."
    )
    result: JobResult | None = pydantic.Field(
        description="What a succeeded job reports, by kind (docs/jobs.md)."
    )
    error: Problem | None
    retryable: bool = pydantic.Field(
        description="True when a failed or cancelled job can be re-run with POST .../retry."
    )
    retry_of: int | None
    worker: str | None = pydantic.Field(description='"host:pid" of the process that ran it.')
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> "JobPublic":
        """The public view of a row. Its params and result are read with its kind's models, so
        rows stored before they carried `kind` read the same."""
        assert job.id is not None
        public_params = {k: v for k, v in job.params.items() if k != PAYLOAD_PARAM}
        result = job.result
        return cls(
            id=job.id,
            project_id=job.project_id,
            kind=JobKind(job.kind),
            status=JobStatus(job.status),
            progress=job.progress,
            params=PARAMS_MODELS[job.kind].model_validate(public_params),
            result=None if result is None else RESULT_MODELS[job.kind].model_validate(result),
            error=Problem.model_validate(job.error) if job.error else None,
            retryable=job.status in (JobStatus.failed, JobStatus.cancelled),
            retry_of=job.retry_of,
            worker=job.worker,
            created_by=job.created_by,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )
