from fastapi.testclient import TestClient
from sqlmodel import Session

from app.models.base import Role
from tests.factories import annotate, auth, ingest, make_key, make_project


class TestProjectStats:
    def test_counts_distribution_annotators_and_cost(
        self, client: TestClient, session: Session
    ) -> None:
        admin = auth(make_key(session))
        project = make_project(client, admin, cost_per_label={"crowd": 0.05, "in_house": 0.5})
        ids = [
            r["id"]
            for r in ingest(
                client,
                admin,
                project["id"],
                [
                    {"text": f"t{i}", "source": "synthetic" if i == 0 else "public"}
                    for i in range(6)
                ],
            )["results"]
        ]
        crowd = auth(make_key(session, role=Role.annotator, name="crowd-1", tier="crowd"))
        staff = auth(make_key(session, role=Role.annotator, name="staff-1", tier="in_house"))
        annotate(
            client, crowd, project["id"], [{"item_id": i, "label": "positive"} for i in ids[:4]]
        )
        annotate(
            client, crowd, project["id"], [{"item_id": ids[0], "label": "negative"}]
        )  # replaces one
        annotate(client, staff, project["id"], [{"item_id": ids[4], "abstain": True}])

        stats = client.get(f"/v1/projects/{project['id']}/stats", headers=admin).json()
        assert stats["n_items"] == 6
        assert stats["items_by_status"] == {
            "unlabeled": 1,
            "in_progress": 0,
            "labeled": 4,
            "needs_review": 1,  # its only annotator abstained
        }
        assert (
            stats["items_by_source"]["synthetic"] == 1 and stats["items_by_source"]["public"] == 5
        )
        assert stats["label_distribution"][:2] == [
            {"label": "positive", "count": 3, "share": 0.75},
            {"label": "negative", "count": 1, "share": 0.25},
        ]
        assert stats["n_annotations"] == 5
        assert stats["abstain_rate"] == 0.2
        per = {a["annotator"]: a for a in stats["annotations_per_annotator"]}
        assert (
            per["crowd-1"]["annotations"],
            per["crowd-1"]["replaced"],
            per["crowd-1"]["tier"],
        ) == (4, 1, "crowd")
        assert (per["staff-1"]["annotations"], per["staff-1"]["abstains"]) == (1, 1)
        # Five crowd answers were paid for (one later replaced) and one in-house abstention.
        assert stats["cost_total"] == 0.75
        assert {c["tier"]: c["cost"] for c in stats["cost"]} == {"crowd": 0.25, "in_house": 0.5}

    def test_imbalance_warnings(self, client: TestClient, session: Session) -> None:
        admin = auth(make_key(session))
        project = make_project(client, admin, labels=["common", "rare"])
        ids = [
            r["id"]
            for r in ingest(client, admin, project["id"], [{"text": f"t{i}"} for i in range(23)])[
                "results"
            ]
        ]
        annotate(
            client,
            admin,
            project["id"],
            [{"item_id": i, "label": "common"} for i in ids[:22]]
            + [{"item_id": ids[22], "label": "rare"}],
        )
        stats = client.get(f"/v1/projects/{project['id']}/stats", headers=admin).json()
        assert stats["imbalance_ratio"] == 22.0
        text = " ".join(stats["warnings"])
        assert "imbalance" in text.lower() and "'common'" in text and "22.0x" in text
        assert "Dominant class" in text

    def test_balanced_project_has_no_imbalance_warning(
        self, client: TestClient, session: Session
    ) -> None:
        admin = auth(make_key(session))
        project = make_project(client, admin, labels=["a", "b"])
        ids = [
            r["id"]
            for r in ingest(client, admin, project["id"], [{"text": f"t{i}"} for i in range(4)])[
                "results"
            ]
        ]
        annotate(
            client,
            admin,
            project["id"],
            [{"item_id": i, "label": "ab"[n % 2]} for n, i in enumerate(ids)],
        )
        stats = client.get(f"/v1/projects/{project['id']}/stats", headers=admin).json()
        assert stats["imbalance_ratio"] == 1.0
        assert not [w for w in stats["warnings"] if "imbalance" in w.lower() or "Dominant" in w]

    def test_empty_project_and_annotator_access(self, client: TestClient, session: Session) -> None:
        admin = auth(make_key(session))
        project = make_project(client, admin)
        stats = client.get(f"/v1/projects/{project['id']}/stats", headers=admin).json()
        assert (
            stats["n_items"],
            stats["abstain_rate"],
            stats["imbalance_ratio"],
            stats["warnings"],
        ) == (0, None, None, [])
        annotator = auth(make_key(session, role=Role.annotator))
        assert (
            client.get(f"/v1/projects/{project['id']}/stats", headers=annotator).status_code == 403
        )
