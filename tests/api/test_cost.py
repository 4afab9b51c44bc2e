"""The labeling-cost report: spend per tier, cost per usable label and waste, auto-accept and
active-learning savings, with prelabel and replay jobs really running for the savings."""

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from app.models.base import Role, utcnow
from app.models.job import Job, JobKind, JobStatus
from tests.api.test_registry import LABELS, train
from tests.conftest import wait_for_job
from tests.corpus import labeled_corpus
from tests.factories import annotate, auth, ingest, make_key, make_project, unique


def cost(client: TestClient, project_id: int, headers: dict[str, str] | None = None) -> Any:
    response = client.get(f"/v1/projects/{project_id}/cost", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def priced_project(
    client: TestClient, *, annotator: str, price: float, n_labeled: int, n_pool: int, seed: int
) -> tuple[int, list[int]]:
    """A production project whose n_labeled items per topic were labeled, and paid, in the name
    of `annotator`; returns it and its unlabeled pool."""
    project = client.post(
        "/v1/projects",
        json={
            "name": f"cost-{uuid.uuid4().hex[:8]}",
            "labels": LABELS,
            "phase": "production",
            "cost_per_label": {"crowd": price},
        },
    ).json()
    corpus = labeled_corpus(n_labeled + n_pool, seed=seed)
    items = [{"text": text, "external_id": f"{seed}-{i}"} for i, (text, _) in enumerate(corpus)]
    ids = [r["id"] for r in ingest(client, {}, project["id"], items)["results"]]
    labeled = 3 * n_labeled  # the corpus interleaves the three topics
    entries = [
        {"item_id": item_id, "label": label, "annotator": annotator}
        for item_id, (_, label) in zip(ids[:labeled], corpus, strict=False)
    ]
    annotate(client, {}, project["id"], entries)
    return project["id"], ids[labeled:]


class TestGetCost:
    def test_spend_per_tier_waste_and_cost_per_usable_label(
        self, client: TestClient, session: Session
    ) -> None:
        admin = auth(make_key(session))
        project = make_project(
            client, admin, annotators_per_item=2, cost_per_label={"in_house": 0.5, "crowd": 0.05}
        )
        pid = project["id"]
        i1, i2, i3, i4, i5, i6 = [
            r["id"]
            for r in ingest(client, admin, pid, [{"text": f"ticket {n}"} for n in range(6)])[
                "results"
            ]
        ]
        staff = auth(make_key(session, role=Role.annotator, tier="in_house"))
        crowd = auth(make_key(session, role=Role.annotator, tier="crowd"))
        offshore = auth(make_key(session, role=Role.annotator, tier="offshore"))  # not priced
        tierless_name = unique("no-tier")
        tierless = auth(make_key(session, role=Role.annotator, name=tierless_name))

        annotate(
            client,
            staff,
            pid,
            [
                {"item_id": i1, "label": "positive"},
                {"item_id": i2, "label": "positive"},
                {"item_id": i3, "abstain": True},
                {"item_id": i4, "label": "positive"},
                {"item_id": i6, "label": "positive"},
            ],
        )
        annotate(
            client,
            crowd,
            pid,
            [
                {"item_id": i1, "label": "positive"},  # agrees: i1 is usable
                {"item_id": i2, "label": "negative"},  # a tie: i2 waits for a reviewer
                {"item_id": i3, "label": "positive"},  # beside an abstention: no winner
                {"item_id": i4, "label": "negative"},
            ],
        )
        annotate(client, crowd, pid, [{"item_id": i4, "label": "positive"}])  # replaces it
        annotate(client, offshore, pid, [{"item_id": i5, "label": "neutral"}])  # 1 of 2 answers
        annotate(client, tierless, pid, [{"item_id": i6, "label": "positive"}])

        report = cost(client, pid, admin)
        assert report["tiers"] == [
            {"tier": "crowd", "answers": 5, "unit_price": 0.05, "spend": 0.25},
            {"tier": "in_house", "answers": 5, "unit_price": 0.5, "spend": 2.5},
            {"tier": "offshore", "answers": 1, "unit_price": None, "spend": None},
            {"tier": None, "answers": 1, "unit_price": None, "spend": None},
        ]
        assert (report["paid_answers"], report["priced_answers"], report["unpriced_answers"]) == (
            12,
            10,
            2,
        )
        assert report["total_spend"] == 2.75
        # i1, i4 and i6 have a label people agreed on; i2, i3 (disagreement) and i5 do not.
        assert report["usable_labels"] == 3
        assert report["cost_per_usable_label"] == 0.916667  # 2.75 / 3
        assert report["answers"] == {
            "abstains": {"answers": 1, "spend": 0.5},
            "replaced": {"answers": 1, "spend": 0.05},
            "useful": {"answers": 6, "spend": 1.6},
            "disagreement": {"answers": 3, "spend": 0.6},
            "unresolved": {"answers": 1, "spend": 0.0},
        }
        assert (report["wasted_answers"], report["wasted_spend"]) == (5, 1.15)
        # The average answer paid 2.75 / 10; an item takes two.
        assert report["human_price_per_answer"] == 0.275
        assert report["human_price_per_item"] == 0.55
        assert report["human_price_basis"] == "paid_average"
        assert report["auto_accept"] == {"items": 0, "in_human_review": 0, "savings": 0.0}
        [warning] = report["warnings"]
        assert warning.startswith("2 of the 12 paid human answers have no price")
        assert tierless_name in warning and "offshore" in warning

        # A reviewer settles the tie: its two answers become useful, the waste shrinks.
        review = client.post(
            f"/v1/projects/{pid}/reviews", json={"item_id": i2, "label": "positive"}, headers=admin
        )
        assert review.status_code == 201, review.text
        after = cost(client, pid, admin)
        assert after["usable_labels"] == 4
        assert after["cost_per_usable_label"] == 0.6875  # 2.75 / 4
        assert after["answers"]["disagreement"] == {"answers": 1, "spend": 0.05}
        assert after["answers"]["useful"] == {"answers": 8, "spend": 2.15}
        assert after["wasted_answers"] == 3

    def test_price_comes_from_the_price_list_until_an_answer_is_priced(
        self, client: TestClient, session: Session
    ) -> None:
        admin = auth(make_key(session))
        project = make_project(
            client, admin, annotators_per_item=3, cost_per_label={"crowd": 0.1, "in_house": 0.4}
        )
        pid = project["id"]
        [item] = [r["id"] for r in ingest(client, admin, pid, [{"text": "one"}])["results"]]
        annotate(client, admin, pid, [{"item_id": item, "label": "positive"}])  # admin: no tier

        report = cost(client, pid, admin)
        assert (report["total_spend"], report["usable_labels"]) == (0.0, 0)
        assert report["cost_per_usable_label"] is None
        assert report["human_price_basis"] == "price_list_mean"
        assert report["human_price_per_answer"] == 0.25  # mean of 0.1 and 0.4
        assert report["human_price_per_item"] == 0.75  # x 3 annotators per item
        assert any("mean of cost_per_label" in w for w in report["warnings"])
        assert any("1 of the 1 paid human answers have no price" in w for w in report["warnings"])

        unpriced = make_project(client, admin)
        empty = cost(client, unpriced["id"], admin)
        assert empty["human_price_basis"] is None and empty["human_price_per_item"] is None
        assert empty["auto_accept"]["savings"] is None
        assert empty["active_learning"]["savings"] is None
        assert any("no cost_per_label" in w for w in empty["warnings"])

    def test_active_learning_savings_read_the_latest_replay(
        self, client: TestClient, session: Session
    ) -> None:
        admin = auth(make_key(session))
        crowd_name = unique("crowd")
        make_key(session, role=Role.annotator, name=crowd_name, tier="crowd")
        project = make_project(client, admin, cost_per_label={"crowd": 0.2})
        pid = project["id"]
        ids = [
            r["id"] for r in ingest(client, admin, pid, [{"text": "a"}, {"text": "b"}])["results"]
        ]
        annotate(
            client,
            admin,
            pid,
            [{"item_id": i, "label": "positive", "annotator": crowd_name} for i in ids],
        )
        before = cost(client, pid, admin)["active_learning"]
        assert before["job_id"] is None and before["labels_saved"] is None
        assert before["savings"] is None
        assert f"/v1/projects/{pid}/active-learning/simulations" in before["note"]

        def replay(labels_needed: dict[str, int | None], status: str = "succeeded") -> int:
            """A replay job's stored result, as run_simulation writes it."""
            job = Job(
                project_id=pid,
                kind=JobKind.simulate_active_learning,
                status=status,
                params={},
                created_by="test",
                finished_at=utcnow(),
                result={
                    "n_items": 600,
                    "baseline": "random",
                    "at_labels": 400,
                    "target_accuracy": 0.81,
                    "labels_needed": labels_needed,
                },
            )
            session.add(job)
            session.commit()
            assert job.id is not None
            return job.id

        first = replay({"random": 400, "margin": 250, "entropy": 300})
        replay({"random": 400, "margin": 10}, status=JobStatus.failed)  # never counts
        saved = cost(client, pid, admin)["active_learning"]
        assert saved["job_id"] == first
        assert (saved["best_strategy"], saved["random_labels"], saved["best_labels"]) == (
            "margin",
            400,
            250,
        )
        assert (saved["labels_saved"], saved["saved_share"]) == (150, 0.375)
        # One simulated label is one item; an item costs 0.2 x 1 annotator.
        assert saved["savings"] == 30.0
        assert "margin" in saved["note"] and "150 labels saved" in saved["note"]

        latest = replay({"random": 360, "margin": 380, "entropy": None})
        slower = cost(client, pid, admin)["active_learning"]
        assert slower["job_id"] == latest
        assert (slower["labels_saved"], slower["savings"]) == (0, 0.0)
        assert "no strategy beat random" in slower["note"]

    def test_annotators_may_not_read_it_and_unknown_projects_are_404(
        self, client: TestClient, session: Session
    ) -> None:
        admin = auth(make_key(session))
        project = make_project(client, admin)
        url = f"/v1/projects/{project['id']}/cost"
        annotator = auth(make_key(session, role=Role.annotator, tier="crowd"))
        forbidden = client.get(url, headers=annotator)
        assert forbidden.status_code == 403
        assert forbidden.json()["type"] == "/problems/forbidden"
        assert client.get(url).status_code == 401
        service = auth(make_key(session, role=Role.service))
        assert client.get(url, headers=service).status_code == 200
        missing = client.get("/v1/projects/999999/cost", headers=admin)
        assert missing.status_code == 404
        assert missing.json()["type"] == "/problems/not-found"

    def test_auto_accepts_and_a_real_replay_are_priced(self, live_client: TestClient) -> None:
        crowd = f"crowd-{uuid.uuid4().hex[:8]}"
        key = live_client.post(
            "/v1/api-keys", json={"name": crowd, "role": "annotator", "tier": "crowd"}
        )
        assert key.status_code == 201, key.text
        pid, pool = priced_project(
            live_client, annotator=crowd, price=0.04, n_labeled=20, n_pool=4, seed=70
        )
        report = cost(live_client, pid)
        assert (report["paid_answers"], report["usable_labels"]) == (60, 60)
        assert (report["total_spend"], report["cost_per_usable_label"]) == (2.4, 0.04)
        assert report["auto_accept"] == {"items": 0, "in_human_review": 0, "savings": 0.0}
        assert report["active_learning"]["job_id"] is None

        job = train(live_client, pid, activate=True)
        assert wait_for_job(live_client, {"id": job["result"]["scoring_job_id"]})["status"] == (
            "succeeded"
        )
        response = live_client.post(
            f"/v1/projects/{pid}/prelabels", json={"threshold": 0.01, "audit_share": 0.25}
        )
        assert response.status_code == 202, response.text
        prelabel = wait_for_job(live_client, response.json())["result"]
        assert prelabel["auto_accepted"] == len(pool) and prelabel["audited"] == 3
        report = cost(live_client, pid)
        # Audited auto-accepts go to people anyway: only the others saved human work.
        assert report["auto_accept"] == {
            "items": len(pool) - 3,
            "in_human_review": 3,
            "savings": round((len(pool) - 3) * 0.04, 6),
        }
        assert report["usable_labels"] == 60  # auto-accepts are not usable human labels

        response = live_client.post(
            f"/v1/projects/{pid}/active-learning/simulations",
            json={
                "strategies": ["margin"],
                "folds": 3,
                "seed_size": 9,
                "batch_size": 9,
                "params": {"class_weight": "none"},
            },
        )
        assert response.status_code == 202, response.text
        replay = wait_for_job(live_client, response.json())
        assert replay["status"] == "succeeded", replay
        needed = replay["result"]["labels_needed"]
        active = cost(live_client, pid)["active_learning"]
        assert active["job_id"] == replay["id"]
        assert active["random_labels"] == needed["random"]
        assert active["best_labels"] == needed["margin"]
        assert active["target_accuracy"] == replay["result"]["target_accuracy"]
        expected = max(needed["random"] - needed["margin"], 0) if needed["margin"] else 0
        assert active["labels_saved"] == expected
        assert active["savings"] == round(expected * 0.04, 6)
        assert f"job {replay['id']}" in active["note"]
