"""API key management (admin only)."""

from fastapi import Request, Response

from app.api.routing import ProblemRouter
from app.deps import AdminDep, IdPath, PageDep, SessionDep
from app.errors import (
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
    problem_responses,
)
from app.models.api_key import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic
from app.pagination import Page, make_page
from app.services import api_keys

router = ProblemRouter(
    prefix="/v1/api-keys",
    tags=["api-keys"],
    responses=problem_responses(Unauthorized, Forbidden, ValidationFailed),
)


@router.post("", status_code=201, responses=problem_responses(Conflict))
def create_api_key(principal: AdminDep, session: SessionDep, body: ApiKeyCreate) -> ApiKeyCreated:
    """Create an API key; the secret is in this response only."""
    row, secret = api_keys.create_api_key(session, data=body)
    return ApiKeyCreated(**row.model_dump(), key=secret)


@router.get("")
def list_api_keys(principal: AdminDep, session: SessionDep, page: PageDep) -> Page[ApiKeyPublic]:
    """List API keys, revoked ones included (never their secrets)."""
    rows = api_keys.list_api_keys(session, page=page)
    return make_page(rows, page, lambda r: ApiKeyPublic.model_validate(r.model_dump()))


@router.delete("/{key_id}", status_code=204, responses=problem_responses(NotFound, Conflict))
def delete_api_key(
    principal: AdminDep, session: SessionDep, request: Request, key_id: IdPath
) -> Response:
    """Revoke an API key; its name becomes free for a new key. This server refuses it at once,
    other processes within LABELWISE_AUTH_CACHE_SECONDS (5 s)."""
    api_keys.revoke_api_key(session, key_id=key_id, by=principal)
    request.app.state.principals.forget(key_id)
    return Response(status_code=204)
