"""GET /v1/me: who the calling key is, for any valid key."""

from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.models.base import Role
from app.services import api_keys
from tests.factories import auth, make_key, unique


@pytest.mark.parametrize(
    ("role", "tier"), [(Role.admin, None), (Role.service, None), (Role.annotator, "crowd")]
)
def test_any_role_learns_its_name_role_tier_id_and_age(
    client: TestClient, session: Session, role: Role, tier: str | None
) -> None:
    name = unique(f"me-{role.value}")
    me = client.get("/v1/me", headers=auth(make_key(session, role=role, name=name, tier=tier)))
    assert me.status_code == 200, me.text
    body = me.json()
    assert body.keys() == {"name", "role", "tier", "key_id", "created_at"}
    assert (body["name"], body["role"], body["tier"]) == (name, role.value, tier)
    # The same key as the admin's list shows it.
    listed = client.get("/v1/api-keys?limit=1000", headers=auth(make_key(session))).json()
    (row,) = [k for k in listed["items"] if k["name"] == name]
    assert body["key_id"] == row["id"]
    assert datetime.fromisoformat(body["created_at"]) == datetime.fromisoformat(row["created_at"])


def test_no_key_or_an_unknown_one_is_401(client: TestClient) -> None:
    for headers in ({}, auth("lw_" + "z" * 43)):
        answer = client.get("/v1/me", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"


def test_a_key_revoked_elsewhere_is_refused_at_once(client: TestClient, session: Session) -> None:
    """Another process revoked it: this one still trusts it for LABELWISE_AUTH_CACHE_SECONDS
    elsewhere, but /v1/me reads the key itself, so a front-end checking a key learns at once."""
    secret = make_key(session, role=Role.annotator, name=unique("me-revoked"))
    me = client.get("/v1/me", headers=auth(secret)).json()  # now in this process's cache
    admin = api_keys.Principal(key_id=0, name="elsewhere", role=Role.admin, tier=None)
    api_keys.revoke_api_key(session, key_id=me["key_id"], by=admin)  # not through this app
    assert client.get("/v1/projects", headers=auth(secret)).status_code == 200  # cached
    answer = client.get("/v1/me", headers=auth(secret))
    assert answer.status_code == 401 and "revoked" in answer.json()["detail"]


def test_the_spec_documents_the_answer(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/me"]["get"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Me"
    }
    schema = spec["components"]["schemas"]["Me"]
    assert set(schema["required"]) == {"name", "role", "tier", "key_id", "created_at"}
    assert all(schema["properties"][field].get("description") for field in ("name", "role"))
