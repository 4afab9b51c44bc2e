"""Inputs a database cannot store, ids past 32 bits, and other edges found in review."""

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.models.base import Role
from tests.factories import annotate, auth, ingest, make_key, make_project

TOO_BIG = 2**31


class TestIdBounds:
    @pytest.mark.parametrize(
        "path",
        [
            f"/v1/projects/{TOO_BIG}",
            f"/v1/projects/{2**70}",
            "/v1/projects/{id}/items/" + str(TOO_BIG),
            "/v1/projects/{id}/annotations?item_id=" + str(TOO_BIG),
        ],
    )
    def test_ids_past_32_bits_are_422(
        self, client: TestClient, session: Session, path: str
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        assert client.get(path.format(id=project["id"]), headers=headers).status_code == 422

    def test_revoking_a_huge_key_id_is_422(self, client: TestClient, session: Session) -> None:
        response = client.delete(f"/v1/api-keys/{TOO_BIG}", headers=auth(make_key(session)))
        assert response.status_code == 422

    def test_cursor_with_a_huge_id_is_422(self, client: TestClient, session: Session) -> None:
        import base64

        cursor = base64.urlsafe_b64encode(json.dumps({"after": TOO_BIG}).encode()).decode()
        response = client.get(
            "/v1/projects", params={"cursor": cursor}, headers=auth(make_key(session))
        )
        assert response.status_code == 422

    def test_annotation_with_huge_item_id_or_duration_is_422(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        item_id = ingest(client, headers, project["id"], [{"text": "x"}])["results"][0]["id"]
        url = f"/v1/projects/{project['id']}/annotations"
        assert (
            client.post(
                url, json=[{"item_id": TOO_BIG, "label": "positive"}], headers=headers
            ).status_code
            == 422
        )
        big_duration = [{"item_id": item_id, "label": "positive", "duration_ms": 2**40}]
        assert client.post(url, json=big_duration, headers=headers).status_code == 422


class TestUnstorableValues:
    def test_nul_in_text_and_blank_text_fail_alone(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        report = ingest(
            client,
            headers,
            project["id"],
            [
                {"text": "fine"},
                {"text": "nul \u0000 inside"},
                {"text": "ok", "external_id": "e\u0000"},
                {"text": "nested", "data": {"k": ["a\u0000"]}},
                {"text": "   \n\t"},
                {"text": "also fine"},
            ],
        )
        assert [r["status"] for r in report["results"]] == [
            "created",
            "failed",
            "failed",
            "created",
            "failed",
            "created",
        ]
        # JSON data keeps a NUL faithfully (it is stored escaped, as \u0000).
        nested = report["results"][3]["id"]
        item = client.get(f"/v1/projects/{project['id']}/items/{nested}", headers=headers).json()
        assert item["data"] == {"k": ["a\u0000"]}

    def test_nan_in_a_json_array_is_422_for_the_body(
        self, client: TestClient, session: Session
    ) -> None:
        headers = {**auth(make_key(session)), "content-type": "application/json"}
        project = make_project(client, auth(make_key(session)))
        body = b'[{"text": "ok"}, {"text": "x", "data": {"a": NaN}}]'
        response = client.post(f"/v1/projects/{project['id']}/items", content=body, headers=headers)
        assert response.status_code == 422 and "NaN" in response.json()["detail"]

    def test_bad_ndjson_lines_fail_alone_and_the_rest_is_reported(
        self, client: TestClient, session: Session
    ) -> None:
        headers = {**auth(make_key(session)), "content-type": "application/x-ndjson"}
        project = make_project(client, auth(make_key(session)))
        lines = [json.dumps({"text": f"good {i}"}) for i in range(1_500)]
        lines[1_100] = "[" * 50_000 + "]" * 50_000
        lines[1_200] = '{"text": "inf", "data": {"x": Infinity}}'
        lines[1_300] = json.dumps({"text": "nul\u0000"})
        body = "\r\n".join(lines).encode()
        report = client.post(
            f"/v1/projects/{project['id']}/items", content=body, headers=headers
        ).json()
        assert (report["created"], report["failed"]) == (1_497, 3)
        assert {r["index"] for r in report["results"] if r["status"] == "failed"} == {
            1_100,
            1_200,
            1_300,
        }

    def test_application_ndjson_alias_is_accepted(
        self, client: TestClient, session: Session
    ) -> None:
        headers = {**auth(make_key(session)), "content-type": "application/ndjson"}
        project = make_project(client, auth(make_key(session)))
        report = client.post(
            f"/v1/projects/{project['id']}/items", content=b'{"text": "a"}\n', headers=headers
        )
        assert report.json()["created"] == 1

    @pytest.mark.parametrize(
        "body",
        [
            {"name": "p", "labels": ["a", "b"], "cost_per_label": {"crowd": "Infinity"}},
            {"name": "p\u0000", "labels": ["a", "b"]},
            {"name": "p", "labels": ["a\u0000", "b"]},
        ],
    )
    def test_projects_refuse_unstorable_values(
        self, client: TestClient, session: Session, body: Any
    ) -> None:
        response = client.post("/v1/projects", json=body, headers=auth(make_key(session)))
        assert response.status_code == 422

    def test_nul_in_filters_is_422(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        url = f"/v1/projects/{project['id']}"
        assert (
            client.get(f"{url}/items", params={"label": "a\u0000b"}, headers=headers).status_code
            == 422
        )
        assert (
            client.get(
                f"{url}/annotations", params={"annotator": "a\u0000"}, headers=headers
            ).status_code
            == 422
        )


class TestIngestOrdering:
    def test_text_freed_by_an_update_can_be_taken_in_the_same_request(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        ingest(client, headers, project["id"], [{"external_id": "e2", "text": "Beta"}])
        report = ingest(
            client,
            headers,
            project["id"],
            [{"external_id": "e2", "text": "gamma"}, {"external_id": "e4", "text": "Beta"}],
        )
        assert [r["status"] for r in report["results"]] == ["updated", "created"]

    def test_swapping_texts_between_items_fails_per_entry(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        start = [{"external_id": "a", "text": "one"}, {"external_id": "b", "text": "two"}]
        ingest(client, headers, project["id"], start)
        swap = [{"external_id": "a", "text": "two"}, {"external_id": "b", "text": "one"}]
        response = client.post(f"/v1/projects/{project['id']}/items", json=swap, headers=headers)
        assert response.status_code == 422
        errors = response.json()["errors"]
        assert [e["loc"] for e in errors] == [["body", 0], ["body", 1]]
        assert all("duplicates another item" in e["msg"] for e in errors)


class TestProjectPatchRules:
    def test_examples_alone_are_checked_against_the_labels(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        response = client.patch(
            f"/v1/projects/{project['id']}",
            json={"examples": [{"text": "x", "label": "zzz"}]},
            headers=headers,
        )
        assert response.status_code == 422

    def test_force_needs_a_reason(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        url = f"/v1/projects/{project['id']}"
        assert (
            client.patch(
                url, json={"phase": "production", "force": True}, headers=headers
            ).status_code
            == 422
        )
        ok = client.patch(
            url,
            json={"phase": "production", "force": True, "reason": "pilot done"},
            headers=headers,
        )
        assert ok.status_code == 200 and ok.json()["phase"] == "production"
        assert "force" not in ok.json()


class TestBlindAnnotators:
    def test_annotators_see_no_resolved_label_and_cannot_filter_by_it(
        self, client: TestClient, session: Session
    ) -> None:
        admin = auth(make_key(session))
        project = make_project(client, admin)
        item_id = ingest(client, admin, project["id"], [{"text": "x"}])["results"][0]["id"]
        annotate(client, admin, project["id"], [{"item_id": item_id, "label": "positive"}])
        annotator = auth(make_key(session, role=Role.annotator))
        url = f"/v1/projects/{project['id']}/items"
        assert client.get(f"{url}/{item_id}", headers=annotator).json()["resolved_label"] is None
        assert client.get(url, headers=annotator).json()["items"][0]["resolved_label"] is None
        assert client.get(url, params={"label": "positive"}, headers=annotator).status_code == 403
        assert client.get(f"{url}/{item_id}", headers=admin).json()["resolved_label"] == "positive"
