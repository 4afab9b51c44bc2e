"""Batches: strategies over stored scores, the marked random share, cold start, leases,
overlap, skips and the review queue."""

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, func, select

from app.models.base import Role
from app.models.batch import Batch, Lease
from app.models.item import Item
from tests.factories import annotate, auth, ingest, make_key, make_project

LABELS = ["positive", "negative", "neutral"]


def setup(
    client: TestClient,
    session: Session,
    *,
    n_items: int,
    texts: list[str] | None = None,
    **fields: Any,
) -> tuple[dict[str, str], int, list[int]]:
    admin = auth(make_key(session))
    project = make_project(client, admin, **fields)
    texts = texts or [f"item number {i} says something different {i * 7}" for i in range(n_items)]
    ids = [
        r["id"]
        for r in ingest(client, admin, project["id"], [{"text": t} for t in texts])["results"]
    ]
    return admin, project["id"], ids


def annotator(session: Session, name: str) -> dict[str, str]:
    return auth(make_key(session, role=Role.annotator, name=name))


def fetch(
    client: TestClient, headers: dict[str, str], project_id: int, status: int = 201, **body: Any
) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project_id}/batches", json=body, headers=headers)
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()
    return result


def nothing_to_hand_out(
    client: TestClient, headers: dict[str, str], project_id: int, **body: Any
) -> bool:
    """The request found nothing: 200, the batch shape with no id, lease expiry or items."""
    batch = fetch(client, headers, project_id, status=200, **body)
    return batch["id"] is None and batch["lease_expires_at"] is None and batch["items"] == []


def item_ids(batch: dict[str, Any]) -> list[int]:
    return [entry["item"]["id"] for entry in batch["items"]]


def post_predictions(
    client: TestClient, headers: dict[str, str], project_id: int, rows: dict[int, list[float]]
) -> None:
    """External predictions of model "ext-1": {item_id: [p_positive, p_negative, p_neutral]}."""
    body = [
        {"item_id": i, "model_version": "ext-1", "probabilities": dict(zip(LABELS, p, strict=True))}
        for i, p in rows.items()
    ]
    response = client.post(f"/v1/projects/{project_id}/predictions", json=body, headers=headers)
    assert response.status_code == 200, response.text


class TestStrategies:
    def test_margin_least_confidence_and_entropy_read_the_stored_scores(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project_id, ids = setup(client, session, n_items=6)
        probabilities = {
            ids[0]: [0.98, 0.01, 0.01],  # sure
            ids[1]: [0.50, 0.495, 0.005],  # smallest margin
            ids[2]: [0.34, 0.33, 0.33],  # least confident, highest entropy
            ids[3]: [0.70, 0.20, 0.10],
            ids[4]: [0.60, 0.40, 0.00],
            ids[5]: [0.90, 0.05, 0.05],
        }
        post_predictions(client, admin, project_id, probabilities)
        common: dict[str, Any] = {"size": 3, "model_version": "ext-1", "random_share": 0}

        margin = fetch(client, admin, project_id, strategy="margin", **common)
        assert (margin["strategy"], margin["model_version"]) == ("margin", "ext-1")
        assert item_ids(margin) == [ids[1], ids[2], ids[4]]
        first = margin["items"][0]
        assert first["score"] == pytest.approx(1 - 0.005)
        assert (first["suggested_label"], first["confidence"]) == ("positive", 0.5)
        assert first["exploration"] is False and first["lease"] == "live"
        client.delete(f"/v1/projects/{project_id}/batches/{margin['id']}", headers=admin)

        admin2 = auth(make_key(session, name="second-admin"))
        least = fetch(client, admin2, project_id, strategy="least_confidence", **common)
        assert item_ids(least)[:2] == [ids[2], ids[1]]
        assert least["items"][0]["score"] == pytest.approx(1 - 0.34)
        client.delete(f"/v1/projects/{project_id}/batches/{least['id']}", headers=admin2)

        admin3 = auth(make_key(session, name="third-admin"))
        entropy = fetch(client, admin3, project_id, strategy="entropy", **common)
        assert item_ids(entropy)[0] == ids[2]
        scores = [entry["score"] for entry in entropy["items"]]
        assert scores == sorted(scores, reverse=True)

    def test_every_batch_marks_a_uniform_random_share(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project_id, ids = setup(client, session, n_items=60)
        post_predictions(client, admin, project_id, {i: [0.5, 0.3, 0.2] for i in ids})
        batch = fetch(client, admin, project_id, size=20, model_version="ext-1")
        assert batch["strategy"] == "margin"  # the default with a model
        assert sum(entry["exploration"] for entry in batch["items"]) == 2  # 10% of 20
        assert len(set(item_ids(batch))) == 20

        everyone = fetch(
            client, annotator(session, "ann-r"), project_id, size=10, strategy="random"
        )
        assert everyone["strategy"] == "random"
        assert all(entry["exploration"] for entry in everyone["items"])

    def test_diverse_margin_does_not_fill_a_batch_with_near_copies(
        self, client: TestClient, session: Session
    ) -> None:
        copies = [
            f"install the frobnicator daemon for linux systems version {i}" for i in range(20)
        ]
        others = [
            "a chess engine with opening books",
            "fonts for typesetting mathematics",
            "a python library for parsing dates",
            "kernel headers for building modules",
            "a game about trains and railways",
            "documentation of the perl language",
        ]
        admin, project_id, ids = setup(client, session, n_items=0, texts=copies + others)
        # The copies are the most uncertain, the others only a little less.
        scores = {i: [0.5, 0.5, 0.0] for i in ids[:20]} | {i: [0.55, 0.45, 0.0] for i in ids[20:]}
        post_predictions(client, admin, project_id, scores)
        common: dict[str, Any] = {"size": 5, "model_version": "ext-1", "random_share": 0}
        top = fetch(client, admin, project_id, strategy="margin", **common)
        assert set(item_ids(top)) <= set(ids[:20])  # top-k: five near-copies
        other_admin = auth(make_key(session, name="diverse-admin"))
        diverse = fetch(client, other_admin, project_id, strategy="diverse_margin", **common)
        assert diverse["strategy"] == "diverse_margin"
        assert len(set(item_ids(diverse)) & set(ids[:20])) <= 2

    def test_ranking_walks_past_items_others_hold(
        self, client: TestClient, session: Session
    ) -> None:
        # The 1,000 most uncertain items are held: the walk must page (keyset) past them.
        admin, project_id, ids = setup(client, session, n_items=1_100)
        half = [i / 3_000 for i in range(1_100)]  # margin 2 * half, increasing with the index
        post_predictions(
            client,
            admin,
            project_id,
            {i: [0.5 + h, 0.5 - h, 0.0] for i, h in zip(ids, half, strict=True)},
        )
        common: dict[str, Any] = {"model_version": "ext-1", "random_share": 0, "strategy": "margin"}
        holder = annotator(session, "holder")
        held = item_ids(fetch(client, holder, project_id, size=500, **common))
        held += item_ids(fetch(client, holder, project_id, size=500, **common))
        assert held == ids[:1_000]
        batch = fetch(client, annotator(session, "walker"), project_id, size=10, **common)
        assert item_ids(batch) == ids[1_000:1_010]

    def test_validation_and_unknown_model(self, client: TestClient, session: Session) -> None:
        admin, project_id, _ = setup(client, session, n_items=3)
        for body in (
            {"size": 0},
            {"size": 501},
            {"size": 5, "strategy": "best"},
            {"size": 5, "x": 1},
        ):
            problem = fetch(client, admin, project_id, status=422, **body)
            assert problem["status"] == 422 and problem["errors"]
        problem = fetch(client, admin, project_id, status=409, size=5, model_version="nobody")
        assert problem["type"] == "/problems/no-predictions"
        listed = client.get(f"/v1/projects/{project_id}/items?limit=10", headers=admin).json()
        assert all(i["status"] == "unlabeled" for i in listed["items"])


class TestColdStart:
    def test_without_a_model_a_diverse_draw_covers_the_pool(
        self, client: TestClient, session: Session
    ) -> None:
        # 150 near-identical items and two small, different topics: a uniform draw of six
        # would almost surely miss one topic; the diverse draw covers all three.
        bulk = [f"the same boring sentence about apples number {i}" for i in range(150)]
        rare = [f"quantum chromodynamics lattice simulation run {i}" for i in range(8)]
        rarer = [f"medieval poetry anthology volume {i}" for i in range(8)]
        admin, project_id, ids = setup(client, session, n_items=0, texts=bulk + rare + rarer)
        batch = fetch(client, admin, project_id, size=6, strategy="margin", random_share=0)
        assert (batch["strategy"], batch["model_version"]) == ("cold_start", None)
        assert batch["requested_strategy"] == "margin"
        chosen = set(item_ids(batch))
        assert len(chosen) == 6
        assert chosen & set(ids[150:158]) and chosen & set(ids[158:])
        assert all(entry["score"] is None for entry in batch["items"])

    def test_cold_start_is_not_the_first_rows(self, client: TestClient, session: Session) -> None:
        admin, project_id, ids = setup(client, session, n_items=300)
        batch = fetch(client, admin, project_id, size=20)
        assert batch["strategy"] == "cold_start"
        assert sum(entry["exploration"] for entry in batch["items"]) == 2
        assert max(item_ids(batch)) > ids[100]


class TestLeasesAndOverlap:
    def test_no_item_goes_to_more_annotators_than_the_project_allows(
        self, client: TestClient, session: Session
    ) -> None:
        _admin, project_id, ids = setup(client, session, n_items=5, annotators_per_item=2)
        a, b, c = (annotator(session, n) for n in ("ann-a", "ann-b", "ann-c"))
        got_a = fetch(client, a, project_id, size=10)
        got_b = fetch(client, b, project_id, size=10)
        assert sorted(item_ids(got_a)) == sorted(item_ids(got_b)) == sorted(ids)
        assert nothing_to_hand_out(client, c, project_id, size=10)
        # Holding them, A is not given them again.
        assert nothing_to_hand_out(client, a, project_id, size=10)

    def test_answered_items_never_return_and_started_items_come_first(
        self, client: TestClient, session: Session
    ) -> None:
        _admin, project_id, _ids = setup(client, session, n_items=40, annotators_per_item=2)
        a, b = annotator(session, "ann-d"), annotator(session, "ann-e")
        first = fetch(client, a, project_id, size=5)
        annotate(
            client, a, project_id, [{"item_id": i, "label": "positive"} for i in item_ids(first)]
        )
        state = client.get(f"/v1/projects/{project_id}/batches/{first['id']}", headers=a).json()
        assert {entry["lease"] for entry in state["items"]} == {"answered"}
        assert not set(item_ids(fetch(client, a, project_id, size=40))) & set(item_ids(first))
        # B's batch starts with the items A already started, oldest first.
        second = fetch(client, b, project_id, size=8)
        assert item_ids(second)[:5] == sorted(item_ids(first))

    def test_leases_expire_and_the_items_return(self, client: TestClient, session: Session) -> None:
        _admin, project_id, ids = setup(client, session, n_items=4)
        a, b = annotator(session, "ann-f"), annotator(session, "ann-g")
        held = fetch(client, a, project_id, size=4, lease_seconds=1)
        assert nothing_to_hand_out(client, b, project_id, size=4)
        time.sleep(1.2)
        state = client.get(f"/v1/projects/{project_id}/batches/{held['id']}", headers=a).json()
        assert {entry["lease"] for entry in state["items"]} == {"expired"}
        assert sorted(item_ids(fetch(client, b, project_id, size=4))) == sorted(ids)
        # A late answer on an expired lease is still kept, never lost.
        report = annotate(client, a, project_id, [{"item_id": ids[0], "label": "neutral"}])
        assert report["created"] == 1

    def test_renewing_keeps_the_live_leases_and_leaves_expired_ones_expired(
        self, client: TestClient, session: Session
    ) -> None:
        _admin, project_id, ids = setup(client, session, n_items=4)
        a, b = annotator(session, "ann-r"), annotator(session, "ann-s")
        short = fetch(client, a, project_id, size=2, lease_seconds=1)
        kept = fetch(client, a, project_id, size=2, lease_seconds=1)
        annotate(client, a, project_id, [{"item_id": item_ids(kept)[0], "label": "neutral"}])
        url = f"/v1/projects/{project_id}/batches/{kept['id']}/renew"
        renewed = client.post(url, json={"lease_seconds": 600}, headers=a)
        assert renewed.status_code == 200, renewed.text
        body = renewed.json()
        assert [entry["lease"] for entry in body["items"]] == ["answered", "live"]
        assert body["lease_expires_at"] > kept["lease_expires_at"]
        time.sleep(1.2)
        # The renewed item stays with its annotator; the other batch's items return.
        assert sorted(item_ids(fetch(client, b, project_id, size=4))) == sorted(item_ids(short))
        late = client.post(
            f"/v1/projects/{project_id}/batches/{short['id']}/renew", json={}, headers=a
        ).json()
        assert [entry["lease"] for entry in late["items"]] == ["expired", "expired"]
        assert late["lease_expires_at"] == short["lease_expires_at"]
        assert set(ids) == set(item_ids(short)) | set(item_ids(kept))

    def test_renewing_validates_its_body(self, client: TestClient, session: Session) -> None:
        _admin, project_id, _ids = setup(client, session, n_items=1)
        a = annotator(session, "ann-t")
        batch = fetch(client, a, project_id, size=1)
        url = f"/v1/projects/{project_id}/batches/{batch['id']}/renew"
        for bad in ({"lease_seconds": 0}, {"lease_seconds": 7 * 24 * 3600 + 1}, {"size": 3}):
            refused = client.post(url, json=bad, headers=a)
            assert refused.status_code == 422, refused.text
        assert client.get(url.removesuffix("/renew"), headers=a).json() == batch  # unchanged
        missing = client.post(f"/v1/projects/{project_id}/batches/999999/renew", json={}, headers=a)
        assert missing.status_code == 404

    def test_deleting_a_batch_releases_its_unanswered_items(
        self, client: TestClient, session: Session
    ) -> None:
        _admin, project_id, _ids = setup(client, session, n_items=3)
        a, b = annotator(session, "ann-h"), annotator(session, "ann-i")
        batch = fetch(client, a, project_id, size=3)
        annotate(client, a, project_id, [{"item_id": item_ids(batch)[0], "label": "positive"}])
        url = f"/v1/projects/{project_id}/batches/{batch['id']}"
        refused = client.delete(url, headers=b)
        assert refused.status_code == 409
        assert refused.json()["type"] == "/problems/lease-held-by-another"
        assert client.delete(url, headers=a).status_code == 204
        assert client.delete(url, headers=a).status_code == 204  # idempotent
        state = client.get(url, headers=a).json()
        assert [entry["lease"] for entry in state["items"]] == ["answered", "released", "released"]
        assert state["released_at"] is not None
        assert sorted(item_ids(fetch(client, b, project_id, size=3))) == sorted(item_ids(batch)[1:])

    def test_skipped_items_go_to_others_not_back_to_the_skipper(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project_id, _ids = setup(client, session, n_items=3)
        a, b = annotator(session, "ann-j"), annotator(session, "ann-k")
        batch = fetch(client, a, project_id, size=2)
        skipped = item_ids(batch)[0]
        url = f"/v1/projects/{project_id}/batches/{batch['id']}/skip"
        state = client.post(url, json={"item_ids": [skipped]}, headers=a)
        assert state.status_code == 200
        assert [e["lease"] for e in state.json()["items"]] == ["skipped", "live"]
        assert skipped not in item_ids(fetch(client, a, project_id, size=3))
        other = fetch(client, b, project_id, size=3)
        assert skipped in item_ids(other)
        # Skipped by two people: the report surfaces it (often an ambiguous item).
        url = f"/v1/projects/{project_id}/batches/{other['id']}/skip"
        assert client.post(url, json={"item_ids": [skipped]}, headers=b).status_code == 200
        report = client.get(f"/v1/projects/{project_id}/active-learning", headers=admin).json()
        assert report["most_skipped"] == [{"item_id": skipped, "skips": 2}]

    def test_skip_refuses_unknown_and_answered_items_and_changes_nothing(
        self, client: TestClient, session: Session
    ) -> None:
        _admin, project_id, _ids = setup(client, session, n_items=2)
        a = annotator(session, "ann-l")
        batch = fetch(client, a, project_id, size=2)
        url = f"/v1/projects/{project_id}/batches/{batch['id']}/skip"
        first, second = item_ids(batch)
        unknown = client.post(url, json={"item_ids": [first, 999_999]}, headers=a)
        assert unknown.status_code == 422
        assert unknown.json()["errors"][0]["loc"] == ["body", "item_ids", 1]
        annotate(client, a, project_id, [{"item_id": second, "label": "positive"}])
        answered = client.post(url, json={"item_ids": [first, second]}, headers=a)
        assert answered.status_code == 409
        state = client.get(f"/v1/projects/{project_id}/batches/{batch['id']}", headers=a).json()
        assert [e["lease"] for e in state["items"]] == ["live", "answered"]

    def test_only_admin_and_service_keys_fetch_for_someone_else(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project_id, _ = setup(client, session, n_items=2)
        a = annotator(session, "ann-m")
        refused = client.post(
            f"/v1/projects/{project_id}/batches", json={"size": 1, "annotator": "ann-n"}, headers=a
        )
        assert refused.status_code == 403
        batch = fetch(client, admin, project_id, size=1, annotator="ann-m")
        assert batch["annotator"] == "ann-m"
        # The lease is ann-m's: ann-m sees it, and is not handed that item again.
        assert (
            client.get(f"/v1/projects/{project_id}/batches/{batch['id']}", headers=a).status_code
            == 200
        )
        assert item_ids(fetch(client, a, project_id, size=2)) != item_ids(batch)

    def test_unknown_batch_is_404(self, client: TestClient, session: Session) -> None:
        admin, project_id, _ = setup(client, session, n_items=1)
        response = client.get(f"/v1/projects/{project_id}/batches/987654", headers=admin)
        assert response.status_code == 404


class TestReviewQueue:
    def test_hands_out_needs_review_items_with_suggestion_and_reason(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project_id, ids = setup(client, session, n_items=4, annotators_per_item=2)
        a, b, c, d = (annotator(session, n) for n in ("rev-a", "rev-b", "rev-c", "rev-d"))
        # ids[0]: a disagreement; ids[1]: a low-confidence prelabel; ids[2]: an abstention.
        annotate(client, a, project_id, [{"item_id": ids[0], "label": "positive"}])
        annotate(client, b, project_id, [{"item_id": ids[0], "label": "negative"}])
        item = session.get(Item, ids[1])
        assert item is not None
        # An auto-accept sampled for audit: resolved by the model, to be checked by a human.
        item.status, item.review_reason = "needs_review", "audit"
        item.resolved_label, item.resolved_by = "neutral", "model"
        item.suggested_label, item.suggestion_confidence = "neutral", 0.97
        session.add(item)
        session.flush()
        annotate(client, a, project_id, [{"item_id": ids[2], "abstain": True}])
        annotate(client, b, project_id, [{"item_id": ids[2], "label": "neutral"}])

        review = fetch(client, c, project_id, size=10, queue="review")
        assert review["strategy"] == "review"
        by_id = {entry["item"]["id"]: entry for entry in review["items"]}
        assert set(by_id) == {ids[0], ids[1], ids[2]}
        assert by_id[ids[0]]["review_reason"] == "disagreement"
        assert by_id[ids[2]]["review_reason"] == "abstained"
        suggestion = by_id[ids[1]]
        assert (suggestion["review_reason"], suggestion["suggested_label"]) == ("audit", "neutral")
        assert suggestion["confidence"] == 0.97
        # Annotators label blind: the batch shows the suggestion, never the resolved label.
        assert suggestion["item"]["resolved_label"] is None
        # One reviewer at a time, and never someone who already answered.
        assert nothing_to_hand_out(client, d, project_id, size=10, queue="review")
        client.delete(f"/v1/projects/{project_id}/batches/{review['id']}", headers=c)
        assert item_ids(fetch(client, a, project_id, size=10, queue="review")) == [ids[1]]
        # The reviewer's answer breaks the tie.
        annotate(client, c, project_id, [{"item_id": ids[0], "label": "negative"}])
        settled = client.get(f"/v1/projects/{project_id}/items/{ids[0]}", headers=admin).json()
        assert (settled["status"], settled["resolved_label"]) == ("labeled", "negative")


class TestNothingToHandOut:
    def test_an_empty_answer_stores_no_batch_and_keeps_the_batch_shape(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project_id, ids = setup(client, session, n_items=2)
        a, b = annotator(session, "empty-a"), annotator(session, "empty-b")
        response = client.post(f"/v1/projects/{project_id}/batches", json={"size": 5}, headers=a)
        assert response.status_code == 201, response.text
        held = response.json()
        assert sorted(item_ids(held)) == sorted(ids)
        # A created batch says where it lives.
        location = response.headers["location"]
        assert location == f"/v1/projects/{project_id}/batches/{held['id']}"
        assert client.get(location, headers=a).json()["id"] == held["id"]

        def stored() -> tuple[int, int]:
            batches = session.exec(
                select(func.count()).select_from(Batch).where(col(Batch.project_id) == project_id)
            ).one()
            leases = session.exec(
                select(func.count()).select_from(Lease).where(col(Lease.project_id) == project_id)
            ).one()
            return batches, leases

        before = stored()
        for body in (
            {"size": 5},
            {"size": 5, "strategy": "random"},
            {"size": 5, "queue": "review"},
        ):
            response = client.post(f"/v1/projects/{project_id}/batches", json=body, headers=b)
            assert response.status_code == 200, response.text
            assert "location" not in response.headers
            empty = response.json()
            assert empty.keys() == held.keys()
            assert (empty["id"], empty["lease_expires_at"], empty["items"]) == (None, None, [])
            assert (empty["annotator"], empty["queue"]) == ("empty-b", body.get("queue", "label"))
            assert empty["requested_strategy"] == body.get("strategy")
        assert stored() == before
        # Nor does the batch-use report count requests that handed nothing out.
        report = client.get(f"/v1/projects/{project_id}/active-learning", headers=admin).json()
        assert [(s["strategy"], s["batches"]) for s in report["strategies"]] == [("cold_start", 1)]

    def test_the_spec_describes_both_answers_with_the_one_batch_shape(
        self, client: TestClient
    ) -> None:
        spec = client.get("/openapi.json").json()
        answers = spec["paths"]["/v1/projects/{project_id}/batches"]["post"]["responses"]
        shape = {"$ref": "#/components/schemas/BatchPublic"}
        for status in ("200", "201"):
            assert answers[status]["content"]["application/json"]["schema"] == shape
        assert "Location" in answers["201"]["headers"]
        assert "nothing" in answers["200"]["description"].lower()
        fields = spec["components"]["schemas"]["BatchPublic"]["properties"]
        assert {"type": "null"} in fields["id"]["anyOf"]
