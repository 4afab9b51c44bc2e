"""Batches: the next items for an annotator, leased so nobody duplicates the work."""

from typing import Annotated, Any

from fastapi import Body, Response

from app.api.routing import PROJECT_PROBLEMS, ProblemRouter
from app.deps import AnyRoleDep, DatabaseDep, IdPath, ProjectDep, SessionDep, SettingsDep
from app.errors import AlreadyAnswered, LeaseHeldByAnother, NoPredictions, problem_responses
from app.models.batch import BatchCreate, BatchPublic, BatchRenew, BatchSkip
from app.services import batches

router = ProblemRouter(
    prefix="/v1/projects/{project_id}/batches",
    tags=["batches"],
    responses=PROJECT_PROBLEMS,
)


CREATED_OR_EMPTY: dict[int | str, dict[str, Any]] = {
    201: {
        "description": "Created: the items are leased to the annotator.",
        "headers": {
            "Location": {
                "description": "/v1/projects/{project_id}/batches/{id} of the batch",
                "schema": {"type": "string"},
            }
        },
    },
    200: {
        "description": "Nothing to hand out now: no batch was stored; `id` and "
        "`lease_expires_at` are null and `items` is empty.",
        "model": BatchPublic,
    },
}


@router.post(
    "", status_code=201, responses={**CREATED_OR_EMPTY, **problem_responses(NoPredictions)}
)
def create_batch(
    response: Response,
    principal: AnyRoleDep,
    session: SessionDep,
    database: DatabaseDep,
    settings: SettingsDep,
    project: ProjectDep,
    body: Annotated[
        BatchCreate,
        Body(
            examples=[
                {"size": 10},
                {"size": 20, "strategy": "diverse_margin"},
                {"size": 10, "queue": "review"},
            ]
        ),
    ],
) -> BatchPublic:
    """Lease the next items to label (or review) to the caller; fewer when the pool runs dry.
    When nothing is available the answer is 200 with the same shape, `id` null and no items,
    and nothing is stored: poll again later."""
    batch = batches.create_batch(
        session, database, project=project, principal=principal, request=body, settings=settings
    )
    if batch.id is None:
        response.status_code = 200
    else:
        response.headers["Location"] = f"/v1/projects/{project.id}/batches/{batch.id}"
    return batch


@router.get("/{batch_id}", responses=problem_responses(LeaseHeldByAnother))
def get_batch(
    principal: AnyRoleDep, session: SessionDep, project: ProjectDep, batch_id: IdPath
) -> BatchPublic:
    """A batch with the state of each item's lease (live, expired, answered, skipped, released)."""
    return batches.get_batch(session, project=project, principal=principal, batch_id=batch_id)


@router.delete("/{batch_id}", status_code=204, responses=problem_responses(LeaseHeldByAnother))
def delete_batch(
    principal: AnyRoleDep, session: SessionDep, project: ProjectDep, batch_id: IdPath
) -> Response:
    """Release the batch's unanswered items back to the pool."""
    batches.release_batch(session, project=project, principal=principal, batch_id=batch_id)
    return Response(status_code=204)


@router.post("/{batch_id}/renew", responses=problem_responses(LeaseHeldByAnother))
def renew_batch(
    principal: AnyRoleDep,
    session: SessionDep,
    settings: SettingsDep,
    project: ProjectDep,
    batch_id: IdPath,
    body: Annotated[BatchRenew, Body(examples=[{}, {"lease_seconds": 600}])],
) -> BatchPublic:
    """Keep the batch's items: extend its live leases to now + `lease_seconds`. Expired leases
    stay expired (the item may be someone else's by now); the answer shows each lease's state."""
    return batches.renew_batch(
        session,
        project=project,
        principal=principal,
        batch_id=batch_id,
        lease_seconds=body.lease_seconds or settings.lease_seconds,
    )


@router.post("/{batch_id}/skip", responses=problem_responses(LeaseHeldByAnother, AlreadyAnswered))
def skip_batch_items(
    principal: AnyRoleDep,
    session: SessionDep,
    project: ProjectDep,
    batch_id: IdPath,
    body: Annotated[BatchSkip, Body(examples=[{"item_ids": [17]}])],
) -> BatchPublic:
    """Give items back without answering; they go to others, not back to you this session."""
    return batches.skip_items(
        session, project=project, principal=principal, batch_id=batch_id, item_ids=body.item_ids
    )
