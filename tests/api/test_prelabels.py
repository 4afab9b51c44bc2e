"""Prelabels with registry models: thresholds, target precision, audits, and humans first."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from tests.api.test_registry import labeled_project, train
from tests.conftest import wait_for_job
from tests.factories import auth, make_key, make_project


def prelabel(client: TestClient, project_id: int, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project_id}/prelabels", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["kind"] == "prelabel"
    return wait_for_job(client, response.json())


def active_project(
    client: TestClient, *, seed: int, n_pool: int = 10
) -> tuple[int, list[int], list[int]]:
    project_id, labeled, pool = labeled_project(client, n_labeled=20, n_pool=n_pool, seed=seed)
    job = train(client, project_id, activate=True)
    wait_for_job(client, {"id": job["result"]["scoring_job_id"]})
    return project_id, labeled, pool


class TestPrelabelThreshold:
    def test_confident_items_are_auto_accepted_the_rest_reviewed(
        self, live_client: TestClient
    ) -> None:
        project_id, _, pool = active_project(live_client, seed=50)
        job = prelabel(live_client, project_id, threshold=0.6, audit_share=0)
        result = job["result"]
        assert job["status"] == "succeeded", job
        assert result["mode"] == "threshold"
        assert result["considered"] == len(pool)
        assert result["auto_accepted"] + result["needs_review"] == len(pool)
        assert result["auto_accepted"] > 0
        assert set(result["thresholds"].values()) == {0.6}
        model_rows = live_client.get(
            f"/v1/projects/{project_id}/annotations?source=model&limit=1000"
        ).json()["items"]
        assert len(model_rows) == result["auto_accepted"]
        assert all(a["confidence"] >= 0.6 and a["threshold"] == 0.6 for a in model_rows)
        assert all(a["model_version"] == "registry:1" for a in model_rows)
        reviewed = live_client.get(
            f"/v1/projects/{project_id}/items?status=needs_review&limit=1000"
        ).json()["items"]
        assert len(reviewed) == result["needs_review"]
        assert all(
            i["review_reason"] == "low_confidence" and i["suggested_label"] for i in reviewed
        )
        assert all(i["suggestion_confidence"] < 0.6 for i in reviewed)

    def test_default_threshold_is_the_projects(self, live_client: TestClient) -> None:
        project_id, _, _ = active_project(live_client, seed=51)
        live_client.patch(f"/v1/projects/{project_id}", json={"auto_accept_threshold": 0.5})
        job = prelabel(live_client, project_id)
        assert set(job["result"]["thresholds"].values()) == {0.5}
        assert job["params"]["audit_share"] == 0.02

    def test_humans_win_and_auto_accepts_never_count_as_votes(
        self, live_client: TestClient
    ) -> None:
        project_id, _, pool = active_project(live_client, seed=52, n_pool=2)
        prelabel(live_client, project_id, threshold=0.01, audit_share=0)
        item_id = pool[0]
        model_label = live_client.get(f"/v1/projects/{project_id}/items/{item_id}").json()[
            "resolved_label"
        ]
        other = next(label for label in ("cooking", "sports", "tech") if label != model_label)
        live_client.post(
            f"/v1/projects/{project_id}/annotations", json=[{"item_id": item_id, "label": other}]
        )
        item = live_client.get(f"/v1/projects/{project_id}/items/{item_id}").json()
        assert (item["resolved_label"], item["resolved_by"]) == (other, "consensus")
        # A second run leaves items humans have answered alone.
        again = prelabel(live_client, project_id, threshold=0.01, audit_share=0)
        assert again["result"]["considered"] == len(pool) - 1

    def test_limit_and_item_ids(self, live_client: TestClient) -> None:
        project_id, _, pool = active_project(live_client, seed=53)
        assert prelabel(live_client, project_id, limit=4)["result"]["considered"] == 4
        chosen = pool[-3:]
        job = prelabel(live_client, project_id, item_ids=[*chosen, 10**8])
        assert job["result"]["considered"] == 3


class TestTargetPrecisionAndAudit:
    def test_target_precision_picks_per_label_thresholds(self, live_client: TestClient) -> None:
        project_id, _, _pool = active_project(live_client, seed=54, n_pool=20)
        job = prelabel(live_client, project_id, target_precision=0.9, audit_share=0.5)
        result = job["result"]
        assert result["mode"] == "target_precision"
        assert set(result["thresholds"]) == {"cooking", "sports", "tech"}
        estimate = result["expected_precision"]
        if result["auto_accepted"]:
            assert estimate["ci_low"] <= estimate["estimate"] <= estimate["ci_high"]
            assert estimate["n_calibration"] == 60
        assert result["audited"] == -(-result["auto_accepted"] // 2)  # ceil(0.5 * accepted)

    def test_audited_items_wait_for_review_and_feed_the_audit_report(
        self, live_client: TestClient
    ) -> None:
        project_id, _, pool = active_project(live_client, seed=55)
        result = prelabel(live_client, project_id, threshold=0.01, audit_share=1.0)["result"]
        assert result["audited"] == result["auto_accepted"] == len(pool)
        audited = live_client.get(
            f"/v1/projects/{project_id}/items?status=needs_review&limit=1000"
        ).json()["items"]
        assert len(audited) == len(pool)
        assert all(i["review_reason"] == "audit" and i["resolved_by"] == "model" for i in audited)
        # Humans review two: they agree with one and overrule the other.
        first, second = audited[0], audited[1]
        wrong = next(x for x in ("cooking", "sports", "tech") if x != second["resolved_label"])
        live_client.post(
            f"/v1/projects/{project_id}/annotations",
            json=[
                {"item_id": first["id"], "label": first["resolved_label"]},
                {"item_id": second["id"], "label": wrong},
            ],
        )
        [report] = live_client.get(f"/v1/projects/{project_id}/prelabels/audit").json()[
            "model_versions"
        ]
        assert report["model_version"] == "registry:1"
        assert (report["audited"], report["reviewed"], report["agreed"]) == (len(pool), 2, 1)
        assert report["precision"] == 0.5
        assert report["ci_low"] < 0.5 < report["ci_high"]
        assert report["ci_low"] != round(report["ci_low"], 4)  # full precision, not rounded


class TestPrelabelRefusals:
    def test_without_an_active_model_is_409(self, live_client: TestClient) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=5, n_pool=2, seed=56)
        response = live_client.post(f"/v1/projects/{project_id}/prelabels", json={})
        assert response.status_code == 409
        assert response.json()["type"] == "/problems/no-active-model"

    @pytest.mark.parametrize(
        "body",
        [
            {"threshold": 0.9, "target_precision": 0.9},
            {"threshold": 1.5},
            {"threshold": 0},
            {"target_precision": 1.0},
            {"audit_share": -0.1},
            {"limit": 0},
            {"model_version": "registry:x"},
            {"surprise": True},
        ],
    )
    def test_bad_requests_are_422(
        self, client: TestClient, session: Session, body: dict[str, Any]
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        response = client.post(
            f"/v1/projects/{project['id']}/prelabels", json=body, headers=headers
        )
        assert response.status_code == 422, response.text

    def test_unknown_registry_version_is_404(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        response = client.post(
            f"/v1/projects/{project['id']}/prelabels",
            json={"model_version": "registry:3"},
            headers=headers,
        )
        assert response.status_code == 404


class TestConcurrencyAndChangedLabels:
    def test_prelabels_and_annotations_at_once_all_succeed(self, live_client: TestClient) -> None:
        from concurrent.futures import ThreadPoolExecutor

        project_id, _, pool = labeled_project(live_client, n_labeled=10, n_pool=100, seed=57)
        train(live_client, project_id, activate=True)
        jobs: list[dict[str, Any]] = []
        statuses: list[int] = []

        def annotate(item_id: int) -> None:
            response = live_client.post(
                f"/v1/projects/{project_id}/annotations",
                json=[{"item_id": item_id, "label": "tech"}],
            )
            statuses.append(response.status_code)

        def start_prelabel() -> None:
            response = live_client.post(
                f"/v1/projects/{project_id}/prelabels", json={"threshold": 0.34}
            )
            jobs.append(response.json())

        humans = pool[::5]
        with ThreadPoolExecutor(8) as pool_executor:
            futures = [pool_executor.submit(start_prelabel)]
            futures += [pool_executor.submit(annotate, i) for i in humans]
            futures += [pool_executor.submit(start_prelabel)]
            for future in futures:
                future.result()
        assert set(statuses) == {200}
        assert [wait_for_job(live_client, j)["status"] for j in jobs] == ["succeeded"] * 2
        for item_id in humans:  # every human answer stands
            item = live_client.get(f"/v1/projects/{project_id}/items/{item_id}").json()
            assert (item["resolved_by"], item["resolved_label"]) == ("consensus", "tech")

    def test_a_label_removed_from_the_project_is_never_written(
        self, live_client: TestClient
    ) -> None:
        project_id, labeled, _ = active_project(live_client, seed=58)
        # Relabel every human "tech" answer, then drop "tech" from the project.
        detail = [live_client.get(f"/v1/projects/{project_id}/items/{i}").json() for i in labeled]
        moved = [
            {"item_id": d["id"], "label": "sports"} for d in detail if d["resolved_label"] == "tech"
        ]
        live_client.post(f"/v1/projects/{project_id}/annotations", json=moved)
        response = live_client.patch(
            f"/v1/projects/{project_id}", json={"labels": ["cooking", "sports"]}
        )
        assert response.status_code == 200, response.text
        result = prelabel(live_client, project_id, threshold=0.01, audit_share=0)["result"]
        assert result["thresholds"]["tech"] is None
        items = live_client.get(f"/v1/projects/{project_id}/items?limit=1000").json()["items"]
        assert all(i["suggested_label"] != "tech" for i in items)
        assert all(i["resolved_label"] in (None, "cooking", "sports") for i in items)


class TestPrelabelTargetPoolAccuracy:
    def test_spends_the_pools_error_budget_on_the_most_probable_items(
        self, live_client: TestClient
    ) -> None:
        project_id, labeled, pool = active_project(live_client, seed=150)
        result = prelabel(live_client, project_id, target_pool_accuracy=0.9, audit_share=0)[
            "result"
        ]
        assert result["mode"] == "target_pool_accuracy"
        budget = result["pool_budget"]
        n = len(labeled) + len(pool)
        assert budget["pool_size"] == n and budget["human_answered"] == len(labeled)
        assert budget["error_budget"] == pytest.approx(0.1 * n)
        assert budget["committed_errors"] == 0  # every earlier auto-accept is re-decided
        # Three separable topics: the whole pool fits the budget, each item at a price.
        assert result["auto_accepted"] == len(pool) and result["needs_review"] == 0
        assert 0 < budget["expected_errors"] <= budget["error_budget"]
        assert budget["unsettled"] == 0
        assert budget["expected_pool_accuracy"] == pytest.approx(
            1 - budget["expected_errors"] / n, abs=1e-4
        )
        cut = min(set(result["thresholds"].values()))
        model_rows = live_client.get(
            f"/v1/projects/{project_id}/annotations?source=model&limit=1000"
        ).json()["items"]
        assert len(model_rows) == len(pool)
        assert all(a["confidence"] >= cut and a["threshold"] == cut for a in model_rows)

        # Re-deciding a few items only: the others' auto-accepts are committed errors.
        again = prelabel(
            live_client,
            project_id,
            target_pool_accuracy=0.9,
            audit_share=0,
            item_ids=pool[:5],
        )["result"]["pool_budget"]
        assert again["committed_errors"] > 0
        assert again["unsettled"] == 0
        assert again["committed_errors"] + again["expected_errors"] == pytest.approx(
            budget["expected_errors"], abs=1e-3
        )

    def test_a_budget_too_small_for_any_item_accepts_none(self, live_client: TestClient) -> None:
        project_id, _, pool = active_project(live_client, seed=151)
        result = prelabel(live_client, project_id, target_pool_accuracy=0.999, audit_share=0)[
            "result"
        ]
        # 90 items: 0.09 wrong labels allowed; no prediction is certain enough to spend it on.
        assert result["auto_accepted"] == 0 and result["needs_review"] == len(pool)
        assert set(result["thresholds"].values()) == {None}
        assert result["pool_budget"]["unsettled"] == len(pool)
        assert result["pool_budget"]["expected_pool_accuracy"] is None

    def test_one_mode_at_a_time_and_enough_calibration(self, live_client: TestClient) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=5, n_pool=2, seed=152)
        url = f"/v1/projects/{project_id}/prelabels"
        both = live_client.post(url, json={"threshold": 0.9, "target_pool_accuracy": 0.95})
        assert both.status_code == 422
        out_of_range = live_client.post(url, json={"target_pool_accuracy": 1.0})
        assert out_of_range.status_code == 422
        job = train(live_client, project_id, activate=True)
        wait_for_job(live_client, {"id": job["result"]["scoring_job_id"]})
        response = live_client.post(url, json={"target_pool_accuracy": 0.95})
        assert response.status_code == 202, response.text
        failed = wait_for_job(live_client, response.json())
        assert failed["status"] == "failed"
        assert "target_pool_accuracy needs at least 20" in str(failed["error"])
