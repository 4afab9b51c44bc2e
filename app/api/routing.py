"""The router every route module uses: route-level problem types add to the router's."""

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

from app.errors import (
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
    declared_problems,
    problem_responses,
    with_problems,
)


class ProblemRouter(APIRouter):
    """An APIRouter whose routes declare their problem types on top of the router's.

    FastAPI merges a router's `responses` with a route's status by status, so a route's 404
    would replace the router's whole 404 entry (and its problem types); here both stay.
    """

    def add_api_route(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        responses: dict[int | str, dict[str, Any]] | None = None,
        **options: Any,
    ) -> None:
        inherited = [kind for entry in self.responses.values() for kind in declared_problems(entry)]
        merged = {**self.responses, **with_problems(responses or {}, *inherited)}
        super().add_api_route(path, endpoint, responses=merged, **options)


# What any operation under /v1/projects/{project_id} can answer: no key or a bad one, a role
# that may not, an unknown project, an invalid parameter or body.
PROJECT_PROBLEMS = problem_responses(Unauthorized, Forbidden, NotFound, ValidationFailed)
