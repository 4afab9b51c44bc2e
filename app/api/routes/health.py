"""Liveness, readiness and Prometheus metrics; no auth."""

from typing import Any

from fastapi import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.routing import ProblemRouter
from app.errors import NotReady, problem_responses
from app.migrations import schema_revision_status
from app.models.base import ResponseModel

router = ProblemRouter(tags=["health"])

# No key needed: the spec says so (an empty security requirement), so clients send none.
NO_AUTH: dict[str, Any] = {"security": []}


class Health(ResponseModel):
    status: str


class Readiness(ResponseModel):
    status: str
    database: str
    revision: str | None
    head: str


@router.get("/healthz", openapi_extra=NO_AUTH)
def get_health() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", responses=problem_responses(NotReady), openapi_extra=NO_AUTH)
def get_readiness(request: Request) -> Readiness:
    """The database answers and its schema is at the latest migration. 503 `not-ready` while
    it is not migrated; 503 `database-unavailable` while it cannot be reached."""
    status = schema_revision_status(request.app.state.database.engine)
    return Readiness(
        status="ready", database=status.dialect, revision=status.current, head=status.head
    )


@router.get(
    "/metrics",
    response_class=Response,
    openapi_extra=NO_AUTH,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text"}
    },
)
def get_metrics() -> Response:
    """Request counts and latencies in the Prometheus text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
