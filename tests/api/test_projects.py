from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.models.base import Role
from tests.factories import annotate, auth, ingest, make_key, make_project


class TestCreateProject:
    def test_defaults_follow_the_contract(self, client: TestClient, session: Session) -> None:
        body = {"name": "sentiment", "labels": ["positive", "negative", "neutral"]}
        response = client.post("/v1/projects", json=body, headers=auth(make_key(session)))
        assert response.status_code == 201, response.text
        project = response.json()
        assert project["labels"] == ["positive", "negative", "neutral"]
        assert project["allow_abstain"] is True
        assert project["annotators_per_item"] == 1
        assert project["auto_accept_threshold"] == 0.95
        assert project["agreement_threshold"] == 0.6
        assert project["synthetic_max_ratio"] == 0.1
        assert project["phase"] == "pilot"
        assert project["consensus_method"] == "majority"
        assert project["examples"] == [] and project["cost_per_label"] == {}
        assert project["created_at"].endswith("Z")

    def test_every_field_round_trips(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session, role=Role.service))
        body: dict[str, Any] = {
            "name": "full",
            "description": "d",
            "labels": ["spam", "ham"],
            "allow_abstain": False,
            "guidelines": "# Rules",
            "examples": [{"text": "buy now", "label": "spam", "note": "ad"}],
            "annotators_per_item": 3,
            "auto_accept_threshold": 0.9,
            "agreement_threshold": 0.7,
            "synthetic_max_ratio": 0.05,
            "cost_per_label": {"crowd": 0.04},
            "phase": "production",
        }
        created = client.post("/v1/projects", json=body, headers=headers).json()
        fetched = client.get(f"/v1/projects/{created['id']}", headers=headers).json()
        for field, value in body.items():
            assert fetched[field] == value, field

    def test_dropping_a_label_its_examples_use_says_what_to_send(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        examples = [{"text": "buy now", "label": "spam"}]
        project = make_project(client, headers, labels=["spam", "ham"], examples=examples)
        url = f"/v1/projects/{project['id']}"
        refused = client.patch(url, json={"labels": ["ham", "eggs"]}, headers=headers)
        assert refused.status_code == 409
        detail = refused.json()["detail"]
        assert "leave out ['spam'], which the project's examples still use" in detail
        assert "send examples with the new labels in the same request" in detail
        moved = client.patch(url, json={"labels": ["ham", "eggs"], "examples": []}, headers=headers)
        assert moved.status_code == 200, moved.text

    @pytest.mark.parametrize(
        ("patch", "loc"),
        [
            ({"labels": ["only"]}, ["body", "labels"]),
            ({"labels": ["a", "a"]}, ["body"]),
            ({"labels": ["a", " "]}, ["body", "labels", 1]),
            ({"auto_accept_threshold": 1.5}, ["body", "auto_accept_threshold"]),
            ({"agreement_threshold": -0.1}, ["body", "agreement_threshold"]),
            ({"annotators_per_item": 0}, ["body", "annotators_per_item"]),
            ({"examples": [{"text": "x", "label": "nope"}]}, ["body"]),
            ({"phase": "beta"}, ["body", "phase"]),
            ({"colour": "red"}, ["body", "colour"]),
        ],
    )
    def test_invalid_projects_are_422_and_not_stored(
        self, client: TestClient, session: Session, patch: dict[str, Any], loc: list[Any]
    ) -> None:
        headers = auth(make_key(session))
        body = {"name": "bad", "labels": ["a", "b"], **patch}
        response = client.post("/v1/projects", json=body, headers=headers)
        assert response.status_code == 422
        assert loc in [e["loc"] for e in response.json()["errors"]]
        assert client.get("/v1/projects", headers=headers).json()["items"] == []

    def test_duplicate_name_is_409(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        make_project(client, headers, name="twice")
        response = client.post(
            "/v1/projects", json={"name": "twice", "labels": ["a", "b"]}, headers=headers
        )
        assert response.status_code == 409

    def test_annotator_cannot_create_but_can_read(
        self, client: TestClient, session: Session
    ) -> None:
        project = make_project(client, auth(make_key(session)))
        annotator = auth(make_key(session, role=Role.annotator))
        response = client.post(
            "/v1/projects", json={"name": "x", "labels": ["a", "b"]}, headers=annotator
        )
        assert response.status_code == 403
        assert client.get(f"/v1/projects/{project['id']}", headers=annotator).status_code == 200


class TestGetProject:
    def test_unknown_project_is_404(self, client: TestClient, session: Session) -> None:
        assert client.get("/v1/projects/999999", headers=auth(make_key(session))).status_code == 404


class TestListProjects:
    def test_pages_in_creation_order(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        names = [make_project(client, headers)["name"] for _ in range(3)]
        first = client.get("/v1/projects", params={"limit": 2}, headers=headers).json()
        second = client.get(
            "/v1/projects", params={"cursor": first["next_cursor"]}, headers=headers
        ).json()
        assert [p["name"] for p in first["items"] + second["items"]] == names
        assert second["next_cursor"] is None

    def test_limit_is_clamped_not_rejected(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        make_project(client, headers)
        assert (
            client.get("/v1/projects", params={"limit": 100000}, headers=headers).status_code == 200
        )
        assert client.get("/v1/projects", params={"limit": 0}, headers=headers).status_code == 422


class TestUpdateProject:
    def test_patch_changes_only_sent_fields(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers, guidelines="old")
        response = client.patch(
            f"/v1/projects/{project['id']}",
            json={"guidelines": "new", "labels": ["positive", "negative", "mixed"]},
            headers=headers,
        )
        assert response.status_code == 200
        body = response.json()
        assert body["guidelines"] == "new" and body["labels"] == ["positive", "negative", "mixed"]
        assert body["annotators_per_item"] == project["annotators_per_item"]
        assert body["updated_at"] >= project["updated_at"]

    def test_removing_a_label_in_use_is_409_and_changes_nothing(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        item_id = ingest(client, headers, project["id"], [{"text": "great"}])["results"][0]["id"]
        annotate(client, headers, project["id"], [{"item_id": item_id, "label": "neutral"}])
        response = client.patch(
            f"/v1/projects/{project['id']}",
            json={"labels": ["positive", "negative"], "guidelines": "changed"},
            headers=headers,
        )
        assert response.status_code == 409
        assert "neutral" in response.json()["detail"]
        after = client.get(f"/v1/projects/{project['id']}", headers=headers).json()
        assert after["labels"] == project["labels"] and after["guidelines"] == project["guidelines"]
        # An unused label can go.
        ok = client.patch(
            f"/v1/projects/{project['id']}",
            json={"labels": ["neutral", "positive"]},
            headers=headers,
        )
        assert ok.status_code == 200

    def test_renaming_onto_another_projects_name_is_409_and_changes_nothing(
        self, client: TestClient, session: Session
    ) -> None:
        # Found by schema fuzzing: the clash surfaced at a flush before the commit, as a 500.
        headers = auth(make_key(session))
        taken = make_project(client, headers)
        project = make_project(client, headers, guidelines="old")
        response = client.patch(
            f"/v1/projects/{project['id']}",
            json={"name": taken["name"], "guidelines": "new"},
            headers=headers,
        )
        assert response.status_code == 409
        assert taken["name"] in response.json()["detail"]
        after = client.get(f"/v1/projects/{project['id']}", headers=headers).json()
        assert (after["name"], after["guidelines"]) == (project["name"], "old")

    def test_null_for_required_field_is_422(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        response = client.patch(
            f"/v1/projects/{project['id']}", json={"labels": None}, headers=headers
        )
        assert response.status_code == 422

    def test_raising_overlap_sends_labeled_items_back_to_in_progress(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        item_id = ingest(client, headers, project["id"], [{"text": "fine"}])["results"][0]["id"]
        annotate(client, headers, project["id"], [{"item_id": item_id, "label": "positive"}])
        url = f"/v1/projects/{project['id']}/items/{item_id}"
        assert client.get(url, headers=headers).json()["status"] == "labeled"
        client.patch(
            f"/v1/projects/{project['id']}", json={"annotators_per_item": 2}, headers=headers
        )
        item = client.get(url, headers=headers).json()
        assert (item["status"], item["resolved_label"]) == ("in_progress", None)
