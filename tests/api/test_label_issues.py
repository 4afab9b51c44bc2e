"""Label-issue reports with real jobs: flipped labels found and ranked first, flags sent to
review and measured, duplicates grouped, reports kept and compared, bad input refused."""

import random
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.models.base import Role
from tests.api.test_registry import labeled_project, train
from tests.conftest import wait_for_job
from tests.corpus import TOPICS
from tests.factories import auth, make_key

N_DEBIAN = 5_000
FLIP_SHARE = 0.10


def _report(client: TestClient, project_id: int, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project_id}/label-issues", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    job = wait_for_job(client, response.json(), timeout=600)
    return job


def _succeeded(client: TestClient, project_id: int, **body: Any) -> dict[str, Any]:
    job = _report(client, project_id, **body)
    assert job["status"] == "succeeded", (job["error"], job["result"])
    return job


def _all_issues(client: TestClient, project_id: int, report_id: int, **params: Any) -> list[Any]:
    url = f"/v1/projects/{project_id}/label-issues/{report_id}"
    issues: list[Any] = []
    cursor = None
    while True:
        query = {"limit": 1000, **params, **({"cursor": cursor} if cursor else {})}
        page = client.get(url, params=query)
        assert page.status_code == 200, page.text
        issues.extend(page.json()["items"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return issues


@pytest.fixture(scope="module")
def debian_sample(debian_rows_in_file_order: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = list(debian_rows_in_file_order)
    random.Random(11).shuffle(rows)
    return rows


def test_flipped_labels_rank_first_go_to_review_and_reviews_measure_the_flags(
    live_client: TestClient, debian_sample: list[dict[str, Any]]
) -> None:
    labels = sorted({r["label"] for r in debian_sample})
    project = live_client.post(
        "/v1/projects",
        json={"name": f"issues-{uuid.uuid4().hex[:6]}", "labels": labels, "phase": "production"},
    ).json()
    base = f"/v1/projects/{project['id']}"
    truth: dict[int, str] = {}
    rows = iter(debian_sample)
    while len(truth) < N_DEBIAN:  # the dataset repeats some texts; ingest skips duplicates
        chunk = [next(rows) for _ in range(N_DEBIAN - len(truth))]
        report = live_client.post(
            f"{base}/items", json=[{"external_id": r["id"], "text": r["text"]} for r in chunk]
        ).json()
        for result, row in zip(report["results"], chunk, strict=True):
            if result["status"] == "created":
                truth[result["id"]] = row["label"]
    rng = random.Random(5)
    ids = sorted(truth)
    flipped = set(rng.sample(ids, int(FLIP_SHARE * len(ids))))
    given = {
        i: rng.choice([label for label in labels if label != truth[i]])
        if i in flipped
        else truth[i]
        for i in ids
    }
    response = live_client.post(
        f"{base}/annotations", json=[{"item_id": i, "label": given[i]} for i in ids]
    )
    assert response.status_code == 200, response.text

    job = _succeeded(live_client, project["id"])  # the default algorithm, hashed_tfidf_sgd
    result = job["result"]
    assert result["probabilities_source"] == "cross_validation"
    report_id = result["report_id"]
    report = live_client.get(f"{base}/label-issues/{report_id}", params={"limit": 1}).json()
    n_items = report["n_items"]
    assert n_items >= 0.99 * N_DEBIAN  # sections too rare to cross-validate are left out
    assert report["library_versions"]["cleanlab"] == "2.9.0"
    assert report["params"]["algorithm"] == "hashed_tfidf_sgd" and report["params"]["n_folds"] == 5
    assert report["comparison"] is None
    # The label snapshot: every judged item has its given label in the report.
    assert len(report["snapshot_hash"]) == 64

    issues = _all_issues(live_client, project["id"], report_id, issue_type="label")
    ranks = [i["rank"] for i in issues]
    assert ranks == sorted(ranks)
    assert all(i["given_label"] == given[i["item_id"]] for i in issues)
    k = len(flipped)
    top = issues[:k]
    hit_rate = sum(1 for i in top if i["item_id"] in flipped) / k
    assert hit_rate >= 0.70, hit_rate
    # Far above the rest: the median flipped item ranks in the worst 10% of all labels
    # (the others' median is near the middle), and cleanlab mostly suggests the truth.
    rank_of = {i["item_id"]: i["rank"] for i in issues}
    flipped_ranks = sorted(rank_of.get(i, n_items) for i in flipped)
    assert flipped_ranks[len(flipped_ranks) // 2] <= 0.10 * n_items, flipped_ranks[k // 2]
    caught = [i for i in top if i["item_id"] in flipped]
    assert sum(1 for i in caught if i["suggested_label"] == truth[i["item_id"]]) >= 0.6 * len(
        caught
    )
    findings = report["findings"]
    assert findings["class_imbalance"]["imbalanced"] is True
    assert findings["noise_matrix"]["confused_pairs"]

    # The flags are in the review queue, worst first, with the suggestion; labels unchanged.
    flagged = [i for i in issues if "label" in i["issue_types"]]
    assert result["sent_to_review"] == len(flagged) == report["flag_review"]["flagged"]
    item = live_client.get(f"{base}/items/{flagged[0]['item_id']}").json()
    assert (item["status"], item["review_reason"]) == ("needs_review", "label_issue")
    assert item["resolved_label"] == given[item["id"]]
    assert item["suggested_label"] == flagged[0]["suggested_label"]
    reviewer = live_client.post(
        "/v1/api-keys", json={"name": f"rev-{uuid.uuid4().hex[:6]}", "role": "annotator"}
    ).json()
    as_reviewer = {"Authorization": f"Bearer {reviewer['key']}"}
    batch = live_client.post(
        f"{base}/batches", json={"size": 20, "queue": "review"}, headers=as_reviewer
    ).json()
    assert [b["item"]["id"] for b in batch["items"]] == [i["item_id"] for i in flagged[:20]]
    assert {b["review_reason"] for b in batch["items"]} == {"label_issue"}
    # Annotators label blind: the suggestion would say what the hidden label is not.
    assert {b["suggested_label"] for b in batch["items"]} == {None}
    assert {b["item"]["suggested_label"] for b in batch["items"]} == {None}

    # The reviewer decides the 20 with the true label: confirmed when it differs from the flag.
    for entry in batch["items"]:
        decided = live_client.post(
            f"{base}/reviews",
            json={"item_id": entry["item"]["id"], "label": truth[entry["item"]["id"]]},
            headers=as_reviewer,
        )
        assert decided.status_code == 201, decided.text
    reviewed = {b["item"]["id"] for b in batch["items"]}
    corrected = {i for i in reviewed if truth[i] != given[i]}
    measured = live_client.get(f"{base}/label-issues/{report_id}", params={"limit": 1}).json()
    review = measured["flag_review"]
    assert (review["flagged"], review["reviewed"], review["confirmed"]) == (
        len(flagged),
        20,
        len(corrected),
    )
    assert review["precision"] == len(corrected) / 20  # full precision
    assert review["ci_low"] <= review["precision"] <= review["ci_high"]
    settled = live_client.get(f"{base}/items/{batch['items'][0]['item']['id']}").json()
    assert (settled["status"], settled["resolved_by"], settled["review_reason"]) == (
        "labeled",
        "review",
        None,
    )

    # Five more flipped flags are corrected by their annotator instead of a reviewer: the new
    # label stays in review (a flag waits for a reviewer) until a report no longer doubts it.
    reannotated = [i["item_id"] for i in flagged[20:] if i["item_id"] in flipped][:5]
    response = live_client.post(
        f"{base}/annotations", json=[{"item_id": i, "label": truth[i]} for i in reannotated]
    )
    assert response.status_code == 200, response.text
    assert {live_client.get(f"{base}/items/{i}").json()["status"] for i in reannotated} == {
        "needs_review"
    }

    # A second report compares with the first. hashing_sgd: its cross-validation takes seconds.
    second = _succeeded(live_client, project["id"], algorithm="hashing_sgd", send_to_review=False)[
        "result"
    ]
    comparison = second["comparison"]
    assert comparison["previous_report_id"] == report_id

    def changed(kind: str) -> set[int]:
        rows = _all_issues(live_client, project["id"], second["report_id"], change=kind)
        return {i["item_id"] for i in rows}

    # Reviewed labels are never doubted again: corrected ones are fixed, kept ones dismissed.
    assert corrected <= changed("fixed")
    assert reviewed - corrected == changed("dismissed")
    assert comparison["dismissed"] == len(reviewed - corrected)
    assert comparison["fixed"] == len(changed("fixed"))
    second_report = live_client.get(
        f"{base}/label-issues/{second['report_id']}", params={"limit": 1}
    ).json()
    assert second_report["findings"]["reviews"]["reviewed_items"] == 20
    assert second_report["flag_review"]["flagged"] == 0  # send_to_review: false
    # Re-annotated items the model no longer doubts lose their flag and are labeled again.
    released = [i for i in reannotated if i in changed("fixed")]
    assert released
    for item_id in released:
        item = live_client.get(f"{base}/items/{item_id}").json()
        assert (item["status"], item["review_reason"], item["resolved_label"]) == (
            "labeled",
            None,
            truth[item_id],
        )
    listed = live_client.get(f"{base}/label-issues").json()["items"]
    assert [r["id"] for r in listed] == [second["report_id"], report_id]


def _texts(label: str, count: int, seed: int) -> list[str]:
    """Distinct ~20-word texts of one topic (no two share many word triples)."""
    rng = random.Random(f"{label}-{seed}")
    words = TOPICS[label].split() + [f"{label}{n}" for n in range(200)]
    return [" ".join(rng.choice(words) for _ in range(20)) for _ in range(count)]


def test_exact_and_near_duplicates_are_grouped(live_client: TestClient) -> None:
    labels = list(TOPICS)
    project = live_client.post(
        "/v1/projects",
        json={"name": f"dups-{uuid.uuid4().hex[:6]}", "labels": labels, "phase": "production"},
    ).json()
    base = f"/v1/projects/{project['id']}"
    corpus = [(text, label) for label in labels for text in _texts(label, 12, seed=1)]
    original = corpus[0][0]
    words = corpus[5][0].split()
    near = " ".join([*words[:10], "changed", *words[11:]])
    planted = [
        # The same words with other punctuation and case (ingest already refuses texts that
        # differ only in case and spacing).
        (original.upper().replace(" ", ", ", 3) + "!", corpus[0][1]),
        (near, corpus[5][1]),  # one word of twenty changed
        (corpus[20][0] + " extra", labels[0] if corpus[20][1] != labels[0] else labels[1]),
    ]
    entries = corpus + planted
    ingested = live_client.post(f"{base}/items", json=[{"text": t} for t, _ in entries]).json()
    ids = [r["id"] for r in ingested["results"]]
    assert len(set(ids)) == len(entries)
    answers = [{"item_id": i, "label": label} for i, (_, label) in zip(ids, entries, strict=True)]
    assert live_client.post(f"{base}/annotations", json=answers).status_code == 200

    result = _succeeded(live_client, project["id"], algorithm="hashing_sgd")["result"]
    report = live_client.get(f"{base}/label-issues/{result['report_id']}").json()
    groups = report["findings"]["near_duplicate_groups"]
    n = len(corpus)
    assert {frozenset(g["item_ids"]) for g in groups["groups"]} == {
        frozenset({ids[0], ids[n]}),
        frozenset({ids[5], ids[n + 1]}),
        frozenset({ids[20], ids[n + 2]}),
    }
    by_pair = {frozenset(g["item_ids"]): g for g in groups["groups"]}
    assert by_pair[frozenset({ids[0], ids[n]})]["exact"] is True
    assert by_pair[frozenset({ids[5], ids[n + 1]})]["exact"] is False
    assert by_pair[frozenset({ids[20], ids[n + 2]})]["conflicting_labels"] is True
    duplicates = _all_issues(
        live_client, project["id"], result["report_id"], issue_type="near_duplicate"
    )
    assert {i["item_id"] for i in duplicates} == {
        ids[0],
        ids[n],
        ids[5],
        ids[n + 1],
        ids[20],
        ids[n + 2],
    }
    assert report["counts"]["near_duplicate"] == 6


def test_reuses_the_active_models_out_of_fold_probabilities(live_client: TestClient) -> None:
    project_id, _, _ = labeled_project(live_client, n_labeled=10, n_pool=0)
    assert train(live_client, project_id, activate=True)["status"] == "succeeded"
    result = _succeeded(live_client, project_id)["result"]
    assert result["probabilities_source"] == "registry:1"
    # Another algorithm than the active one's: its own cross-validation.
    other = _succeeded(live_client, project_id, algorithm="hashing_sgd")["result"]
    assert other["probabilities_source"] == "cross_validation"


@pytest.mark.parametrize(
    ("per_label", "label_values"),
    [(1, None), (8, ["sports"])],
    ids=["fewer-labels-than-folds", "a-single-class"],
)
def test_a_report_that_cannot_run_fails_clearly_and_changes_nothing(
    live_client: TestClient, per_label: int, label_values: list[str] | None
) -> None:
    project_id, labeled, _ = labeled_project(live_client, n_labeled=per_label, n_pool=0)
    base = f"/v1/projects/{project_id}"
    if label_values is not None:  # relabel everything to one class by review
        for item_id in labeled:
            live_client.post(f"{base}/reviews", json={"item_id": item_id, "label": label_values[0]})
    before = live_client.get(f"{base}/items", params={"limit": 1000}).json()["items"]

    job = _report(live_client, project_id)

    assert job["status"] == "failed"
    assert job["error"]["type"] == "/problems/not-enough-labels"
    assert "at least 2 labels" in job["error"]["detail"]
    assert live_client.get(f"{base}/label-issues").json()["items"] == []
    after = live_client.get(f"{base}/items", params={"limit": 1000}).json()["items"]
    assert after == before


def test_bad_requests_are_refused(live_client: TestClient, live_settings: Any) -> None:
    project_id, _, _ = labeled_project(live_client, n_labeled=6, n_pool=0)
    url = f"/v1/projects/{project_id}/label-issues"
    unknown = live_client.post(url, json={"algorithm": "magic"})
    assert unknown.status_code == 422
    for threshold in (0, 0.3, 1.5):
        bad = live_client.post(url, json={"near_duplicate_threshold": threshold})
        assert bad.status_code == 422
    extra = live_client.post(url, json={"surprise": 1})
    assert extra.status_code == 422
    assert live_client.get(url).json()["items"] == []
    missing = live_client.get(f"{url}/999999")
    assert missing.status_code == 404
    result = _succeeded(live_client, project_id, algorithm="hashing_sgd")["result"]
    report_url = f"{url}/{result['report_id']}"
    assert live_client.get(report_url, params={"issue_type": "typo"}).status_code == 422
    assert live_client.get(report_url, params={"min_severity": 2}).status_code == 422
    assert live_client.get(report_url, params={"change": "maybe"}).status_code == 422
    everything = _all_issues(live_client, project_id, result["report_id"])
    assert everything
    cut = sorted(i["severity"] for i in everything)[len(everything) // 2]
    severe = live_client.get(report_url, params={"min_severity": cut}).json()["items"]
    assert [i["item_id"] for i in severe] == [
        i["item_id"] for i in everything if i["severity"] >= cut
    ]
    label = everything[0]["given_label"]
    same = live_client.get(report_url, params={"label": label}).json()["items"]
    assert same and [i["item_id"] for i in same] == [
        i["item_id"] for i in everything if i["given_label"] == label
    ]


def test_one_report_at_a_time_per_project(client: TestClient, session: Session) -> None:
    admin = auth(make_key(session))
    project = client.post(
        "/v1/projects",
        json={"name": f"once-{uuid.uuid4().hex[:6]}", "labels": ["a", "b"]},
        headers=admin,
    ).json()
    url = f"/v1/projects/{project['id']}/label-issues"
    first = client.post(url, json={}, headers=admin)  # queued: this client runs no jobs
    assert first.status_code == 202
    second = client.post(url, json={}, headers=admin)
    assert second.status_code == 409
    assert second.json()["type"] == "/problems/report-in-progress"
    assert str(first.json()["id"]) in second.json()["detail"]


def test_annotators_cannot_read_or_start_reports(client: TestClient, session: Session) -> None:
    admin = auth(make_key(session))
    annotator = auth(make_key(session, role=Role.annotator))
    project = client.post(
        "/v1/projects",
        json={"name": f"blind-{uuid.uuid4().hex[:6]}", "labels": ["a", "b"]},
        headers=admin,
    ).json()
    url = f"/v1/projects/{project['id']}/label-issues"
    assert client.post(url, json={}, headers=annotator).status_code == 403
    assert client.get(url, headers=annotator).status_code == 403
    assert client.get(url, headers=admin).status_code == 200
