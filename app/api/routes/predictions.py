"""External predictions: other services' models, stored beside the registry's own."""

from typing import Annotated

from fastapi import Body

from app.api.routing import PROJECT_PROBLEMS, ProblemRouter
from app.deps import ProjectDep, SessionDep, WriterDep
from app.models.prediction import PredictionIn, PredictionReport
from app.services import predictions

router = ProblemRouter(
    prefix="/v1/projects/{project_id}/predictions",
    tags=["predictions"],
    responses=PROJECT_PROBLEMS,
)

MAX_PREDICTIONS_PER_REQUEST = 10_000


@router.post("")
def create_predictions(
    principal: WriterDep,
    session: SessionDep,
    project: ProjectDep,
    body: Annotated[
        list[PredictionIn],
        Body(
            max_length=MAX_PREDICTIONS_PER_REQUEST,
            examples=[
                [
                    {
                        "external_id": "pkg-1",
                        "probabilities": {"devel": 0.9, "utils": 0.1},
                        "model_version": "sentiment-svc-2026-11",
                    }
                ]
            ],
        ),
    ],
) -> PredictionReport:
    """Store predictions from another service's model; each entry is validated on its own."""
    return predictions.submit_external_predictions(session, project=project, entries=body)
