"""The model registry: algorithms, training jobs, versions and activation."""

from typing import Annotated

from fastapi import Body, Path, Response

from app.api.routes.jobs import ACCEPTED, accepted
from app.api.routing import PROJECT_PROBLEMS, ProblemRouter
from app.deps import AnyRoleDep, PageDep, ProjectDep, RunnerDep, SessionDep, WriterDep
from app.errors import NotEnoughLabels, Unauthorized, problem_responses
from app.models.base import MAX_DB_ID
from app.models.job import JobPublic
from app.models.model_version import (
    Activation,
    AlgorithmPublic,
    ModelTrainRequest,
    ModelVersionPublic,
)
from app.pagination import Page, make_page
from app.registry.algorithms import ALGORITHMS
from app.services import model_versions

router = ProblemRouter(
    prefix="/v1/projects/{project_id}/models",
    tags=["model-versions"],
    responses=PROJECT_PROBLEMS,
)
algorithms_router = ProblemRouter(
    prefix="/v1/algorithms", tags=["model-versions"], responses=problem_responses(Unauthorized)
)

VersionPath = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="The version number.")]


@algorithms_router.get("")
def list_algorithms(principal: AnyRoleDep) -> list[AlgorithmPublic]:
    """List the registered algorithms and their default parameters."""
    return [
        AlgorithmPublic(
            name=a.name, description=a.description, input=a.input, default_params=dict(a.defaults)
        )
        for a in ALGORITHMS.values()
    ]


@router.post("", status_code=202, responses={**ACCEPTED, **problem_responses(NotEnoughLabels)})
def create_model_version(
    principal: WriterDep,
    session: SessionDep,
    runner: RunnerDep,
    project: ProjectDep,
    response: Response,
    body: Annotated[
        ModelTrainRequest,
        Body(
            examples=[
                {"algorithm": "hashed_tfidf_sgd", "params": {"alpha": 1e-5}, "activate": True}
            ]
        ),
    ] = ModelTrainRequest(),
) -> JobPublic:
    """Train a new version on the resolved labels, implicit ones weighted half (202: a job)."""
    job = model_versions.start_training(
        session, runner, project=project, principal=principal, request=body
    )
    return accepted(response, job)


@router.get("")
def list_model_versions(
    principal: AnyRoleDep, session: SessionDep, project: ProjectDep, page: PageDep
) -> Page[ModelVersionPublic]:
    """List model versions, newest first."""
    rows = model_versions.list_versions(session, project=project, page=page)
    return make_page(rows, page, ModelVersionPublic.of)


@router.get("/{version}")
def get_model_version(
    principal: AnyRoleDep, session: SessionDep, project: ProjectDep, version: VersionPath
) -> ModelVersionPublic:
    """Get one version with its cross-validated metrics."""
    return ModelVersionPublic.of(
        model_versions.get_version(session, project=project, version=version)
    )


@router.post("/{version}/activate")
def activate_model_version(
    principal: WriterDep,
    session: SessionDep,
    runner: RunnerDep,
    project: ProjectDep,
    version: VersionPath,
) -> Activation:
    """Make a version active; a job then scores the unlabeled pool with it."""
    chosen, job = model_versions.activate_version(
        session, runner, project=project, version=version, principal=principal
    )
    return Activation(model=ModelVersionPublic.of(chosen), scoring_job=JobPublic.of(job))
