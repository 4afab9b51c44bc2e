"""External predictions: validated entry by entry, stored, and used like the registry's own."""

import math
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.models.base import Role
from tests.api.test_registry import labeled_project
from tests.conftest import wait_for_job
from tests.factories import auth, ingest, make_key, make_project


def post(client: TestClient, project_id: int, entries: list[dict[str, Any]], **kw: Any) -> Any:
    return client.post(f"/v1/projects/{project_id}/predictions", json=entries, **kw)


class TestCreatePredictions:
    def test_stores_by_item_id_or_external_id_and_updates_on_resend(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session, role=Role.service))
        project = make_project(client, headers)
        items = ingest(
            client, headers, project["id"], [{"text": "one", "external_id": "x1"}, {"text": "two"}]
        )
        first, second = (r["id"] for r in items["results"])
        entries = [
            {
                "item_id": first,
                "probabilities": {"positive": 0.7, "negative": 0.2, "neutral": 0.1},
                "model_version": "svc-1",
            },
            {"external_id": "x1", "probabilities": {"negative": 1.0}, "model_version": "svc-2"},
            {
                "item_id": second,
                "probabilities": {"neutral": 0.5, "negative": 0.5},
                "model_version": "svc-1",
            },
        ]
        report = post(client, project["id"], entries, headers=headers).json()
        assert (report["created"], report["updated"], report["failed"]) == (3, 0, 0)
        assert [r["item_id"] for r in report["results"]] == [first, first, second]
        again = post(client, project["id"], entries[:1], headers=headers).json()
        assert (again["created"], again["updated"]) == (0, 1)

        detail = client.get(f"/v1/projects/{project['id']}/items/{first}", headers=headers).json()
        by_version = {p["model_version"]: p for p in detail["predictions"]}
        assert by_version["svc-1"]["source"] == "external"
        assert by_version["svc-1"]["label"] == "positive"
        assert by_version["svc-1"]["confidence"] == pytest.approx(0.7)
        assert by_version["svc-1"]["margin"] == pytest.approx(0.5)
        assert by_version["svc-2"]["label"] == "negative"
        assert by_version["svc-2"]["entropy"] == pytest.approx(0.0)

    def test_bad_entries_fail_alone_with_details(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session, role=Role.service))
        project = make_project(client, headers)
        [item] = ingest(client, headers, project["id"], [{"text": "one"}])["results"]
        good = {"item_id": item["id"], "probabilities": {"positive": 1.0}, "model_version": "m"}
        entries = [
            good,
            {**good, "probabilities": {"happy": 1.0}},
            {**good, "probabilities": {"positive": -0.5, "negative": 1.5}},
            {**good, "probabilities": {"positive": 0.5, "negative": 0.1}},
            {**good, "item_id": 999_999},
            {**good, "model_version": "registry:1"},
            {**good, "probabilities": {"positive": "high"}},
        ]
        report = post(client, project["id"], entries, headers=headers).json()
        assert report["created"] == 1 and report["failed"] == 6
        problems = {r["index"]: r["problem"] for r in report["results"] if r["status"] == "failed"}
        assert problems[1]["errors"][0] == {
            "loc": ["body", 1, "probabilities", "happy"],
            "msg": "unknown label 'happy'; the project's labels are "
            "['positive', 'negative', 'neutral']",
        }
        assert {e["loc"][-1] for e in problems[2]["errors"]} == {"positive", "negative"}
        assert "sum to 1" in problems[3]["detail"]
        assert problems[4]["status"] == 404
        assert problems[5]["errors"][0]["loc"] == ["body", 5, "model_version"]
        assert "number" in problems[6]["errors"][0]["msg"]

    def test_nan_is_rejected_per_entry(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session, role=Role.service))
        project = make_project(client, headers)
        [item] = ingest(client, headers, project["id"], [{"text": "one"}])["results"]
        entry = '{"item_id": %d, "probabilities": {"positive": %s}, "model_version": "m"}'
        body = f"[{entry % (item['id'], 'NaN')}, {entry % (item['id'], '1')}]"
        response = client.post(
            f"/v1/projects/{project['id']}/predictions",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["failed"] == 1
        assert report["results"][0]["problem"]["errors"][0]["msg"] == "must be finite"

    def test_all_bad_is_422_and_writes_nothing(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session, role=Role.service))
        project = make_project(client, headers)
        [item] = ingest(client, headers, project["id"], [{"text": "one"}])["results"]
        response = post(
            client,
            project["id"],
            [{"item_id": item["id"], "probabilities": {"x": 1.0}, "model_version": "m"}],
            headers=headers,
        )
        assert response.status_code == 422
        detail = client.get(f"/v1/projects/{project['id']}/items/{item['id']}", headers=headers)
        assert detail.json()["predictions"] == []

    def test_entry_needs_exactly_one_reference(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session, role=Role.service))
        project = make_project(client, headers)
        response = post(
            client,
            project["id"],
            [{"probabilities": {"positive": 1}, "model_version": "m"}],
            headers=headers,
        )
        assert response.status_code == 422

    def test_annotators_cannot_post_predictions(self, client: TestClient, session: Session) -> None:
        admin = auth(make_key(session))
        project = make_project(client, admin)
        annotator = auth(make_key(session, role=Role.annotator))
        assert post(client, project["id"], [], headers=annotator).status_code == 403


class TestExternalPredictionsDrivePrelabels:
    def test_prelabel_with_an_external_model_version(self, live_client: TestClient) -> None:
        project_id, _labeled, pool = labeled_project(live_client, n_labeled=10, n_pool=4, seed=40)
        confident = {"cooking": 0.96, "sports": 0.02, "tech": 0.02}
        unsure = {"cooking": 0.4, "sports": 0.35, "tech": 0.25}
        entries = [
            {"item_id": pool[0], "probabilities": confident, "model_version": "svc-7"},
            {"item_id": pool[1], "probabilities": unsure, "model_version": "svc-7"},
        ]
        assert post(live_client, project_id, entries).json()["created"] == 2
        job = live_client.post(
            f"/v1/projects/{project_id}/prelabels",
            json={"model_version": "svc-7", "threshold": 0.9, "audit_share": 0},
        ).json()
        result = wait_for_job(live_client, job)["result"]
        assert result["model_version"] == "svc-7"
        assert (result["auto_accepted"], result["needs_review"]) == (1, 1)
        assert result["skipped"] == len(pool) - 2  # pool items with no svc-7 prediction
        accepted = live_client.get(f"/v1/projects/{project_id}/items/{pool[0]}").json()
        assert (accepted["status"], accepted["resolved_label"], accepted["resolved_by"]) == (
            "labeled",
            "cooking",
            "model",
        )
        [annotation] = accepted["annotations"]
        assert annotation["source"] == "model" and annotation["model_version"] == "svc-7"
        assert annotation["threshold"] == 0.9 and math.isclose(annotation["confidence"], 0.96)
        review = live_client.get(f"/v1/projects/{project_id}/items/{pool[1]}").json()
        assert (review["status"], review["review_reason"], review["suggested_label"]) == (
            "needs_review",
            "low_confidence",
            "cooking",
        )

    def test_unknown_external_model_version_is_409(self, live_client: TestClient) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=5, n_pool=1, seed=41)
        response = live_client.post(
            f"/v1/projects/{project_id}/prelabels", json={"model_version": "never-posted"}
        )
        assert response.status_code == 409
        assert response.json()["type"] == "/problems/no-predictions"


def test_store_predictions_writes_what_upsert_predictions_writes(
    client: TestClient, session: Session
) -> None:
    """The scoring job's tuple path (prediction_columns, store_predictions) and the dict path
    (prediction_rows, upsert_predictions) store the same rows, and both replace on conflict."""
    import numpy as np
    from sqlmodel import col, select

    from app.models.prediction import Prediction
    from app.services.predictions import (
        prediction_columns,
        prediction_rows,
        store_predictions,
        upsert_predictions,
    )

    headers = auth(make_key(session, role=Role.service))
    project = make_project(client, headers)
    texts = [{"text": f"text {n}"} for n in range(6)]
    ids = [r["id"] for r in ingest(client, headers, project["id"], texts)["results"]]
    labels = ["negative", "neutral", "positive"]
    probabilities = np.random.default_rng(0).dirichlet([0.5, 0.5, 0.5], size=6)
    probabilities[0] = [0.0, 0.25, 0.75]  # a zero is left out of the stored map
    common = {"project_id": project["id"], "source": "registry"}
    upsert_predictions(
        session,
        prediction_rows(
            item_ids=ids,
            probabilities=probabilities,
            labels=labels,
            model_version="registry:98",
            **common,
        ),
    )
    columns = prediction_columns(probabilities, labels)
    store_predictions(session, item_ids=ids, columns=columns, model_version="registry:99", **common)
    session.commit()

    def stored(version: str) -> list[tuple[Any, ...]]:
        rows = session.exec(
            select(Prediction)
            .where(col(Prediction.model_version) == version)
            .order_by(col(Prediction.item_id))
        ).all()
        return [
            (p.item_id, p.label, p.confidence, p.margin, p.entropy, p.probabilities, p.source)
            for p in rows
        ]

    assert stored("registry:98") == stored("registry:99")
    assert len(stored("registry:99")) == 6
    assert stored("registry:99")[0][5] == {"neutral": 0.25, "positive": 0.75}
    # Again with other probabilities: the same rows are replaced, not added.
    flipped = probabilities[:, ::-1].copy()
    store_predictions(
        session,
        item_ids=ids,
        columns=prediction_columns(flipped, labels),
        model_version="registry:99",
        **common,
    )
    session.commit()
    again = stored("registry:99")
    assert len(again) == 6
    assert again[0][1] == "negative" and again[0][5] == {"negative": 0.75, "neutral": 0.25}
