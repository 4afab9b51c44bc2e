"""Batches ranked by a trained registry model, the online yardstick of the random share,
and the k-fold replay job, with jobs really running."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.test_registry import labeled_project, train
from tests.conftest import wait_for_job
from tests.corpus import labeled_corpus

N_LABELED, N_POOL = 20, 60  # per topic


def trained_project(client: TestClient, *, seed: int) -> tuple[int, dict[int, str]]:
    """A project with an active, pool-scored model; returns it and the pool's true labels."""
    project_id, _, pool = labeled_project(client, n_labeled=N_LABELED, n_pool=N_POOL, seed=seed)
    job = train(client, project_id, activate=True)
    assert wait_for_job(client, {"id": job["result"]["scoring_job_id"]})["status"] == "succeeded"
    truth = [label for _, label in labeled_corpus(N_LABELED + N_POOL, seed=seed)]
    return project_id, dict(zip(pool, truth[3 * N_LABELED :], strict=True))


def annotator_headers(client: TestClient, name: str) -> dict[str, str]:
    response = client.post("/v1/api-keys", json={"name": name, "role": "annotator"})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['key']}"}


def batch(client: TestClient, project_id: int, headers: dict[str, str], **body: Any) -> Any:
    response = client.post(f"/v1/projects/{project_id}/batches", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


class TestBatchesWithARegistryModel:
    def test_margin_by_default_with_scores_suggestions_and_a_marked_random_share(
        self, live_client: TestClient
    ) -> None:
        project_id, truth = trained_project(live_client, seed=61)
        alice = annotator_headers(live_client, "al-alice")
        got = batch(live_client, project_id, alice, size=20)
        assert (got["strategy"], got["model_version"]) == ("margin", "registry:1")
        assert len(got["items"]) == 20
        picks = [e for e in got["items"] if not e["exploration"]]
        assert len(picks) == 18
        assert all(e["suggested_label"] in truth.values() for e in got["items"])
        scores = [e["score"] for e in picks]
        assert scores == sorted(scores, reverse=True)
        # The picks are the most uncertain of the pool: no unpicked, unexplored item beats them.
        items = live_client.get(f"/v1/projects/{project_id}/items?status=unlabeled&limit=1000")
        unpicked = {i["id"] for i in items.json()["items"]} - {
            e["item"]["id"] for e in got["items"]
        }
        assert unpicked
        one = live_client.get(f"/v1/projects/{project_id}/items/{min(unpicked)}").json()
        assert 1 - one["predictions"][0]["margin"] <= min(scores) + 1e-9

        diverse = batch(live_client, project_id, alice, size=10, strategy="diverse_margin")
        assert diverse["strategy"] == "diverse_margin" and len(diverse["items"]) == 10

    def test_the_random_share_measures_the_model_online(self, live_client: TestClient) -> None:
        project_id, truth = trained_project(live_client, seed=62)
        bob = annotator_headers(live_client, "al-bob")
        answered_random = 0
        for _ in range(3):
            got = batch(live_client, project_id, bob, size=20, random_share=0.5)
            answers = [
                {"item_id": e["item"]["id"], "label": truth[e["item"]["id"]]} for e in got["items"]
            ]
            live_client.post(f"/v1/projects/{project_id}/annotations", json=answers, headers=bob)
            answered_random += sum(e["exploration"] for e in got["items"])
        report = live_client.get(f"/v1/projects/{project_id}/active-learning").json()
        (row,) = report["exploration"]
        assert (row["model_version"], row["n_train"]) == ("registry:1", 3 * N_LABELED)
        assert row["answered"] == answered_random == 30
        assert row["accuracy"] == row["correct"] / row["answered"]
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
        assert row["accuracy"] > 0.5  # three separable topics: far above chance
        (usage,) = report["strategies"]
        assert usage == {
            "strategy": "margin",
            "batches": 3,
            "items": 60,
            "answered": 60,
            "skipped": 0,
        }
        assert report["simulation"] is None


class TestSimulation:
    def test_replays_the_labels_k_fold_and_states_the_savings(
        self, live_client: TestClient
    ) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=40, n_pool=0, seed=63)
        response = live_client.post(
            f"/v1/projects/{project_id}/active-learning/simulations",
            json={
                "strategies": ["margin"],
                "folds": 3,
                "seed_size": 9,
                "batch_size": 9,
                "params": {"class_weight": "none"},
            },
        )
        assert response.status_code == 202, response.text
        job = wait_for_job(live_client, response.json())
        assert job["status"] == "succeeded", job
        assert job["params"]["algorithm"] == "hashed_tfidf_sgd"  # the default
        assert job["params"]["params"]["class_weight"] == "none"
        result = job["result"]
        assert set(result["curves"]) == {"random", "margin"}  # random is always the baseline
        assert (result["n_items"], result["folds"], result["budget"]) == (120, 3, 80)
        for curve in result["curves"].values():
            assert [n for n, _ in curve] == [*range(9, 80, 9), 80]
            assert all(0 <= accuracy <= 1 for _, accuracy in curve)
        # target_accuracy is rounded to 4 decimals, the curves are not.
        assert result["target_accuracy"] == pytest.approx(
            result["curves"]["random"][-1][1], abs=5e-5
        )
        assert result["labels_needed"]["random"] <= 80
        assert result["summary"]
        # The pool-completion replay, asked by default at 0.95 over the 120 labeled items.
        assert job["params"]["target_pool_accuracy"] == 0.95
        assert (job["params"]["own_strategy"], job["params"]["own_random_share"]) == ("margin", 0.1)
        completion = result["completion"]
        assert (completion["pool_size"], completion["seeds"]) == (120, 1)
        arms = {arm["name"]: arm for arm in completion["arms"]}
        assert set(arms) == {"own_loop", "random_prelabels", "all_human"}
        assert arms["all_human"]["human_share"] == 1.0
        for name in ("own_loop", "random_prelabels"):
            arm = arms[name]
            assert arm["completed"] == arm["runs"] == 1
            assert 9 <= arm["human_answers"] <= 120
            assert arm["human_share"] == pytest.approx(arm["human_answers"] / 120, abs=1e-4)
            assert arm["human_answers"] + arm["auto_accepted"] == 120
            # Honest: met_target is what the realized accuracy says.
            assert arm["met_target"] == (arm["worst_pool_accuracy"] >= 0.95)
            labels = [point["labels"] for point in arm["curve"]]
            assert (
                labels == sorted(labels) and labels[0] == 9 and labels[-1] == arm["human_answers"]
            )
            assert all(0 <= point["pool_accuracy"] <= 1 for point in arm["curve"])
        assert "human answers" in completion["summary"]
        report = live_client.get(f"/v1/projects/{project_id}/active-learning").json()
        assert report["simulation"]["job_id"] == job["id"]
        assert report["simulation"]["result"]["curves"] == result["curves"]

    def test_refuses_what_cannot_run_and_starts_no_job(self, live_client: TestClient) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=6, n_pool=0, seed=64)
        url = f"/v1/projects/{project_id}/active-learning/simulations"
        too_big = live_client.post(url, json={"seed_size": 10, "batch_size": 10})
        assert too_big.status_code == 409
        assert too_big.json()["type"] == "/problems/not-enough-labels"
        repeated = live_client.post(url, json={"strategies": ["margin", "margin"]})
        assert repeated.status_code == 422
        unknown = live_client.post(url, json={"algorithm": "oracle"})
        assert unknown.status_code == 422
        no_target = live_client.post(url, json={"target_pool_accuracy": 1.0})
        assert no_target.status_code == 422
        many_seeds = live_client.post(url, json={"completion_seeds": 6})
        assert many_seeds.status_code == 422
        bad = live_client.post(url, json={"params": {"class_weight": "sometimes"}})
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["loc"] == ["body", "params", "class_weight"]
        jobs = live_client.get(f"/v1/jobs?project_id={project_id}").json()["items"]
        assert not [j for j in jobs if j["kind"] == "simulate_active_learning"]
