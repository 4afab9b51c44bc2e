"""Project-wide consensus policies with real jobs: Dawid-Skene applied to items, and CROWDLAB
on a trained model's out-of-fold probabilities."""

from typing import Any

from fastapi.testclient import TestClient

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
