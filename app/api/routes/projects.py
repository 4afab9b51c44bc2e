"""Projects: labeling task definitions, and their statistics."""

from app.api.routing import ProblemRouter
from app.deps import AnyRoleDep, PageDep, ProjectDep, RunnerDep, SessionDep, WriterDep
from app.errors import (
    AgreementBelowThreshold,
    Conflict,
    Forbidden,
    NoActiveModel,
    NotFound,
    Unauthorized,
    ValidationFailed,
    problem_responses,
)
from app.models.project import PhaseChangePublic, ProjectCreate, ProjectPublic, ProjectUpdate
from app.models.stats import ProjectStats
from app.pagination import Page, make_page
from app.services import projects, stats

router = ProblemRouter(
    prefix="/v1/projects",
    tags=["projects"],
    responses=problem_responses(Unauthorized, Forbidden, ValidationFailed),
)


@router.post("", status_code=201, responses=problem_responses(Conflict))
def create_project(principal: WriterDep, session: SessionDep, body: ProjectCreate) -> ProjectPublic:
    """Create a project."""
    return ProjectPublic.model_validate(projects.create_project(session, data=body).model_dump())


@router.get("")
def list_projects(principal: AnyRoleDep, session: SessionDep, page: PageDep) -> Page[ProjectPublic]:
    """List projects, oldest first."""
    rows = projects.list_projects(session, page=page)
    return make_page(rows, page, lambda r: ProjectPublic.model_validate(r.model_dump()))


@router.get("/{project_id}", responses=problem_responses(NotFound))
def get_project(principal: AnyRoleDep, project: ProjectDep) -> ProjectPublic:
    """Get a project."""
    return ProjectPublic.model_validate(project.model_dump())


@router.patch(
    "/{project_id}",
    responses=problem_responses(NotFound, Conflict, AgreementBelowThreshold, NoActiveModel),
)
def update_project(
    principal: WriterDep,
    session: SessionDep,
    runner: RunnerDep,
    project: ProjectDep,
    body: ProjectUpdate,
) -> ProjectPublic:
    """Change a project; only the fields sent change. Removing a label in use is a 409, and so
    is leaving the pilot below the agreement threshold without `force` and a `reason`."""
    updated = projects.update_project(
        session, runner, project=project, data=body, principal=principal
    )
    return ProjectPublic.model_validate(updated.model_dump())


@router.get("/{project_id}/phase-changes", responses=problem_responses(NotFound))
def list_phase_changes(
    principal: AnyRoleDep, session: SessionDep, project: ProjectDep, page: PageDep
) -> Page[PhaseChangePublic]:
    """The project's phase changes, oldest first, with the agreement measured and any reason."""
    assert project.id is not None
    rows = projects.list_phase_changes(session, project_id=project.id, page=page)
    return make_page(rows, page, lambda r: PhaseChangePublic.model_validate(r.model_dump()))


@router.get("/{project_id}/stats", responses=problem_responses(NotFound))
def get_project_stats(
    principal: WriterDep, session: SessionDep, project: ProjectDep
) -> ProjectStats:
    """Counts by status and source, label distribution with imbalance warnings, annotators, cost."""
    return stats.project_stats(session, project=project)
