"""The role rules, one table: who acts for others, and who labels blind."""

import pytest

from app.models.base import Role
from app.services import policy
from app.services.api_keys import Principal


def key(role: Role) -> Principal:
    return Principal(key_id=1, name="ann", role=role, tier=None)


@pytest.mark.parametrize(
    ("role", "for_others", "blind"),
    [(Role.admin, True, False), (Role.service, True, False), (Role.annotator, False, True)],
)
def test_each_role(role: Role, for_others: bool, blind: bool) -> None:
    principal = key(role)
    assert policy.may_act_for_others(principal) is for_others
    assert policy.labels_blind(principal) is blind
    assert policy.may_act_as(principal, None) and policy.may_act_as(principal, "ann")
    assert policy.may_act_as(principal, "bob") is for_others


def test_every_role_is_ruled() -> None:
    assert {Role.admin, Role.service, Role.annotator} == set(Role)
