"""Synthetic items: an LLM behind an OpenAI-compatible endpoint configured on the server writes
texts for one label; they are validated, deduplicated, capped at the project's
synthetic_max_ratio and stored as items with `source: "synthetic"` and their provenance.

The intended label is kept in `metadata.synthetic.label` only, not as an annotation: every
annotation source means "someone decided this label" (a human, a model's auto-accept, an
import), and an LLM's intent is none of these. A synthetic item becomes training data once a
human labels it, which is also the check that the LLM wrote what it was asked for.

The job is app/tasks/synthetic.py; the LLM call itself (the openai client, retries with
backoff) is app.sources.llm.
"""

from sqlmodel import Session, col, select

from app.errors import (
    ErrorDetail,
    LLMNotConfigured,
    SyntheticInProgress,
    ValidationFailed,
)
from app.jobs.context import JobRunner
from app.models.job import Job, JobKind
from app.models.job_kinds import SyntheticParams
from app.models.project import Project
from app.models.synthetic import SyntheticRequest
from app.services import jobs
from app.services.api_keys import Principal
from app.settings import Settings

DEFAULT_TEMPERATURE = 0.9


def is_configured(settings: Settings) -> bool:
    return bool(settings.llm_base_url and settings.llm_model)


def require_configured(settings: Settings) -> None:
    """503 unless an LLM endpoint is configured: checked when queueing and when running."""
    if not is_configured(settings):
        raise LLMNotConfigured(
            "Synthetic generation needs an OpenAI-compatible LLM endpoint configured on the "
            "server: set LABELWISE_LLM_BASE_URL and LABELWISE_LLM_MODEL (and "
            "LABELWISE_LLM_API_KEY if the endpoint needs one). Nothing was queued."
        )


def start_generation(
    session: Session,
    runner: JobRunner,
    *,
    project: Project,
    principal: Principal,
    request: SyntheticRequest,
    settings: Settings,
) -> Job:
    """Queue a generation job. No endpoint configured is a 503, an unknown label a 422, a
    generation already on its way a 409: one at a time per project keeps the cap exact."""
    require_configured(settings)
    if request.label not in project.labels:
        raise ValidationFailed(
            f"label: {request.label!r} is not a label of this project "
            f"({', '.join(project.labels)}).",
            errors=[ErrorDetail(loc=["body", "label"], msg="not a label of this project")],
        )
    pending = session.exec(
        select(Job.id).where(
            col(Job.project_id) == project.id,
            col(Job.kind) == JobKind.synthetic,
            col(Job.status).in_(("queued", "running")),
        )
    ).first()
    if pending is not None:
        raise SyntheticInProgress(
            f"A synthetic generation is already on its way for this project (job {pending}); "
            "wait for it (GET /v1/jobs/{id}) or cancel it first.",
        )
    temperature = DEFAULT_TEMPERATURE if request.temperature is None else request.temperature
    return jobs.submit_job(
        session,
        runner,
        project_id=project.id,
        kind=JobKind.synthetic,
        params=SyntheticParams(
            label=request.label,
            count=request.count,
            instructions=request.instructions,
            temperature=temperature,
        ),
        created_by=principal.name,
    )
