"""Click-log imports through HTTP with the job really running: query-document items with
implicit labels and their provenance, the counts per rule, thresholds per request,
idempotent re-imports, and the lower trust of implicit labels (people override them, they are
not votes, they train with a lower weight, the stats warn when they dominate)."""

import json
import uuid
from collections import Counter
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.models.base import Role
from tests.conftest import wait_for_job
from tests.factories import auth, make_key, make_project, unique

LABELS = ["relevant", "not_relevant"]


def result(doc_id: str, position: int, clicked: bool = False, dwell: float = 0.0) -> dict[str, Any]:
    return {"doc_id": doc_id, "position": position, "clicked": clicked, "dwell_time": dwell}


# Five pairs, one of each outcome, and a conflict: ("laptop", "d2") is skipped at the top in
# the first session and read for a minute in the third ("Laptop " is the same query).
SESSIONS = [
    {
        "query": "laptop",
        "results": [
            result("d1", 1, True, 45.0),  # long click: relevant
            result("d2", 2),  # skipped at the top ...
            result("d3", 3, True, 5.0),  # short click: no label (a long click at min_dwell 3)
            result("d4", 7),  # shown low, not clicked: no label (not_relevant at max_position 10)
        ],
    },
    {"query": "phone", "results": [result("d1", 1)]},  # skipped at the top: not_relevant
    {"query": "Laptop ", "results": [result("d2", 1, True, 60.0)]},  # ... and read: relevant
]


def click_project(client: TestClient, **fields: Any) -> int:
    body = {"name": f"clicks-{uuid.uuid4().hex[:8]}", "labels": LABELS, "phase": "production"}
    response = client.post("/v1/projects", json=body | fields)
    assert response.status_code == 201, response.text
    project_id: int = response.json()["id"]
    return project_id


def import_clicks(client: TestClient, project_id: int, **body: Any) -> dict[str, Any]:
    response = client.post(
        f"/v1/projects/{project_id}/imports", json={"kind": "click_logs", **body}
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    job = wait_for_job(client, response.json())
    assert job["status"] == "succeeded", job["error"]
    assert job["kind"] == "import_click_logs"
    return job


def items_by_pair(client: TestClient, project_id: int) -> dict[tuple[str, str], dict[str, Any]]:
    params: dict[str, Any] = {"limit": 1000, "source": "user_behavior"}
    page = client.get(f"/v1/projects/{project_id}/items", params=params).json()
    return {(i["data"]["query"], i["data"]["doc_id"]): i for i in page["items"]}


def current_annotations(client: TestClient, project_id: int, **params: Any) -> list[Any]:
    page = client.get(f"/v1/projects/{project_id}/annotations", params=params | {"limit": 1000})
    assert page.status_code == 200, page.text
    items: list[Any] = page.json()["items"]
    return items


class TestImport:
    def test_pairs_become_items_with_implicit_labels_provenance_and_counts(
        self, live_client: TestClient
    ) -> None:
        project_id = click_project(live_client)
        job = import_clicks(live_client, project_id, sessions=SESSIONS)

        assert "payload" not in job["params"]  # the sessions stay out of every poll
        assert job["params"]["sessions"] == 3 and job["params"]["impressions"] == 6
        r = job["result"]
        assert (r["sessions"], r["impressions"], r["pairs"], r["conflicts"]) == (3, 6, 5, 1)
        assert r["rules"] == {
            "relevant_long_click": 2,
            "not_relevant_skipped": 1,
            "ignored_short_click": 1,
            "ignored_low_position": 1,
        }
        assert r["impressions_by_kind"] == {
            "long_click": 2,
            "short_click": 1,
            "skipped_at_top": 2,
            "not_clicked_below": 1,
        }
        assert r["items"] == {
            "created": 5,
            "updated": 0,
            "unchanged": 0,
            "skipped_duplicate_text": 0,
        }
        assert r["labels"] == {"created": 3, "replaced": 0, "unchanged": 0}
        assert (r["min_dwell_seconds"], r["max_position"], r["annotator"]) == (
            30.0,
            3,
            "user_behavior",
        )

        items = items_by_pair(live_client, project_id)
        expected = {
            ("laptop", "d1"): "relevant",
            ("laptop", "d2"): "relevant",
            ("laptop", "d3"): None,
            ("laptop", "d4"): None,
            ("phone", "d1"): "not_relevant",
        }
        assert {pair: i["resolved_label"] for pair, i in items.items()} == expected
        for (query, doc_id), item in items.items():
            assert item["source"] == "user_behavior"
            assert item["text"] == f"query: {query}\ndocument: {doc_id}"
            assert item["external_id"].startswith("click:")
            assert item["provenance"]["kind"] == "click_logs"
            assert item["provenance"]["name"] == "user_behavior"
            assert item["provenance"]["job_id"] == job["id"]
            assert "imported_at" in item["provenance"]
            labeled = expected[(query, doc_id)] is not None
            assert item["status"] == ("labeled" if labeled else "unlabeled")
            assert item["resolved_by"] == ("user_behavior" if labeled else None)

        annotations = current_annotations(live_client, project_id, source="user_behavior")
        assert len(annotations) == 3
        conflict = next(a for a in annotations if a["item_id"] == items[("laptop", "d2")]["id"])
        assert (conflict["annotator"], conflict["label"], conflict["source"]) == (
            "user_behavior",
            "relevant",
            "user_behavior",
        )
        assert conflict["provenance"]["rule"] == "relevant_long_click"
        assert conflict["provenance"]["impressions"] == {
            "long_click": 1,
            "short_click": 0,
            "skipped_at_top": 1,
            "not_clicked_below": 0,
        }
        assert conflict["provenance"]["job_id"] == job["id"]

        stats = live_client.get(f"/v1/projects/{project_id}/stats").json()
        by_resolution = {s["source"]: s for s in stats["label_sources"]["by_resolution"]}
        assert by_resolution["user_behavior"]["count"] == 3
        assert stats["label_sources"]["n_resolved"] == 3

    def test_thresholds_per_request_change_the_outcome(self, live_client: TestClient) -> None:
        project_id = click_project(live_client)
        job = import_clicks(
            live_client, project_id, sessions=SESSIONS, min_dwell_seconds=3, max_position=10
        )
        assert job["result"]["rules"] == {
            "relevant_long_click": 3,  # the 5-second click is long enough now
            "not_relevant_skipped": 2,  # and position 7 is within the top 10
            "ignored_short_click": 0,
            "ignored_low_position": 0,
        }
        labels = {p: i["resolved_label"] for p, i in items_by_pair(live_client, project_id).items()}
        assert (labels[("laptop", "d3")], labels[("laptop", "d4")]) == ("relevant", "not_relevant")

    def test_the_same_sessions_again_change_nothing(self, live_client: TestClient) -> None:
        project_id = click_project(live_client)
        import_clicks(live_client, project_id, sessions=SESSIONS)
        before = items_by_pair(live_client, project_id)
        history = current_annotations(live_client, project_id, include_history=True)

        again = import_clicks(live_client, project_id, sessions=list(reversed(SESSIONS)))
        assert again["result"]["items"] == {
            "created": 0,
            "updated": 0,
            "unchanged": 5,
            "skipped_duplicate_text": 0,
        }
        assert again["result"]["labels"] == {"created": 0, "replaced": 0, "unchanged": 3}
        assert items_by_pair(live_client, project_id) == before
        assert current_annotations(live_client, project_id, include_history=True) == history

        # New evidence under the same annotator replaces its label, with history kept.
        flipped = [{"query": "phone", "results": [result("d1", 4, True, 120.0)]}]
        third = import_clicks(live_client, project_id, sessions=flipped)
        assert third["result"]["labels"] == {"created": 0, "replaced": 1, "unchanged": 0}
        assert items_by_pair(live_client, project_id)[("phone", "d1")]["resolved_label"] == (
            "relevant"
        )

    def test_a_named_log_source_and_a_doc_id_clash(self, live_client: TestClient) -> None:
        project_id = click_project(live_client)
        sessions = [{"query": "tv", "results": [result("X-1", 1, True, 40), result("x-1", 2)]}]
        job = import_clicks(live_client, project_id, sessions=sessions, annotator="shop-search")
        # Two doc ids that differ only in case read the same to the duplicate-text rule: the
        # second pair is skipped and said so, never merged into the first.
        assert job["result"]["items"]["created"] == 1
        assert job["result"]["items"]["skipped_duplicate_text"] == 1
        (skipped,) = job["result"]["skipped"]
        assert skipped["doc_id"] == "x-1" and skipped["item_id"] is not None
        (annotation,) = current_annotations(live_client, project_id, source="user_behavior")
        assert annotation["annotator"] == "shop-search"
        assert annotation["provenance"]["name"] == "shop-search"

    def test_an_edited_pair_item_is_restored_unless_its_text_was_taken(
        self, live_client: TestClient
    ) -> None:
        project_id = click_project(live_client)
        sessions = [{"query": "tv", "results": [result("a", 1, True, 40), result("b", 2)]}]
        first = import_clicks(live_client, project_id, sessions=sessions)
        items = items_by_pair(live_client, project_id)
        a, b = items[("tv", "a")], items[("tv", "b")]
        # Both items are edited through the items API; a third item takes b's old text.
        edits = [
            {"external_id": a["external_id"], "text": "edited a", "source": "user_behavior"},
            {"external_id": b["external_id"], "text": "edited b", "source": "user_behavior"},
            {"text": b["text"]},
        ]
        ingested = live_client.post(f"/v1/projects/{project_id}/items", json=edits).json()
        assert (ingested["updated"], ingested["created"]) == (2, 1)
        taker = ingested["results"][2]["id"]

        again = import_clicks(live_client, project_id, sessions=sessions)
        assert again["result"]["items"] == {
            "created": 0,
            "updated": 1,
            "unchanged": 0,
            "skipped_duplicate_text": 1,
        }
        assert again["result"]["skipped"] == [{"query": "tv", "doc_id": "b", "item_id": taker}]
        assert again["result"]["labels"] == {"created": 0, "replaced": 0, "unchanged": 1}
        restored = live_client.get(f"/v1/projects/{project_id}/items/{a['id']}").json()
        assert restored["text"] == a["text"]
        assert restored["provenance"]["job_id"] == again["id"] != first["id"]
        kept = live_client.get(f"/v1/projects/{project_id}/items/{b['id']}").json()
        assert (kept["text"], kept["provenance"]["job_id"]) == ("edited b", first["id"])


class TestLowerTrust:
    def test_people_override_implicit_labels(self, live_client: TestClient) -> None:
        project_id = click_project(live_client)
        import_clicks(live_client, project_id, sessions=SESSIONS)
        items = items_by_pair(live_client, project_id)
        skipped, read = items[("phone", "d1")], items[("laptop", "d1")]
        assert (skipped["resolved_label"], skipped["resolved_by"]) == (
            "not_relevant",
            "user_behavior",
        )

        response = live_client.post(
            f"/v1/projects/{project_id}/annotations",
            json=[{"item_id": skipped["id"], "label": "relevant"}],
        )
        assert response.status_code == 200, response.text
        item = live_client.get(f"/v1/projects/{project_id}/items/{skipped['id']}").json()
        assert (item["status"], item["resolved_label"], item["resolved_by"]) == (
            "labeled",
            "relevant",
            "consensus",
        )
        # The implicit label is still there, just outranked.
        sources = sorted(a["source"] for a in item["annotations"])
        assert sources == ["human", "user_behavior"]

        review = live_client.post(
            f"/v1/projects/{project_id}/reviews",
            json={"item_id": read["id"], "label": "not_relevant"},
        )
        assert review.status_code == 201, review.text
        assert review.json()["previous_resolved_by"] == "user_behavior"
        item = live_client.get(f"/v1/projects/{project_id}/items/{read['id']}").json()
        assert (item["resolved_label"], item["resolved_by"]) == ("not_relevant", "review")

    def test_implicit_labels_are_not_votes(self, live_client: TestClient) -> None:
        project_id = click_project(live_client)
        import_clicks(live_client, project_id, sessions=SESSIONS)
        items = items_by_pair(live_client, project_id)
        labeled = [i["id"] for i in items.values() if i["resolved_label"] is not None]
        key = live_client.post(
            "/v1/api-keys", json={"name": unique("alice"), "role": "annotator"}
        ).json()
        response = live_client.post(
            f"/v1/projects/{project_id}/annotations",
            json=[{"item_id": i, "label": "relevant"} for i in labeled],
            headers=auth(key["key"]),
        )
        assert response.status_code == 200, response.text

        report = live_client.get(f"/v1/projects/{project_id}/agreement").json()
        # Counted as votes, the implicit labels would pair with alice's on all three items.
        assert (report["n_annotators"], report["n_labels"], report["n_pairable_items"]) == (
            1,
            3,
            0,
        )
        consensus = live_client.get(f"/v1/projects/{project_id}/consensus").json()
        assert [a["annotator"] for a in consensus["annotators"]] == [key["name"]]

    def test_a_model_trains_on_click_labels_at_a_lower_weight(
        self, live_client: TestClient
    ) -> None:
        project_id = click_project(live_client)
        topics = ["guitar", "camera", "sofa", "kettle", "bicycle", "printer", "tent", "drill"]
        sessions = [
            {
                "query": f"buy {topic}",
                "results": [
                    result(f"{topic}-buying-guide", 1, True, 90.0),
                    result(f"casino-bonus-ad-{n}", 2),
                    result(f"{topic}-reviews", 6),  # no label: left to people or a model
                ],
            }
            for n, topic in enumerate(topics)
        ]
        import_clicks(live_client, project_id, sessions=sessions)
        # Three human labels too: the training set holds both, each with its weight.
        human = live_client.post(
            f"/v1/projects/{project_id}/items",
            json=[
                {"text": "query: buy lamp\ndocument: lamp-buying-guide"},
                {"text": "query: buy rug\ndocument: rug-buying-guide"},
                {"text": "query: buy lamp\ndocument: casino-bonus-ad-x"},
            ],
        ).json()
        ids = [r["id"] for r in human["results"]]
        live_client.post(
            f"/v1/projects/{project_id}/annotations",
            json=[
                {"item_id": ids[0], "label": "relevant"},
                {"item_id": ids[1], "label": "relevant"},
                {"item_id": ids[2], "label": "not_relevant"},
            ],
        )

        response = live_client.post(f"/v1/projects/{project_id}/models", json={"activate": True})
        assert response.status_code == 202, response.text
        job = wait_for_job(live_client, response.json())
        assert job["status"] == "succeeded", job["error"]
        assert (job["result"]["n_train"], job["result"]["n_user_behavior"]) == (19, 16)
        version = live_client.get(f"/v1/projects/{project_id}/models/1").json()
        assert version["label_distribution"] == {"not_relevant": 9, "relevant": 10}
        assert version["metrics"]["n_user_behavior"] == 16
        stats = live_client.get(f"/v1/projects/{project_id}/stats").json()
        assert any(w.startswith("Implicit labels: 84%") for w in stats["warnings"]), stats

        # Prelabels auto-accept only the unlabeled pairs: an auto-accept would outrank the
        # clicks and take their items out of the training set.
        response = live_client.post(
            f"/v1/projects/{project_id}/prelabels", json={"threshold": 0.5, "audit_share": 0}
        )
        assert response.status_code == 202, response.text
        prelabel = wait_for_job(live_client, response.json())
        assert prelabel["status"] == "succeeded", prelabel["error"]
        assert prelabel["result"]["auto_accepted"] == len(topics)
        resolved_by = Counter(
            i["resolved_by"] for i in items_by_pair(live_client, project_id).values()
        )
        assert resolved_by == {"user_behavior": 16, "model": len(topics)}


class TestRequest:
    def url(self, project: dict[str, Any]) -> str:
        return f"/v1/projects/{project['id']}/imports"

    def body(self, **fields: Any) -> dict[str, Any]:
        return {"kind": "click_logs", "sessions": SESSIONS, **fields}

    def test_bad_requests_are_clear_problems_and_write_nothing(
        self, client: TestClient, app: FastAPI, session: Session
    ) -> None:
        admin = auth(make_key(session))
        project = make_project(client, admin, labels=LABELS)
        before = list(app.state.runner.enqueued)

        bad_position = self.body(sessions=[{"query": "q", "results": [result("d", 0)]}])
        response = client.post(self.url(project), json=bad_position, headers=admin)
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == [
            "body",
            "sessions",
            0,
            "results",
            0,
            "position",
        ]

        nan = json.dumps(self.body(sessions=[{"query": "q", "results": [result("d", 1)]}]))
        nan = nan.replace('"dwell_time": 0.0', '"dwell_time": NaN')
        assert "NaN" in nan
        response = client.post(
            self.url(project),
            content=nan,
            headers=admin | {"content-type": "application/json"},
        )
        # NaN is not JSON: the body is refused before any field is read.
        assert response.status_code == 422
        assert "NaN" in response.json()["detail"], response.text

        annotator = auth(make_key(session, role=Role.annotator))
        forbidden = client.post(self.url(project), json=self.body(), headers=annotator)
        assert forbidden.status_code == 403

        no_labels = make_project(client, admin, labels=["relevant", "spam"])
        response = client.post(self.url(no_labels), json=self.body(), headers=admin)
        assert response.status_code == 422
        problem = response.json()
        assert problem["type"] == "/problems/labels-missing"
        assert "not_relevant" in problem["detail"] and "Nothing was queued" in problem["detail"]

        assert app.state.runner.enqueued == before
        for p in (project, no_labels):
            jobs = client.get("/v1/jobs", params={"project_id": p["id"]}, headers=admin)
            assert jobs.json()["items"] == []
            items = client.get(f"/v1/projects/{p['id']}/items", headers=admin)
            assert items.json()["items"] == []

    def test_a_service_key_queues_an_import(
        self, client: TestClient, app: FastAPI, session: Session
    ) -> None:
        admin = auth(make_key(session))
        service = auth(make_key(session, role=Role.service))
        project = make_project(client, admin, labels=LABELS)
        response = client.post(
            self.url(project), json=self.body(min_dwell_seconds=10), headers=service
        )
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["status"] == "queued" and app.state.runner.enqueued[-1] == job["id"]
        assert job["params"] == {
            "kind": "click_logs",
            "min_dwell_seconds": 10.0,
            "max_position": 3,
            "annotator": "user_behavior",
            "sessions": 3,
            "impressions": 6,
        }


class TestOverlap:
    def test_an_implicit_label_does_not_fill_an_annotators_place(
        self, client: TestClient, session: Session
    ) -> None:
        # Two people per item; one has answered, and the clicks gave a label too. Counted as an
        # answer, the implicit label would fill the second place and no batch would offer it.
        admin = auth(make_key(session))
        project = make_project(client, admin, labels=LABELS, annotators_per_item=2)
        (item_id,) = [
            r["id"]
            for r in client.post(
                f"/v1/projects/{project['id']}/items",
                json=[{"text": "query: q\ndocument: d", "source": "user_behavior"}],
                headers=admin,
            ).json()["results"]
        ]
        answers = [
            {
                "item_id": item_id,
                "label": "relevant",
                "annotator": "clicks",
                "source": "user_behavior",
            },
            {"item_id": item_id, "label": "relevant", "annotator": "ann-1", "source": "human"},
        ]
        assert (
            client.post(
                f"/v1/projects/{project['id']}/annotations", json=answers, headers=admin
            ).status_code
            == 200
        )
        item = client.get(f"/v1/projects/{project['id']}/items/{item_id}", headers=admin).json()
        assert (item["status"], item["resolved_by"]) == ("in_progress", "user_behavior")

        bob = auth(make_key(session, role=Role.annotator, name=unique("bob")))
        batch = client.post(f"/v1/projects/{project['id']}/batches", json={"size": 5}, headers=bob)
        assert batch.status_code == 201, batch.text
        assert [e["item"]["id"] for e in batch.json()["items"]] == [item_id]
