"""Project-wide consensus policies with real jobs: Dawid-Skene applied to items, and CROWDLAB
on a trained model's out-of-fold probabilities."""

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import col

from app.db import Database
from app.jobs.context import JobContext
from app.models.job import Job, JobKind
from app.models.job_kinds import ApplyConsensusParams
from app.services import jobs
from app.settings import Settings
from app.tasks.consensus import run_apply_consensus
from tests.api.test_registry import labeled_project, train
from tests.conftest import wait_for_job


def _jobs(client: TestClient, project_id: int, kind: str) -> list[dict[str, Any]]:
    response = client.get("/v1/jobs", params={"project_id": project_id, "kind": kind})
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _second_opinion(client: TestClient, project_id: int, labeled: list[int]) -> dict[int, str]:
    """A second annotator who agrees on all but every fifth item, where they pick another
    label: those items become majority ties."""
    first = client.get(f"/v1/projects/{project_id}/annotations", params={"limit": 1000}).json()[
        "items"
    ]
    given = {a["item_id"]: a["label"] for a in first}
    items = {i: given[i] for i in labeled}
    labels = sorted(set(items.values()))
    answers = {
        item_id: (labels[(labels.index(label) + 1) % len(labels)] if n % 5 == 0 else label)
        for n, (item_id, label) in enumerate(items.items())
    }
    response = client.post(
        f"/v1/projects/{project_id}/annotations",
        json=[
            {"item_id": i, "label": label, "annotator": "second"} for i, label in answers.items()
        ],
    )
    assert response.status_code == 200, response.text
    return answers


def test_dawid_skene_policy_resolves_items_through_the_consensus_job(
    live_client: TestClient,
) -> None:
    project_id, labeled, _ = labeled_project(
        live_client, n_labeled=10, n_pool=0, phase="production", annotators_per_item=2
    )
    answers = _second_opinion(live_client, project_id, labeled)
    # A third annotator confirms the first on the first half of the items: on those, the
    # second's disagreements show who is less reliable.
    first_half = labeled[: len(labeled) // 2]
    given = {
        a["item_id"]: a["label"]
        for a in live_client.get(
            f"/v1/projects/{project_id}/annotations", params={"limit": 1000}
        ).json()["items"]
        if a["annotator"] != "second"
    }
    response = live_client.post(
        f"/v1/projects/{project_id}/annotations",
        json=[{"item_id": i, "label": given[i], "annotator": "third"} for i in first_half],
    )
    assert response.status_code == 200, response.text
    tied = live_client.get(
        f"/v1/projects/{project_id}/items", params={"status": "needs_review"}
    ).json()["items"]
    # Every fifth of the 30 items split 1-1, and in the second half nobody broke the tie.
    assert len(tied) == 3 and all(t["id"] not in first_half for t in tied)
    assert all(answers[t["id"]] != given[t["id"]] for t in tied)

    patched = live_client.patch(
        f"/v1/projects/{project_id}", json={"consensus_method": "dawid_skene"}
    )
    assert patched.status_code == 200, patched.text
    jobs = _jobs(live_client, project_id, "apply_consensus")
    assert len(jobs) == 1
    job = wait_for_job(live_client, jobs[0])
    assert job["status"] == "succeeded", job
    assert job["result"]["method"] == "dawid_skene" and job["result"]["converged"] is True
    # Dawid-Skene weighs the annotators by their estimated accuracy, so it settles the 1-1
    # splits, for the annotator the third one confirmed.
    assert job["result"]["undecided"] == 0
    assert job["result"]["changed"] >= 3
    remaining = live_client.get(
        f"/v1/projects/{project_id}/items", params={"status": "needs_review"}
    ).json()["items"]
    assert remaining == []
    item = live_client.get(f"/v1/projects/{project_id}/items/{tied[0]['id']}").json()
    assert item["resolved_by"] == "consensus" and 0.5 < item["consensus_quality"] <= 1.0
    assert item["resolved_label"] == given[item["id"]]
    page = live_client.get(f"/v1/projects/{project_id}/consensus").json()
    assert page["method"] == "dawid_skene"
    by_id = {i["item_id"]: i["label"] for i in page["items"]}
    assert by_id[item["id"]] == item["resolved_label"]

    # New answers queue one more job; the project stays resolved under its policy.
    response = live_client.post(
        f"/v1/projects/{project_id}/annotations",
        json=[{"item_id": labeled[0], "label": item["resolved_label"], "annotator": "fourth"}],
    )
    assert response.status_code == 200
    again = [j for j in _jobs(live_client, project_id, "apply_consensus") if j["id"] > job["id"]]
    assert len(again) == 1
    assert wait_for_job(live_client, again[0])["status"] == "succeeded"


def test_crowdlab_uses_the_active_models_out_of_fold_probabilities(
    live_client: TestClient,
) -> None:
    project_id, labeled, _ = labeled_project(
        live_client, n_labeled=15, n_pool=0, phase="production"
    )
    job = train(live_client, project_id, activate=True)
    assert job["status"] == "succeeded", job
    answers = _second_opinion(live_client, project_id, labeled)

    page = live_client.get(
        f"/v1/projects/{project_id}/consensus", params={"method": "crowdlab", "limit": 1000}
    ).json()
    assert page["method"] == "crowdlab" and page["model_version"] == "registry:1"
    assert len(page["items"]) == len(labeled)
    assert all(i["label"] is not None for i in page["items"])
    # The first annotator gave the corpus labels; the model learned them, so CROWDLAB sides
    # with them on the disputed items and rates that annotator higher.
    first = {
        i: live_client.get(f"/v1/projects/{project_id}/items/{i}").json()
        for i in list(answers)[::5]
    }
    agreed = sum(
        1
        for i in page["items"]
        if i["item_id"] in first
        and i["votes"].get(i["label"], 0) >= 1
        and i["label"] != answers[i["item_id"]]
    )
    assert agreed >= len(first) * 0.8
    quality = {a["annotator"]: a["quality"] for a in page["annotators"]}
    assert len(quality) == 2
    assert quality["second"] == min(quality.values())

    patched = live_client.patch(f"/v1/projects/{project_id}", json={"consensus_method": "crowdlab"})
    assert patched.status_code == 200
    job = wait_for_job(live_client, _jobs(live_client, project_id, "apply_consensus")[0])
    assert job["status"] == "succeeded", job
    assert job["result"]["model_version"] == "registry:1"


def _prelabel(client: TestClient, project_id: int, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project_id}/prelabels", json=body)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json())
    assert job["status"] == "succeeded", job
    return job


def test_a_pilot_auto_accepts_nothing_predictions_stay_suggestions(
    live_client: TestClient,
) -> None:
    project_id, _, pool = labeled_project(live_client, n_labeled=8, n_pool=4)
    assert train(live_client, project_id, activate=True)["status"] == "succeeded"
    back = live_client.patch(f"/v1/projects/{project_id}", json={"phase": "pilot"})
    assert back.status_code == 200, back.text

    job = _prelabel(live_client, project_id, threshold=0.01, item_ids=pool)

    result = job["result"]
    assert (result["pilot"], result["auto_accepted"], result["needs_review"]) == (True, 0, 0)
    assert result["suggested"] == len(pool)
    for item_id in pool:
        item = live_client.get(f"/v1/projects/{project_id}/items/{item_id}").json()
        # Still in the label queue, for two humans; the prediction is only a suggestion.
        assert (item["status"], item["resolved_label"], item["review_reason"]) == (
            "unlabeled",
            None,
            None,
        )
        assert item["suggested_label"] is not None
        assert not [a for a in item["annotations"] if a["source"] == "model"]


def test_consensus_job_keeps_an_auto_accept_that_abstentions_left_undecided(
    live_client: TestClient,
) -> None:
    project_id, _, pool = labeled_project(
        live_client, n_labeled=8, n_pool=2, consensus_method="dawid_skene"
    )
    assert train(live_client, project_id, activate=True)["status"] == "succeeded"
    _prelabel(live_client, project_id, threshold=0.01, item_ids=pool[:1], audit_share=0)
    accepted = live_client.get(f"/v1/projects/{project_id}/items/{pool[0]}").json()
    assert (accepted["status"], accepted["resolved_by"]) == ("labeled", "model")
    two = live_client.patch(f"/v1/projects/{project_id}", json={"annotators_per_item": 2})
    assert two.status_code == 200, two.text
    for job in _jobs(live_client, project_id, "apply_consensus"):
        wait_for_job(live_client, job)
    before = {j["id"] for j in _jobs(live_client, project_id, "apply_consensus")}

    response = live_client.post(
        f"/v1/projects/{project_id}/annotations",
        json=[
            {"item_id": pool[0], "label": None, "abstain": True, "annotator": who}
            for who in ("a", "b")
        ],
    )
    assert response.status_code == 200, response.text
    # Item status and the consensus job use one rule: two "I don't know"s send the item to a
    # reviewer, and the model's label stays meanwhile.
    for job in _jobs(live_client, project_id, "apply_consensus"):
        if job["id"] not in before:
            assert wait_for_job(live_client, job)["status"] == "succeeded"
    item = live_client.get(f"/v1/projects/{project_id}/items/{pool[0]}").json()
    assert (item["status"], item["resolved_label"], item["resolved_by"]) == (
        "needs_review",
        accepted["resolved_label"],
        "model",
    )
    page = live_client.get(f"/v1/projects/{project_id}/consensus", params={"limit": 1000}).json()
    entry = next(i for i in page["items"] if i["item_id"] == pool[0])
    assert (entry["label"], entry["abstentions"], entry["complete"]) == (None, 2, True)


def test_a_consensus_job_superseded_by_a_later_queued_one_does_nothing(
    live_client: TestClient, live_settings: Settings
) -> None:
    project_id, _, _ = labeled_project(
        live_client, n_labeled=2, n_pool=0, consensus_method="dawid_skene"
    )
    database = Database(live_settings)
    try:
        with database.session(write=True) as session:
            # Two requests raced past queue_apply's "one is already queued" check.
            first, second = (
                jobs.new_job(
                    session,
                    project_id=project_id,
                    kind=JobKind.apply_consensus,
                    params=ApplyConsensusParams(),
                    created_by="test",
                )
                for _ in range(2)
            )
            session.commit()
            ids = (first.id, second.id)
        assert ids[0] is not None and ids[1] is not None
        context = JobContext(
            job_id=ids[0],
            project_id=project_id,
            params={},
            database=database,
            settings=live_settings,
        )
        result = run_apply_consensus(context)
        assert result.skipped == f"superseded by job {ids[1]}"
        assert result.changed == 0
        with database.session(write=True) as session:
            for job_id in ids:
                session.exec(update(Job).where(col(Job.id) == job_id).values(status="cancelled"))
            session.commit()
    finally:
        database.engine.dispose()
