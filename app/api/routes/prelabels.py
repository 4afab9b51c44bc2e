"""Prelabels: auto-accept confident predictions, send the rest to review with a suggestion."""

from typing import Annotated

from fastapi import Body, Response

from app.api.routes.jobs import ACCEPTED, accepted
from app.api.routing import PROJECT_PROBLEMS, ProblemRouter
from app.deps import AnyRoleDep, ProjectDep, RunnerDep, SessionDep, SettingsDep, WriterDep
from app.errors import NoActiveModel, NoPredictions, problem_responses
from app.models.job import JobPublic
from app.models.prelabel import AuditReport, PrelabelRequest
from app.services import prelabels

router = ProblemRouter(
    prefix="/v1/projects/{project_id}/prelabels",
    tags=["prelabels"],
    responses=PROJECT_PROBLEMS,
)


@router.post(
    "", status_code=202, responses={**ACCEPTED, **problem_responses(NoActiveModel, NoPredictions)}
)
def create_prelabels(
    principal: WriterDep,
    session: SessionDep,
    runner: RunnerDep,
    settings: SettingsDep,
    project: ProjectDep,
    response: Response,
    body: Annotated[
        PrelabelRequest, Body(examples=[{"target_precision": 0.95}, {"threshold": 0.9}])
    ] = PrelabelRequest(),
) -> JobPublic:
    """Prelabel unsettled items with the active (or named) model (202: a job)."""
    job = prelabels.start_prelabel(
        session, runner, project=project, principal=principal, request=body, settings=settings
    )
    return accepted(response, job)


@router.get("/audit")
def get_prelabel_audit(
    principal: AnyRoleDep, session: SessionDep, project: ProjectDep
) -> AuditReport:
    """The measured precision of auto-accepts, from the audited share humans have reviewed."""
    return AuditReport(model_versions=prelabels.audit_report(session, project=project))
