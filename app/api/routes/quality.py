"""Quality reports: inter-annotator agreement and consensus labels with annotator quality.

Both show colleagues' answers, so they are for admin and service keys; annotators label blind.
"""

from typing import Annotated

from fastapi import Query

from app.api.routing import PROJECT_PROBLEMS, ProblemRouter
from app.deps import DatabaseDep, PageDep, ProjectDep, SessionDep, WriterDep
from app.errors import NoActiveModel, problem_responses
from app.models.base import ConsensusMethod
from app.models.quality import AgreementReport, ConsensusPage
from app.services import agreement, consensus

router = ProblemRouter(
    prefix="/v1/projects/{project_id}",
    tags=["quality"],
    responses=PROJECT_PROBLEMS,
)


@router.get("/agreement")
def get_agreement(
    principal: WriterDep, session: SessionDep, project: ProjectDep
) -> AgreementReport:
    """Krippendorff's alpha, Fleiss' and Cohen's kappa, per label and annotator, read in plain
    language; below the threshold, warnings name the likely causes with evidence."""
    return agreement.report(session, project=project)


@router.get("/consensus", responses=problem_responses(NoActiveModel))
def get_consensus(
    principal: WriterDep,
    session: SessionDep,
    database: DatabaseDep,
    project: ProjectDep,
    page: PageDep,
    method: Annotated[
        ConsensusMethod | None,
        Query(description="Defaults to the project's consensus_method; any can be compared."),
    ] = None,
) -> ConsensusPage:
    """Consensus label and quality per item (id order), and every annotator's quality."""
    chosen = method or ConsensusMethod(project.consensus_method)
    computed = consensus.compute(session, database, project=project, method=chosen)
    return consensus.consensus_page(computed, page, required=project.required_annotators)
