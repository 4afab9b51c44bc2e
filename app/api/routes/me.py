"""Who am I: the calling key's name, role and tier, for any valid key."""

from app.api.routing import ProblemRouter
from app.deps import PrincipalDep, SessionDep
from app.errors import Unauthorized, problem_responses
from app.models.api_key import Me
from app.services import api_keys

router = ProblemRouter(prefix="/v1/me", tags=["me"], responses=problem_responses(Unauthorized))


@router.get("")
def who_am_i(principal: PrincipalDep, session: SessionDep) -> Me:
    """The calling key: its name (an annotator's identity), role, workforce tier, id and
    creation time. Any valid key may ask; a front-end calls it after sign-in to check the key
    and to show or hide what the role may do."""
    row = api_keys.describe_caller(session, principal=principal)
    assert row.id is not None
    return Me(
        name=row.name, role=principal.role, tier=row.tier, key_id=row.id, created_at=row.created_at
    )
