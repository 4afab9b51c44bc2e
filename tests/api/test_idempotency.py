"""`Idempotency-Key` on POSTs (app/api/idempotency.py): a retry gets the first response and
does nothing twice; a key is per caller; a failed request leaves no claim; a concurrent
duplicate is refused; a commit whose outcome was unknown can be retried with the same key."""

import uuid
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text

from app.models.base import Role
from app.services.api_keys import hash_key
from tests.api.test_db_faults import injected
from tests.factories import unique


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def project_body(**fields: Any) -> dict[str, Any]:
    return {"name": unique("idem"), "labels": ["a", "b"], "phase": "production", **fields}


def count(client: TestClient, sql: str, **params: Any) -> int:
    engine: Engine = client.app.state.database.engine  # type: ignore[attr-defined]
    with engine.connect() as connection:
        return int(connection.execute(text(sql), params).scalar_one())


def projects_named(client: TestClient, name: str) -> int:
    return count(client, "SELECT count(*) FROM project WHERE name = :name", name=name)


def test_a_retry_gets_the_first_response_and_does_nothing_twice(live_client: TestClient) -> None:
    body, headers = project_body(), key()
    first = live_client.post("/v1/projects", json=body, headers=headers)
    again = live_client.post("/v1/projects", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert projects_named(live_client, body["name"]) == 1


def test_a_job_is_queued_once_and_its_location_replayed(live_client: TestClient) -> None:
    project = live_client.post("/v1/projects", json=project_body()).json()
    base = f"/v1/projects/{project['id']}"
    live_client.post(f"{base}/items", json=[{"text": f"text {i}"} for i in range(4)])
    headers = key()
    first = live_client.post(f"{base}/label-issues", json={}, headers=headers)
    again = live_client.post(f"{base}/label-issues", json={}, headers=headers)
    assert first.status_code == again.status_code
    assert again.json()["id"] == first.json()["id"]
    if "location" in first.headers:
        assert again.headers["location"] == first.headers["location"]
    jobs = count(live_client, "SELECT count(*) FROM job WHERE project_id = :p", p=project["id"])
    assert jobs == 1


def test_the_same_key_with_another_request_is_422(live_client: TestClient) -> None:
    headers = key()
    assert live_client.post("/v1/projects", json=project_body(), headers=headers).status_code == 201
    other = project_body()
    response = live_client.post("/v1/projects", json=other, headers=headers)
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/idempotency-key-reused"
    assert projects_named(live_client, other["name"]) == 0


def test_keys_are_per_caller(live_client: TestClient) -> None:
    created = live_client.post(
        "/v1/api-keys", json={"name": unique("service"), "role": Role.service.value}
    ).json()
    other = {"Authorization": f"Bearer {created['key']}"}
    headers = key()
    mine, theirs = project_body(), project_body()
    assert live_client.post("/v1/projects", json=mine, headers=headers).status_code == 201
    response = live_client.post("/v1/projects", json=theirs, headers=headers | other)
    assert response.status_code == 201, response.text  # a new request for the other caller
    assert "idempotent-replayed" not in response.headers
    assert projects_named(live_client, theirs["name"]) == 1


def test_a_refused_request_leaves_no_claim(live_client: TestClient) -> None:
    headers = key()
    refused = live_client.post("/v1/projects", json=project_body(labels=[]), headers=headers)
    assert refused.status_code == 422
    fixed = project_body()
    response = live_client.post("/v1/projects", json=fixed, headers=headers)
    assert response.status_code == 201
    assert projects_named(live_client, fixed["name"]) == 1


@pytest.mark.parametrize("bad", ["", "has space", "x" * 256, "naïve"])
def test_a_malformed_key_is_422(live_client: TestClient, bad: str) -> None:
    body = project_body()
    response = live_client.post(
        "/v1/projects", json=body, headers=[(b"Idempotency-Key", bad.encode())]
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert projects_named(live_client, body["name"]) == 0


def test_a_quoted_key_is_the_same_key(live_client: TestClient) -> None:
    token, body = str(uuid.uuid4()), project_body()
    first = live_client.post("/v1/projects", json=body, headers={"Idempotency-Key": token})
    again = live_client.post("/v1/projects", json=body, headers={"Idempotency-Key": f'"{token}"'})
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


def test_a_concurrent_duplicate_is_rolled_back_with_409(
    live_client: TestClient, backend: str
) -> None:
    """Another request with the key commits while this one runs: simulated by committing its
    claim from another connection just before this request writes its own."""
    if backend == "sqlite":
        pytest.skip(
            "SQLite: a request holds the write lock when it writes its claim, so no other "
            "request can commit in between; concurrent duplicates queue and replay instead"
        )
    engine: Engine = live_client.app.state.database.engine  # type: ignore[attr-defined]
    token, body = str(uuid.uuid4()), project_body()
    secret = live_client.headers["Authorization"].split()[1]
    fired: list[bool] = []

    def other_request_commits(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if fired or not statement.startswith("INSERT INTO idempotent_request"):
            return
        fired.append(True)
        dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as other:
            other.execute(
                "INSERT INTO idempotent_request (key_hash, idempotency_key, fingerprint, "
                "created_at) VALUES (%s, %s, 'b:other', now())",
                [hash_key(secret), token],
            )

    event.listen(engine, "before_cursor_execute", other_request_commits)
    try:
        response = live_client.post("/v1/projects", json=body, headers={"Idempotency-Key": token})
    finally:
        event.remove(engine, "before_cursor_execute", other_request_commits)
    assert fired
    assert response.status_code == 409
    assert response.json()["type"] == "/problems/idempotency-key-in-use"
    assert projects_named(live_client, body["name"]) == 0


def test_an_applied_request_without_a_recorded_response_is_409(live_client: TestClient) -> None:
    engine: Engine = live_client.app.state.database.engine  # type: ignore[attr-defined]
    body, headers = project_body(), key()
    assert live_client.post("/v1/projects", json=body, headers=headers).status_code == 201
    with engine.begin() as connection:  # as if the process stopped before recording it
        connection.execute(
            text(
                "UPDATE idempotent_request SET response_status = NULL, response_body = NULL "
                "WHERE idempotency_key = :key"
            ),
            {"key": headers["Idempotency-Key"]},
        )
    response = live_client.post("/v1/projects", json=body, headers=headers)
    assert response.status_code == 409
    assert "applied" in response.json()["detail"]
    assert projects_named(live_client, body["name"]) == 1


def test_after_a_commit_of_unknown_outcome_the_same_key_is_safe(
    live_client: TestClient, backend: str
) -> None:
    body, headers = project_body(), key()
    with injected(live_client, backend) as injector:
        injector.fail("COMMIT", times=1)
        unknown = live_client.post("/v1/projects", json=body, headers=headers)
    assert unknown.status_code == 503
    assert "unknown" in unknown.json()["detail"]
    retried = live_client.post("/v1/projects", json=body, headers=headers)
    assert retried.status_code == 201
    assert projects_named(live_client, body["name"]) == 1
    replay = live_client.post("/v1/projects", json=body, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == retried.json()


def test_every_post_declares_the_key() -> None:
    import json
    from pathlib import Path

    spec = json.loads((Path(__file__).parents[2] / "openapi" / "openapi.json").read_text())
    posts = [
        operation
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
        if method == "post" and path.startswith("/v1/")
    ]
    assert len(posts) > 20
    for operation in posts:
        names = [parameter["name"] for parameter in operation.get("parameters", [])]
        assert "Idempotency-Key" in names, operation["operationId"]
        assert "idempotency-key-in-use" in json.dumps(operation["responses"]["409"])
