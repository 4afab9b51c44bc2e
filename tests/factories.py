"""Plain typed factories for test data, through the real services or the HTTP API."""

import itertools
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from app.models.api_key import ApiKeyCreate
from app.models.base import Role
from app.services.api_keys import create_api_key

_counter = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}"


def make_key(
    session: Session, *, role: Role = Role.admin, name: str | None = None, tier: str | None = None
) -> str:
    """Create an API key directly; returns its secret."""
    _, secret = create_api_key(
        session, data=ApiKeyCreate(name=name or unique(role.value), role=role, tier=tier)
    )
    return secret


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def make_project(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    """A project in production phase unless told otherwise: one answer per item resolves it
    (a pilot sends every item to two annotators; tests about the pilot ask for it)."""
    body = {
        "name": unique("project"),
        "labels": ["positive", "negative", "neutral"],
        "phase": "production",
        **fields,
    }
    response = client.post("/v1/projects", json=body, headers=headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def ingest(
    client: TestClient, headers: dict[str, str], project_id: int, items: list[Any]
) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project_id}/items", json=items, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def annotate(
    client: TestClient, headers: dict[str, str], project_id: int, entries: list[dict[str, Any]]
) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project_id}/annotations", json=entries, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result
