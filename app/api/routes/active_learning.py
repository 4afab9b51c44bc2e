"""Is active learning paying off? The online yardstick and the offline replay job."""

from typing import Annotated

from fastapi import Body, Response

from app.api.routes.jobs import ACCEPTED, accepted
from app.api.routing import PROJECT_PROBLEMS, ProblemRouter
from app.deps import AnyRoleDep, ProjectDep, RunnerDep, SessionDep, SettingsDep, WriterDep
from app.errors import NotEnoughLabels, problem_responses
from app.models.active_learning import ActiveLearningReport, SimulationRequest
from app.models.job import JobPublic
from app.services import active_learning

router = ProblemRouter(
    prefix="/v1/projects/{project_id}/active-learning",
    tags=["active-learning"],
    responses=PROJECT_PROBLEMS,
)


@router.get("")
def get_active_learning(
    principal: AnyRoleDep, session: SessionDep, project: ProjectDep
) -> ActiveLearningReport:
    """Model accuracy on the random share by training size, strategy use, the latest replay."""
    return active_learning.report(session, project=project)


@router.post(
    "/simulations", status_code=202, responses={**ACCEPTED, **problem_responses(NotEnoughLabels)}
)
def create_simulation(
    principal: WriterDep,
    session: SessionDep,
    runner: RunnerDep,
    project: ProjectDep,
    response: Response,
    settings: SettingsDep,
    body: Annotated[
        SimulationRequest,
        Body(examples=[{"strategies": ["margin"], "folds": 3, "batch_size": 100}]),
    ] = SimulationRequest(),
) -> JobPublic:
    """Replay the project's labels k-fold: learning curves and label savings; and the human
    answers needed to complete the labeled pool at target_pool_accuracy (202: a job)."""
    job = active_learning.start_simulation(
        session, runner, project=project, principal=principal, request=body, settings=settings
    )
    return accepted(response, job)
