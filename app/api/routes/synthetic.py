"""Synthetic generation: a job that asks the server's LLM for texts of one label.

Admin and service keys only: generation spends the server's LLM budget and adds items.
"""

from typing import Annotated

from fastapi import Body, Response

from app.api.routes.jobs import ACCEPTED, accepted
from app.api.routing import PROJECT_PROBLEMS, ProblemRouter
from app.deps import ProjectDep, RunnerDep, SessionDep, SettingsDep, WriterDep
from app.errors import LLMNotConfigured, SyntheticInProgress, problem_responses
from app.models.job import JobPublic
from app.models.synthetic import SyntheticRequest
from app.services import synthetic

router = ProblemRouter(
    prefix="/v1/projects/{project_id}/synthetic",
    tags=["synthetic"],
    responses=PROJECT_PROBLEMS,
)


@router.post(
    "",
    status_code=202,
    responses={**ACCEPTED, **problem_responses(SyntheticInProgress, LLMNotConfigured)},
)
def create_synthetic_items(
    principal: WriterDep,
    session: SessionDep,
    runner: RunnerDep,
    settings: SettingsDep,
    project: ProjectDep,
    response: Response,
    body: Annotated[
        SyntheticRequest,
        Body(examples=[{"label": "positive", "count": 20, "instructions": "Short reviews."}]),
    ],
) -> JobPublic:
    """Generate items of a label with the server's LLM, capped by synthetic_max_ratio (202: a
    job; 503 llm-not-configured without an endpoint)."""
    job = synthetic.start_generation(
        session, runner, project=project, principal=principal, request=body, settings=settings
    )
    return accepted(response, job)
