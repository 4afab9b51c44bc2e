"""The router every route module uses: route-level problem types add to the router's, and
every route retries its transaction after a transient database fault (`DatabaseRetryRoute`)."""

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from app.api.idempotency import idempotency_key, run_idempotently
from app.db import watch_commits
from app.db_faults import RETRYABLE_IN_PLACE, classify, error_for
from app.errors import (
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
    declared_problems,
    problem_responses,
    with_problems,
)

logger = logging.getLogger("labelwise.db")

# Attempts of one request's transaction, and the first wait between them (then x4, jittered):
# a lost connection is replaced at once, a serialization failure or deadlock rarely repeats.
MAX_ATTEMPTS = 3
FIRST_BACKOFF_SECONDS = 0.05


def backoff_seconds(attempt: int, rng: random.Random | None = None) -> float:
    """The wait after failed attempt number `attempt` (1, 2, ...): 50 ms, 200 ms, ... +-50%."""
    jitter: float = (rng or random).uniform(0.5, 1.5)
    growth: float = 4.0 ** (attempt - 1)
    return FIRST_BACKOFF_SECONDS * growth * jitter


class DatabaseRetryRoute(APIRoute):
    """A route whose request is one transaction, run again after a transient database fault.

    Each request is one transaction (the session of `deps.get_session`), so when it fails on a
    lost connection, a server restarting, a serialization failure or a deadlock before any of
    its writes began to commit, nothing of it was stored and running the whole handler again
    (dependencies included, on a new session and a new connection) is safe. Up to
    `MAX_ATTEMPTS`, with jittered backoff. Never after a commit began: its outcome is unknown,
    so the client gets a 503 saying so, and decides (docs/hardening.md lists the requests that
    are safe to repeat). Nor when the body was streamed rather than read whole: it cannot be
    read again. A fault that is not retried, or still there after the last attempt, answers
    its problem (`app.db_faults`): 503 database-unavailable or database-busy, 507
    database-full; never a 500.

    A POST with an `Idempotency-Key` runs inside `run_idempotently` (app/api/idempotency.py):
    its retries, by this route or by the client, never do its work twice.

    Each attempt's dependencies close in a stack of their own: a failed attempt's session is
    rolled back and its connection returned before the next attempt starts (on SQLite it may
    hold the write turn); a successful one's close, as FastAPI does, after the response.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run_with_retries(request: Request) -> Response:
            attempt = 1
            while True:
                outer = request.scope["fastapi_inner_astack"]
                stack = AsyncExitStack()
                request.scope["fastapi_inner_astack"] = stack
                try:
                    with watch_commits() as commits:
                        response = await handler(request)
                except BaseException as error:
                    await _close_failed_attempt(stack, error)
                    fault = classify(error) if isinstance(error, Exception) else None
                    if fault is None:
                        raise
                    if commits.started:
                        raise error_for(fault, outcome_unknown=True) from error
                    if (
                        fault in RETRYABLE_IN_PLACE
                        and attempt < MAX_ATTEMPTS
                        and _replayable(request)
                    ):
                        logger.warning(
                            "database fault %s on %s %s, attempt %d; retrying",
                            fault.value,
                            request.method,
                            request.url.path,
                            attempt,
                        )
                        await asyncio.sleep(backoff_seconds(attempt))
                        attempt += 1
                        continue
                    raise error_for(fault) from error
                finally:
                    request.scope["fastapi_inner_astack"] = outer
                outer.push_async_callback(stack.aclose)
                return response

        async def run(request: Request) -> Response:
            key = idempotency_key(request) if request.method == "POST" else None
            if key is None:
                return await run_with_retries(request)
            return await run_idempotently(request, key, lambda: run_with_retries(request))

        return run


async def _close_failed_attempt(stack: AsyncExitStack, error: BaseException) -> None:
    """Close a failed attempt's dependencies (the session rolls back) with its error."""
    try:
        await stack.__aexit__(type(error), error, error.__traceback__)
    except Exception:
        if not isinstance(error, Exception):
            raise
        logger.warning("closing a failed request's dependencies failed too", exc_info=True)


def _replayable(request: Request) -> bool:
    """Whether the handler can read the request's body again: none, or read whole (cached)
    and not a form (an uploaded file has been read to its end)."""
    state = request.__dict__
    if state.get("_form") is not None:
        return False
    return "_body" in state or not state.get("_stream_consumed", False)


class ProblemRouter(APIRouter):
    """An APIRouter whose routes declare their problem types on top of the router's.

    FastAPI merges a router's `responses` with a route's status by status, so a route's 404
    would replace the router's whole 404 entry (and its problem types); here both stay. Its
    routes are `DatabaseRetryRoute`s.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(route_class=DatabaseRetryRoute, **options)

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
