"""Continuous labeling: production predictions in, a daily sample to review, disagreement out."""

from typing import Annotated

from fastapi import Query

from app.api.routing import PROJECT_PROBLEMS, ProblemRouter
from app.deps import NameQuery, NowDep, PageDep, ProjectDep, SessionDep, SettingsDep, WriterDep
from app.errors import Conflict, PayloadTooLarge, problem_responses
from app.models.production import (
    ProductionDisagreement,
    ProductionIngestReport,
    ProductionReport,
    ProductionSampleRequest,
    ReportBucket,
    SampleReason,
)
from app.pagination import Page
from app.services import production

router = ProblemRouter(
    prefix="/v1/projects/{project_id}/production-samples",
    tags=["production"],
    responses=PROJECT_PROBLEMS,
)

ModelVersionQuery = Annotated[NameQuery, Query(description="Only this production model_version.")]


@router.post("", responses=problem_responses(Conflict))
def create_production_samples(
    principal: WriterDep,
    session: SessionDep,
    settings: SettingsDep,
    project: ProjectDep,
    now: NowDep,
    body: ProductionSampleRequest,
) -> ProductionIngestReport:
    """Store production predictions with their items; send today's sample to human review."""
    if len(body.predictions) > settings.max_items_per_request:
        raise PayloadTooLarge(
            f"{len(body.predictions)} predictions in one request; the limit is "
            f"{settings.max_items_per_request}. Split them over several requests."
        )
    return production.record_production_predictions(
        session,
        project=project,
        entries=body.predictions,
        max_text_chars=settings.max_text_chars,
        now=now,
    )


@router.get("/report")
def get_production_report(
    principal: WriterDep,
    session: SessionDep,
    project: ProjectDep,
    bucket: Annotated[ReportBucket, Query(description="Periods of predicted_at (UTC).")] = "day",
    model_version: ModelVersionQuery = None,
    sample_reason: Annotated[
        SampleReason | None,
        Query(description="production_random alone gives unbiased rates in every breakdown."),
    ] = None,
) -> ProductionReport:
    """Model-vs-human disagreement on the reviewed sample: over time, per label, per version."""
    return production.production_report(
        session,
        project=project,
        bucket=bucket,
        model_version=model_version,
        sample_reason=sample_reason,
    )


@router.get("/disagreements")
def list_production_disagreements(
    principal: WriterDep,
    session: SessionDep,
    project: ProjectDep,
    page: PageDep,
    model_version: ModelVersionQuery = None,
    label: Annotated[NameQuery, Query(description="Only this production label.")] = None,
) -> Page[ProductionDisagreement]:
    """Sampled predictions a human decided otherwise, oldest first: training signal."""
    return production.list_disagreements(
        session, project=project, model_version=model_version, label=label, page=page
    )
