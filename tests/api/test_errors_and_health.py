import json
from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import Session

from tests.conftest import ClientFactory
from tests.factories import auth, make_key, make_project


class TestProblemJson:
    def test_unknown_route_is_404_problem(self, client: TestClient) -> None:
        response = client.get("/v2/whatever")
        assert response.status_code == 404 and "/v2/whatever" in response.json()["detail"]

    def test_wrong_method_is_405_problem(self, client: TestClient, session: Session) -> None:
        response = client.put("/v1/projects", headers=auth(make_key(session)))
        assert response.status_code == 405
        assert response.json()["type"] == "/problems/method-not-allowed"

    def test_validation_error_lists_every_field(self, client: TestClient, session: Session) -> None:
        response = client.post(
            "/v1/projects", json={"labels": "nope"}, headers=auth(make_key(session))
        )
        assert response.status_code == 422
        body = response.json()
        assert (
            body["type"] == "/problems/validation-error" and body["title"] == "Unprocessable Entity"
        )
        assert {tuple(e["loc"]) for e in body["errors"]} >= {("body", "name"), ("body", "labels")}

    def test_malformed_json_is_422(self, client: TestClient, session: Session) -> None:
        response = client.post(
            "/v1/projects",
            content=b"{oops",
            headers={**auth(make_key(session)), "content-type": "application/json"},
        )
        assert response.status_code == 422

    def test_undecodable_body_is_a_documented_400(
        self, client: TestClient, session: Session
    ) -> None:
        # Found by schema fuzzing: bytes that are not UTF-8 are a 400 the spec did not declare.
        response = client.post(
            "/v1/projects",
            content=b"\xff\xfe{",
            headers={**auth(make_key(session)), "content-type": "application/json"},
        )
        assert response.status_code == 400
        assert response.json()["type"] == "/problems/bad-request"
        operation = client.get("/openapi.json").json()["paths"]["/v1/projects"]["post"]
        assert "400" in operation["responses"]

    def test_body_over_the_limit_is_413_and_writes_nothing(
        self, session: Session, client_with: ClientFactory
    ) -> None:
        small = client_with(max_body_bytes=2_000)
        headers = auth(make_key(session))
        project = make_project(small, headers)
        items = [{"text": f"text number {i}"} for i in range(200)]
        response = small.post(f"/v1/projects/{project['id']}/items", json=items, headers=headers)
        assert response.status_code == 413
        # Without a Content-Length (chunked), the limit is enforced while reading.
        body = b"[" + b",".join(b'{"text": "chunked %d"}' % i for i in range(200)) + b"]"
        chunked = small.post(
            f"/v1/projects/{project['id']}/items",
            content=(body[i : i + 500] for i in range(0, len(body), 500)),
            headers={**headers, "content-type": "application/json"},
        )
        assert chunked.status_code == 413
        listed = small.get(f"/v1/projects/{project['id']}/items", headers=headers).json()
        assert listed["items"] == []


class TestHealth:
    def test_healthz(self, client: TestClient) -> None:
        assert client.get("/healthz").json() == {"status": "ok"}

    def test_readyz_reports_the_migrated_schema(self, client: TestClient) -> None:
        body = client.get("/readyz").json()
        assert body["status"] == "ready" and body["revision"] == body["head"]

    def test_readyz_is_503_on_an_unmigrated_database(
        self, client_with: ClientFactory, tmp_path: Path
    ) -> None:
        response = client_with(database_url=f"sqlite:///{tmp_path}/empty.db").get("/readyz")
        assert response.status_code == 503 and "not at" in response.json()["detail"]

    def test_metrics_count_requests_by_route_template(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        client.get("/v1/projects/12345", headers=headers)
        text = client.get("/metrics").text
        assert (
            'labelwise_http_requests_total{method="GET",route="/v1/projects/{project_id}",status="404"}'
            in text
        )
        assert "labelwise_http_request_duration_seconds_bucket" in text
        assert "/v1/projects/12345" not in text

    def test_request_id_is_echoed(self, client: TestClient) -> None:
        assert (
            client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
            == "abc-123"
        )


class TestChunkedLimitOnJsonRoutes:
    def test_chunked_body_over_the_limit_is_413_on_a_json_route(
        self, session: Session, client_with: ClientFactory
    ) -> None:
        small = client_with(max_body_bytes=1_000)
        headers = {**auth(make_key(session)), "content-type": "application/json"}
        body = json.dumps({"name": "big", "labels": ["a", "b"], "guidelines": "x" * 5_000}).encode()
        response = small.post(
            "/v1/projects",
            content=(body[i : i + 300] for i in range(0, len(body), 300)),
            headers=headers,
        )
        assert response.status_code == 413
        assert response.json()["type"] == "/problems/payload-too-large"

    def test_ndjson_is_not_exempt_outside_ingest(
        self, session: Session, client_with: ClientFactory
    ) -> None:
        small = client_with(max_body_bytes=1_000)
        headers = {**auth(make_key(session)), "content-type": "application/x-ndjson"}
        response = small.post("/v1/projects", content=b"x" * 5_000, headers=headers)
        assert response.status_code == 413
