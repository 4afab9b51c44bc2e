"""The labeling-cost report: spend per workforce tier, cost per usable label and the savings.

It shows what annotators were paid, so it is for admin and service keys, like the statistics.
"""

from app.api.routing import PROJECT_PROBLEMS, ProblemRouter
from app.deps import ProjectDep, SessionDep, WriterDep
from app.models.cost import CostReport
from app.services import cost

router = ProblemRouter(
    prefix="/v1/projects/{project_id}/cost",
    tags=["cost"],
    responses=PROJECT_PROBLEMS,
)


@router.get("")
def get_cost(principal: WriterDep, session: SessionDep, project: ProjectDep) -> CostReport:
    """Spend per tier, cost per usable label, waste, and what auto-accepts and AL saved."""
    return cost.cost_report(session, project=project)
