"""Agreement report, consensus, reviews and the pilot gate, through HTTP."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.models.base import Role
from tests.factories import annotate, auth, ingest, make_key, make_project

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": observers A-D as rows,
# units as columns, "*" missing. Published nominal alpha = 0.743.
KRIPPENDORFF_ROWS = [
    "1 2 3 3 2 1 4 1 2 * * *",
    "1 2 3 3 2 2 4 1 2 5 * 3",
    "* 3 3 3 2 3 4 2 2 5 1 *",
    "1 2 3 3 2 4 4 1 2 5 1 *",
]


def _project_with_items(
    client: TestClient, headers: dict[str, str], n: int, **fields: Any
) -> tuple[int, list[int]]:
    project = make_project(client, headers, **fields)
    report = ingest(client, headers, project["id"], [{"text": f"item {i}"} for i in range(n)])
    return project["id"], [r["id"] for r in report["results"]]


def _answers(
    client: TestClient,
    headers: dict[str, str],
    project_id: int,
    rows: dict[str, list[str | None]],
    item_ids: list[int],
) -> None:
    """rows: annotator -> one value per item ("*" skips, None abstains)."""
    entries = []
    for annotator, values in rows.items():
        for item_id, value in zip(item_ids, values, strict=True):
            if value == "*":
                continue
            entry: dict[str, Any] = {"item_id": item_id, "annotator": annotator}
            entry |= {"abstain": True, "label": None} if value is None else {"label": value}
            entries.append(entry)
    annotate(client, headers, project_id, entries)


def test_agreement_reproduces_krippendorffs_published_example(
    client: TestClient, session: Session
) -> None:
    admin = auth(make_key(session))
    project_id, ids = _project_with_items(client, admin, 12, labels=["1", "2", "3", "4", "5"])
    rows = {f"obs{o}": row.split() for o, row in zip("abcd", KRIPPENDORFF_ROWS, strict=True)}
    _answers(client, admin, project_id, rows, ids)  # type: ignore[arg-type]

    report = client.get(f"/v1/projects/{project_id}/agreement", headers=admin).json()

    assert round(report["krippendorff_alpha"], 3) == 0.743
    # Sent at full precision (clients compare and aggregate it); the sentence rounds.
    assert report["krippendorff_alpha"] != round(report["krippendorff_alpha"], 4)
    assert f"alpha is {report['krippendorff_alpha']:.4g} " in report["interpretation"]["summary"]
    assert report["n_items"] == 12 and report["n_pairable_items"] == 11
    assert report["n_annotators"] == 4 and report["n_labels"] == 41
    assert report["interpretation"]["band"] == "good"
    assert "0.74" in report["interpretation"]["summary"]
    low, high = report["confidence_interval"]["low"], report["confidence_interval"]["high"]
    assert low < report["krippendorff_alpha"] < high
    pairs = {(p["a"], p["b"]): p for p in report["pairwise_cohen_kappa"]}
    assert pairs[("obsa", "obsb")]["n"] == 9
    assert pairs[("obsa", "obsb")]["kappa"] > 0.8  # A and B differ on one unit of nine
    assert report["warnings"] == []  # 0.743 is above the default threshold 0.6
    # Repeating the request gives the same (seeded) interval.
    again = client.get(f"/v1/projects/{project_id}/agreement", headers=admin).json()
    assert again["confidence_interval"] == report["confidence_interval"]


def test_low_agreement_names_confused_labels_disputed_items_and_weak_annotators(
    client: TestClient, session: Session
) -> None:
    admin = auth(make_key(session))
    n = 40
    project_id, ids = _project_with_items(
        client, admin, n, labels=["cat", "dog", "bird"], agreement_threshold=0.9
    )
    truth = ["cat" if i % 2 else "dog" for i in range(n)]
    rows: dict[str, list[str | None]] = {
        "ann1": list(truth),
        "ann2": list(truth),
        "ann3": [t if i % 5 else "bird" for i, t in enumerate(truth)],
        # Answers the opposite of the truth on most items, and abstains on some.
        "weak": [
            None if i % 10 == 0 else ("dog" if t == "cat" else "cat") if i % 4 else t
            for i, t in enumerate(truth)
        ],
    }
    _answers(client, admin, project_id, rows, ids)

    report = client.get(f"/v1/projects/{project_id}/agreement", headers=admin).json()

    assert report["krippendorff_alpha"] < 0.9
    codes = [w["code"] for w in report["warnings"]]
    assert codes[:1] == ["below_threshold"]
    assert {"confused_labels", "disputed_items", "annotators_below_others"} <= set(codes)
    warnings = {w["code"]: w for w in report["warnings"]}
    top_pair = warnings["confused_labels"]["evidence"]["pairs"][0]["labels"]
    assert sorted(top_pair) == ["cat", "dog"]
    weak = warnings["annotators_below_others"]["evidence"]["annotators"]
    assert [a["annotator"] for a in weak] == ["weak"]
    disputed = warnings["disputed_items"]["evidence"]["items"]
    assert disputed and all(item["item_id"] in ids for item in disputed)
    assert all(len(item["votes"]) >= 2 for item in disputed)
    per_annotator = {a["annotator"]: a for a in report["per_annotator"]}
    assert per_annotator["weak"]["n_abstained"] == 4
    assert per_annotator["weak"]["abstain_rate"] == 0.1
    assert (
        per_annotator["ann1"]["agreement_with_others"]
        > per_annotator["weak"]["agreement_with_others"]
    )
    assert report["abstain_rate"] == 4 / (4 * n)
    by_label = {entry["label"]: entry for entry in report["per_label"]}
    assert by_label["bird"]["n"] == 8


def test_agreement_without_pairs_is_not_measurable(client: TestClient, session: Session) -> None:
    admin = auth(make_key(session))
    project_id, ids = _project_with_items(client, admin, 3)
    _answers(client, admin, project_id, {"solo": ["positive", "negative", "*"]}, ids)
    report = client.get(f"/v1/projects/{project_id}/agreement", headers=admin).json()
    assert report["krippendorff_alpha"] is None
    assert report["confidence_interval"] is None
    assert report["interpretation"]["band"] == "not_measurable"
    assert [w["code"] for w in report["warnings"]] == ["not_measurable"]


def test_quality_reports_are_for_admin_and_service_keys(
    client: TestClient, session: Session
) -> None:
    admin = auth(make_key(session))
    annotator = auth(make_key(session, role=Role.annotator))
    service = auth(make_key(session, role=Role.service))
    project_id, _ = _project_with_items(client, admin, 1)
    for path in ("agreement", "consensus"):
        assert client.get(f"/v1/projects/{project_id}/{path}", headers=annotator).status_code == 403
        assert client.get(f"/v1/projects/{project_id}/{path}", headers=service).status_code == 200
    assert client.get("/v1/projects/999999/agreement", headers=admin).status_code == 404


def test_majority_consensus_keeps_ties_undecided_and_pages(
    client: TestClient, session: Session
) -> None:
    admin = auth(make_key(session))
    project_id, ids = _project_with_items(client, admin, 3, annotators_per_item=2)
    _answers(
        client,
        admin,
        project_id,
        {
            "a": ["positive", "positive", None],
            "b": ["positive", "negative", "neutral"],
            "c": ["negative", "*", "*"],
        },
        ids,
    )
    first = client.get(
        f"/v1/projects/{project_id}/consensus", params={"limit": 2}, headers=admin
    ).json()
    assert first["method"] == "majority"
    assert [i["item_id"] for i in first["items"]] == ids[:2]
    clear, tie = first["items"]
    assert clear["label"] == "positive" and clear["quality"] == pytest.approx(2 / 3, abs=1e-12)
    assert clear["quality"] != round(2 / 3, 6)  # full precision, not the stored 6 decimals
    assert clear["votes"] == {"positive": 2, "negative": 1}
    assert tie["label"] is None and tie["votes"] == {"positive": 1, "negative": 1}
    assert first["next_cursor"]
    second = client.get(
        f"/v1/projects/{project_id}/consensus",
        params={"limit": 2, "cursor": first["next_cursor"]},
        headers=admin,
    ).json()
    assert [i["item_id"] for i in second["items"]] == ids[2:]
    assert second["items"][0]["abstentions"] == 1 and second["next_cursor"] is None
    # One label and one "I don't know" of the two answers required: no decision, as in the
    # item's status (one vote of two does not make a majority).
    assert (second["items"][0]["label"], second["items"][0]["complete"]) == (None, True)
    item = client.get(f"/v1/projects/{project_id}/items/{ids[2]}", headers=admin).json()
    assert (item["status"], item["resolved_label"]) == ("needs_review", None)
    assert clear["complete"] is True
    annotators = {a["annotator"]: a for a in first["annotators"]}
    assert annotators["a"]["n"] == 2 and annotators["c"]["n"] == 1
    # The tie is in the review queue, never silently the first label.
    item = client.get(f"/v1/projects/{project_id}/items/{ids[1]}", headers=admin).json()
    assert item["status"] == "needs_review" and item["resolved_label"] is None
    # An item still waiting for its second answer shows a provisional label.
    late = ingest(client, admin, project_id, [{"text": "late"}])["results"][0]["id"]
    _answers(client, admin, project_id, {"a": ["negative"]}, [late])
    last = client.get(
        f"/v1/projects/{project_id}/consensus",
        params={"limit": 1000},
        headers=admin,
    ).json()["items"][-1]
    assert (last["item_id"], last["label"], last["complete"]) == (late, "negative", False)


def test_dawid_skene_consensus_on_request(client: TestClient, session: Session) -> None:
    admin = auth(make_key(session))
    project_id, ids = _project_with_items(client, admin, 4)
    _answers(
        client,
        admin,
        project_id,
        {
            "a": ["positive", "negative", "neutral", "positive"],
            "b": ["positive", "negative", "neutral", "negative"],
        },
        ids,
    )
    page = client.get(
        f"/v1/projects/{project_id}/consensus", params={"method": "dawid_skene"}, headers=admin
    ).json()
    assert page["method"] == "dawid_skene" and page["converged"] is True
    labels = [i["label"] for i in page["items"]]
    assert labels[:3] == ["positive", "negative", "neutral"]
    assert all(0 <= (i["quality"] or 0) <= 1 for i in page["items"])
    bad = client.get(
        f"/v1/projects/{project_id}/consensus", params={"method": "vote"}, headers=admin
    )
    assert bad.status_code == 422


def test_crowdlab_needs_a_model(client: TestClient, session: Session) -> None:
    admin = auth(make_key(session))
    project_id, _ = _project_with_items(client, admin, 2)
    response = client.get(
        f"/v1/projects/{project_id}/consensus", params={"method": "crowdlab"}, headers=admin
    )
    assert response.status_code == 409
    assert response.json()["type"] == "/problems/no-active-model"
    patched = client.patch(
        f"/v1/projects/{project_id}", json={"consensus_method": "crowdlab"}, headers=admin
    )
    assert patched.status_code == 409
    project = client.get(f"/v1/projects/{project_id}", headers=admin).json()
    assert project["consensus_method"] == "majority"


def test_review_overrides_consensus_and_keeps_history(client: TestClient, session: Session) -> None:
    admin = auth(make_key(session))
    reviewer = make_key(session, role=Role.service, name="rita")
    project_id, ids = _project_with_items(client, admin, 2)
    _answers(client, admin, project_id, {"a": ["positive", "negative"]}, ids)
    item = client.get(f"/v1/projects/{project_id}/items/{ids[0]}", headers=admin).json()
    assert (item["resolved_label"], item["resolved_by"]) == ("positive", "consensus")

    created = client.post(
        f"/v1/projects/{project_id}/reviews",
        json={"item_id": ids[0], "label": "neutral", "note": "sarcasm"},
        headers=auth(reviewer),
    )
    assert created.status_code == 201, created.text
    review = created.json()
    assert review["reviewer"] == "rita" and review["previous_label"] == "positive"
    assert review["previous_resolved_by"] == "consensus"
    item = client.get(f"/v1/projects/{project_id}/items/{ids[0]}", headers=admin).json()
    assert (item["status"], item["resolved_label"], item["resolved_by"]) == (
        "labeled",
        "neutral",
        "review",
    )
    # A later annotation does not undo the review; a second review replaces the first.
    _answers(client, admin, project_id, {"b": ["negative", "*"]}, ids)
    item = client.get(f"/v1/projects/{project_id}/items/{ids[0]}", headers=admin).json()
    assert item["resolved_label"] == "neutral"
    second = client.post(
        f"/v1/projects/{project_id}/reviews",
        json={"item_id": ids[0], "label": "negative"},
        headers=admin,
    ).json()
    assert second["previous_resolved_by"] == "review"
    listed = client.get(
        f"/v1/projects/{project_id}/reviews",
        params={"item_id": ids[0], "include_history": True},
        headers=admin,
    ).json()["items"]
    assert [(r["label"], r["is_current"]) for r in listed] == [
        ("neutral", False),
        ("negative", True),
    ]
    current = client.get(f"/v1/projects/{project_id}/reviews", headers=auth(reviewer)).json()
    assert [r["label"] for r in current["items"]] == ["negative"]  # history is opt-in


def test_annotator_reviews_only_what_the_review_queue_gave_them_blind(
    client: TestClient, session: Session
) -> None:
    admin = auth(make_key(session))
    rita = auth(make_key(session, role=Role.annotator, name="rita"))
    project_id, ids = _project_with_items(client, admin, 2, annotators_per_item=2)
    _answers(
        client, admin, project_id, {"a": ["positive", "positive"], "b": ["negative", "*"]}, ids
    )
    url = f"/v1/projects/{project_id}/reviews"
    # Not leased to rita: refused, and nothing changes.
    refused = client.post(url, json={"item_id": ids[0], "label": "neutral"}, headers=rita)
    assert refused.status_code == 403, refused.text
    assert client.get(url, headers=admin).json()["items"] == []

    batch = client.post(
        f"/v1/projects/{project_id}/batches", json={"size": 5, "queue": "review"}, headers=rita
    ).json()
    assert [entry["item"]["id"] for entry in batch["items"]] == [ids[0]]  # the tie
    leased = batch["items"][0]["item"]
    assert leased["resolved_by"] is None and leased["consensus_quality"] is None
    created = client.post(url, json={"item_id": ids[0], "label": "neutral"}, headers=rita)
    assert created.status_code == 201, created.text
    # Rita labels blind: she does not learn what her colleagues' answers resolved to.
    assert created.json()["previous_label"] is None
    assert created.json()["previous_resolved_by"] is None
    mine = client.get(url, headers=rita).json()["items"]
    assert [(r["label"], r["previous_resolved_by"]) for r in mine] == [("neutral", None)]
    seen_by_admin = client.get(url, headers=admin).json()["items"]
    assert [(r["reviewer"], r["label"]) for r in seen_by_admin] == [("rita", "neutral")]
    item = client.get(f"/v1/projects/{project_id}/items/{ids[0]}", headers=admin).json()
    assert (item["status"], item["resolved_label"], item["resolved_by"]) == (
        "labeled",
        "neutral",
        "review",
    )
    # The lease was released by the decision: a second review from rita is refused.
    again = client.post(url, json={"item_id": ids[0], "label": "negative"}, headers=rita)
    assert again.status_code == 403
    seen_by_rita = client.get(f"/v1/projects/{project_id}/items/{ids[0]}", headers=rita).json()
    assert seen_by_rita["resolved_label"] is None and seen_by_rita["resolved_by"] is None


def test_review_rejects_bad_input_and_changes_nothing(client: TestClient, session: Session) -> None:
    admin = auth(make_key(session))
    project_id, ids = _project_with_items(client, admin, 1)
    url = f"/v1/projects/{project_id}/reviews"
    unknown_label = client.post(url, json={"item_id": ids[0], "label": "maybe"}, headers=admin)
    assert unknown_label.status_code == 422
    assert unknown_label.json()["errors"][0]["loc"] == ["body", "label"]
    missing = client.post(url, json={"item_id": 999_999, "label": "positive"}, headers=admin)
    assert missing.status_code == 404
    extra = client.post(url, json={"item_id": ids[0], "label": "positive", "x": 1}, headers=admin)
    assert extra.status_code == 422
    assert client.get(url, headers=admin).json()["items"] == []
    item = client.get(f"/v1/projects/{project_id}/items/{ids[0]}", headers=admin).json()
    assert item["status"] == "unlabeled"


def test_pilot_items_need_two_annotators(client: TestClient, session: Session) -> None:
    admin = auth(make_key(session))
    project_id, ids = _project_with_items(client, admin, 1, annotators_per_item=1, phase="pilot")
    _answers(client, admin, project_id, {"a": ["positive"]}, ids)
    item = client.get(f"/v1/projects/{project_id}/items/{ids[0]}", headers=admin).json()
    assert item["status"] == "in_progress"
    _answers(client, admin, project_id, {"b": ["positive"]}, ids)
    item = client.get(f"/v1/projects/{project_id}/items/{ids[0]}", headers=admin).json()
    assert (item["status"], item["resolved_label"], item["consensus_quality"]) == (
        "labeled",
        "positive",
        1.0,
    )


def test_leaving_the_pilot_below_the_threshold_needs_force_and_a_reason(
    client: TestClient, session: Session
) -> None:
    admin = auth(make_key(session))
    project_id, ids = _project_with_items(client, admin, 4, agreement_threshold=0.8, phase="pilot")
    _answers(
        client,
        admin,
        project_id,
        {
            "a": ["positive", "negative", "neutral", "positive"],
            "b": ["negative", "negative", "positive", "positive"],
        },
        ids,
    )
    url = f"/v1/projects/{project_id}"
    refused = client.patch(url, json={"phase": "production"}, headers=admin)
    assert refused.status_code == 409
    problem = refused.json()
    assert problem["type"] == "/problems/agreement-below-threshold"
    assert problem["context"]["agreement_threshold"] == 0.8
    assert problem["context"]["krippendorff_alpha"] < 0.8
    assert client.get(url, headers=admin).json()["phase"] == "pilot"
    # Lowering the threshold in the same request does not open the gate, and changes nothing.
    lowered = client.patch(
        url, json={"phase": "production", "agreement_threshold": 0.0}, headers=admin
    )
    assert lowered.status_code == 409
    assert lowered.json()["context"]["agreement_threshold"] == 0.8
    unchanged = client.get(url, headers=admin).json()
    assert (unchanged["phase"], unchanged["agreement_threshold"]) == ("pilot", 0.8)
    # The report's alpha is the number the gate compared (both at full precision).
    report = client.get(f"{url}/agreement", headers=admin).json()
    assert report["krippendorff_alpha"] == problem["context"]["krippendorff_alpha"]

    no_reason = client.patch(url, json={"phase": "production", "force": True}, headers=admin)
    assert no_reason.status_code == 422
    forced = client.patch(
        url,
        json={"phase": "production", "force": True, "reason": "deadline; guidelines v2 next"},
        headers=admin,
    )
    assert forced.status_code == 200 and forced.json()["phase"] == "production"
    changes = client.get(f"{url}/phase-changes", headers=admin).json()["items"]
    assert len(changes) == 1
    change = changes[0]
    assert change["forced"] is True and change["reason"] == "deadline; guidelines v2 next"
    assert change["krippendorff_alpha"] == problem["context"]["krippendorff_alpha"]
    assert (change["from_phase"], change["to_phase"]) == ("pilot", "production")


def test_leaving_the_pilot_with_good_agreement_is_recorded_unforced(
    client: TestClient, session: Session
) -> None:
    admin = auth(make_key(session))
    project_id, ids = _project_with_items(client, admin, 3, phase="pilot")
    same = ["positive", "negative", "neutral"]
    _answers(client, admin, project_id, {"a": list(same), "b": list(same)}, ids)
    url = f"/v1/projects/{project_id}"
    moved = client.patch(url, json={"phase": "production"}, headers=admin)
    assert moved.status_code == 200, moved.text
    change = client.get(f"{url}/phase-changes", headers=admin).json()["items"][0]
    assert change["forced"] is False and change["krippendorff_alpha"] == 1.0
    # Without measurable agreement the gate refuses: nothing was checked yet.
    empty_id, _ = _project_with_items(client, admin, 1, phase="pilot")
    empty = client.patch(f"/v1/projects/{empty_id}", json={"phase": "production"}, headers=admin)
    assert empty.status_code == 409
    assert empty.json()["context"]["krippendorff_alpha"] is None
