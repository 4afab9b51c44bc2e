from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from app.models.base import Role
from tests.factories import annotate, auth, ingest, make_key, make_project


def annotations_url(project_id: int) -> str:
    return f"/v1/projects/{project_id}/annotations"


def setup_project(
    client: TestClient, session: Session, **fields: Any
) -> tuple[dict[str, str], dict[str, Any], list[int]]:
    admin = auth(make_key(session))
    project = make_project(client, admin, **fields)
    report = ingest(client, admin, project["id"], [{"text": f"item {i}"} for i in range(3)])
    return admin, project, [r["id"] for r in report["results"]]


def item_of(
    client: TestClient, headers: dict[str, str], project_id: int, item_id: int
) -> dict[str, Any]:
    response = client.get(f"/v1/projects/{project_id}/items/{item_id}", headers=headers)
    result: dict[str, Any] = response.json()
    return result


class TestSubmitAnnotations:
    def test_annotator_submits_in_own_name(self, client: TestClient, session: Session) -> None:
        admin, project, ids = setup_project(client, session)
        alice = auth(make_key(session, role=Role.annotator, name="alice"))
        report = annotate(
            client,
            alice,
            project["id"],
            [{"item_id": ids[0], "label": "positive", "duration_ms": 1200}],
        )
        assert report["created"] == 1 and report["results"][0]["id"] is not None
        listed = client.get(annotations_url(project["id"]), headers=admin).json()["items"]
        assert [(a["annotator"], a["label"], a["source"], a["duration_ms"]) for a in listed] == [
            ("alice", "positive", "human", 1200)
        ]

    def test_annotator_cannot_submit_for_someone_else(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project, ids = setup_project(client, session)
        alice = auth(make_key(session, role=Role.annotator, name="alice"))
        response = client.post(
            annotations_url(project["id"]),
            json=[
                {"item_id": ids[0], "label": "positive"},
                {"item_id": ids[1], "label": "negative", "annotator": "bob"},
            ],
            headers=alice,
        )
        assert response.status_code == 403
        assert client.get(annotations_url(project["id"]), headers=admin).json()["items"] == []
        forged = client.post(
            annotations_url(project["id"]),
            json=[{"item_id": ids[0], "label": "positive", "source": "model"}],
            headers=alice,
        )
        assert forged.status_code == 403

    def test_service_key_imports_on_behalf_of_annotators(
        self, client: TestClient, session: Session
    ) -> None:
        _, project, ids = setup_project(client, session)
        service = auth(make_key(session, role=Role.service))
        annotate(
            client,
            service,
            project["id"],
            [
                {
                    "item_id": ids[0],
                    "label": "positive",
                    "annotator": "legacy-db",
                    "source": "import",
                }
            ],
        )
        listed = client.get(
            annotations_url(project["id"]), params={"source": "import"}, headers=service
        ).json()["items"]
        assert [(a["annotator"], a["source"]) for a in listed] == [("legacy-db", "import")]

    def test_resubmission_replaces_and_keeps_history(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project, ids = setup_project(client, session)
        alice = auth(make_key(session, role=Role.annotator, name="alice"))
        first = annotate(client, alice, project["id"], [{"item_id": ids[0], "label": "positive"}])
        second = annotate(
            client,
            alice,
            project["id"],
            [{"item_id": ids[0], "label": "negative", "note": "sarcasm"}],
        )
        assert second["replaced"] == 1 and second["results"][0]["id"] != first["results"][0]["id"]
        current = client.get(annotations_url(project["id"]), headers=admin).json()["items"]
        assert [(a["label"], a["is_current"]) for a in current] == [("negative", True)]
        history = client.get(
            annotations_url(project["id"]), params={"include_history": True}, headers=admin
        ).json()["items"]
        assert [(a["label"], a["is_current"], a["replaced_at"] is not None) for a in history] == [
            ("positive", False, True),
            ("negative", True, False),
        ]
        assert item_of(client, admin, project["id"], ids[0])["resolved_label"] == "negative"

    def test_identical_resubmission_is_unchanged(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project, ids = setup_project(client, session)
        annotate(client, admin, project["id"], [{"item_id": ids[0], "label": "positive"}])
        again = annotate(client, admin, project["id"], [{"item_id": ids[0], "label": "positive"}])
        assert again["unchanged"] == 1
        history = client.get(
            annotations_url(project["id"]), params={"include_history": True}, headers=admin
        ).json()
        assert len(history["items"]) == 1

    def test_each_result_id_is_its_own_entry(self, client: TestClient, session: Session) -> None:
        """Rows are inserted in one statement and their ids matched back by position: every
        result's id must be the annotation of that entry, failed entries in between."""
        admin = auth(make_key(session))
        project = make_project(client, admin, labels=["a", "b", "c"])
        report = ingest(client, admin, project["id"], [{"text": f"t{i}"} for i in range(30)])
        ids = [r["id"] for r in report["results"]]
        entries = [
            {"item_id": item_id, "label": "abc"[n % 3], "annotator": f"w{n % 4}", "note": str(n)}
            for n, item_id in enumerate(reversed(ids))
        ]
        entries.insert(7, {"item_id": ids[0], "label": "nope"})  # fails, in the middle
        answered = annotate(client, admin, project["id"], entries)
        stored = {
            a["id"]: a
            for a in client.get(
                annotations_url(project["id"]), params={"limit": 100}, headers=admin
            ).json()["items"]
        }
        for entry, result in zip(entries, answered["results"], strict=True):
            if result["status"] == "failed":
                assert entry["label"] == "nope" and result.get("id") is None
                continue
            row = stored[result["id"]]
            assert (row["item_id"], row["label"], row["annotator"], row["note"]) == (
                entry["item_id"],
                entry["label"],
                entry["annotator"],
                entry["note"],
            )

    def test_answering_twice_in_one_request_keeps_the_first_as_history(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project, ids = setup_project(client, session)
        annotate(client, admin, project["id"], [{"item_id": ids[0], "label": "positive"}])
        report = annotate(
            client,
            admin,
            project["id"],
            [
                {"item_id": ids[0], "label": "negative"},
                {"item_id": ids[0], "label": "negative"},  # the same again: unchanged
                {"item_id": ids[0], "label": "positive"},
            ],
        )
        assert [r["status"] for r in report["results"]] == ["replaced", "unchanged", "replaced"]
        first, same, last = (r["id"] for r in report["results"])
        assert first == same != last
        history = client.get(
            annotations_url(project["id"]), params={"include_history": True}, headers=admin
        ).json()["items"]
        assert [(a["label"], a["is_current"]) for a in history] == [
            ("positive", False),
            ("negative", False),
            ("positive", True),
        ]
        assert history[1]["id"] == first and history[2]["id"] == last
        assert item_of(client, admin, project["id"], ids[0])["resolved_label"] == "positive"

    def test_unknown_label_fails_that_entry_only(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project, ids = setup_project(client, session)
        report = annotate(
            client,
            admin,
            project["id"],
            [
                {"item_id": ids[0], "label": "positive"},
                {"item_id": ids[1], "label": "purple"},
                {"item_id": 987654, "label": "positive"},
            ],
        )
        assert (report["created"], report["failed"]) == (1, 2)
        assert report["results"][1]["problem"]["status"] == 422
        assert report["results"][1]["problem"]["errors"][0]["loc"] == ["body", 1, "label"]
        assert report["results"][2]["problem"]["status"] == 404
        assert item_of(client, admin, project["id"], ids[1])["annotations"] == []

    def test_all_entries_failing_is_422(self, client: TestClient, session: Session) -> None:
        admin, project, ids = setup_project(client, session)
        response = client.post(
            annotations_url(project["id"]),
            json=[{"item_id": ids[0], "label": "purple"}],
            headers=admin,
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", 0, "label"]

    def test_label_and_abstain_shape_is_validated(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project, ids = setup_project(client, session)
        url = annotations_url(project["id"])
        assert (
            client.post(
                url, json=[{"item_id": ids[0], "label": "positive", "abstain": True}], headers=admin
            ).status_code
            == 422
        )
        assert client.post(url, json=[{"item_id": ids[0]}], headers=admin).status_code == 422
        assert (
            client.post(
                url, json={"item_id": ids[0], "label": "positive"}, headers=admin
            ).status_code
            == 422
        )

    def test_abstain_is_an_answer_that_does_not_label(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project, ids = setup_project(client, session)
        report = annotate(
            client, admin, project["id"], [{"item_id": ids[0], "label": None, "abstain": True}]
        )
        assert report["created"] == 1
        item = item_of(client, admin, project["id"], ids[0])
        # Its one allotted annotator does not know: batches stop handing it out, a reviewer decides.
        assert (item["status"], item["resolved_label"]) == ("needs_review", None)
        assert item["annotations"][0]["abstain"] is True

    def test_abstain_refused_when_the_project_forbids_it(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project, ids = setup_project(client, session, allow_abstain=False)
        response = client.post(
            annotations_url(project["id"]),
            json=[{"item_id": ids[0], "abstain": True}],
            headers=admin,
        )
        assert response.status_code == 422

    def test_status_follows_annotators_per_item(self, client: TestClient, session: Session) -> None:
        admin, project, ids = setup_project(client, session, annotators_per_item=2)
        alice = auth(make_key(session, role=Role.annotator, name="alice"))
        bob = auth(make_key(session, role=Role.annotator, name="bob"))
        carol = auth(make_key(session, role=Role.annotator, name="carol"))
        assert item_of(client, admin, project["id"], ids[0])["status"] == "unlabeled"
        annotate(client, alice, project["id"], [{"item_id": ids[0], "label": "positive"}])
        assert item_of(client, admin, project["id"], ids[0])["status"] == "in_progress"
        annotate(client, bob, project["id"], [{"item_id": ids[0], "label": "positive"}])
        item = item_of(client, admin, project["id"], ids[0])
        assert (item["status"], item["resolved_label"]) == ("labeled", "positive")
        # A tie is never resolved silently: it waits for a reviewer or another vote.
        annotate(client, alice, project["id"], [{"item_id": ids[1], "label": "positive"}])
        annotate(client, bob, project["id"], [{"item_id": ids[1], "label": "negative"}])
        tied = item_of(client, admin, project["id"], ids[1])
        assert (tied["status"], tied["resolved_label"]) == ("needs_review", None)
        annotate(client, carol, project["id"], [{"item_id": ids[1], "label": "negative"}])
        broken = item_of(client, admin, project["id"], ids[1])
        assert (broken["status"], broken["resolved_label"]) == ("labeled", "negative")


class TestListAnnotations:
    def test_filters_and_annotator_privacy(self, client: TestClient, session: Session) -> None:
        admin, project, ids = setup_project(client, session, annotators_per_item=2)
        alice = auth(make_key(session, role=Role.annotator, name="alice"))
        bob = auth(make_key(session, role=Role.annotator, name="bob"))
        annotate(
            client,
            alice,
            project["id"],
            [{"item_id": ids[0], "label": "positive"}, {"item_id": ids[1], "label": "neutral"}],
        )
        annotate(client, bob, project["id"], [{"item_id": ids[0], "label": "negative"}])
        url = annotations_url(project["id"])
        by_item = client.get(url, params={"item_id": ids[0]}, headers=admin).json()["items"]
        assert sorted(a["annotator"] for a in by_item) == ["alice", "bob"]
        assert (
            len(client.get(url, params={"annotator": "alice"}, headers=admin).json()["items"]) == 2
        )
        # Annotators label blind: only their own answers, in listings and in item detail.
        own = client.get(url, headers=bob).json()["items"]
        assert [a["annotator"] for a in own] == ["bob"]
        assert client.get(url, params={"annotator": "alice"}, headers=bob).status_code == 403
        detail = item_of(client, bob, project["id"], ids[0])
        assert [a["annotator"] for a in detail["annotations"]] == ["bob"]
