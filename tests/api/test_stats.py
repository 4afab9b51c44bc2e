from typing import Any

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


def labeled_items(
    client: TestClient,
    headers: dict[str, str],
    project_id: int,
    sources: list[str],
    *,
    answer_source: str = "human",
) -> list[int]:
    """One item per entry of `sources` (its item source), each labeled 'positive' by one
    answer of `answer_source` (human, or user_behavior: an implicit label)."""
    start = len(client.get(f"/v1/projects/{project_id}/items", headers=headers).json()["items"])
    report = ingest(
        client,
        headers,
        project_id,
        [{"text": f"text {start + n}", "source": s} for n, s in enumerate(sources)],
    )
    ids = [r["id"] for r in report["results"]]
    annotator = "clicks" if answer_source == "user_behavior" else "person"
    annotate(
        client,
        headers,
        project_id,
        [
            {"item_id": i, "label": "positive", "source": answer_source, "annotator": annotator}
            for i in ids
        ],
    )
    return ids


def source_warnings(stats: dict[str, Any]) -> list[str]:
    prefixes = ("Implicit labels", "Selection bias", "Synthetic share")
    return [w for w in stats["warnings"] if w.startswith(prefixes)]


class TestLabelSources:
    def test_shares_by_resolution_and_item_source_and_implicit_dominance(
        self, client: TestClient, session: Session
    ) -> None:
        admin = auth(make_key(session))
        project = make_project(client, admin)
        pid = project["id"]
        implicit = labeled_items(
            client,
            admin,
            pid,
            ["user_behavior"] * 6 + ["manual"] * 2,
            answer_source="user_behavior",
        )
        labeled_items(client, admin, pid, ["manual"] * 4)
        url = f"/v1/projects/{pid}/stats"
        stats = client.get(url, headers=admin).json()
        sources = stats["label_sources"]
        assert sources["n_resolved"] == 12
        assert {s["source"]: s["count"] for s in sources["by_resolution"]} == {
            "review": 0,
            "consensus": 4,
            "model": 0,
            "user_behavior": 8,
        }
        by_item = {
            s["source"]: (s["count"], round(s["share"], 3)) for s in sources["by_item_source"]
        }
        assert by_item["user_behavior"] == (6, 0.5) and by_item["manual"] == (6, 0.5)
        (warning,) = source_warnings(stats)
        assert warning.startswith("Implicit labels: 67% of resolved labels (8 of 12)")

        # People label three of the click-labeled items: implicit labels fall to 5 of 12.
        annotate(client, admin, pid, [{"item_id": i, "label": "negative"} for i in implicit[:3]])
        stats = client.get(url, headers=admin).json()
        by_resolution = {s["source"]: s["count"] for s in stats["label_sources"]["by_resolution"]}
        assert (by_resolution["consensus"], by_resolution["user_behavior"]) == (7, 5)
        assert source_warnings(stats) == []

    def test_one_item_source_other_than_manual_dominating_is_named(
        self, client: TestClient, session: Session
    ) -> None:
        admin = auth(make_key(session))
        pid = make_project(client, admin)["id"]
        url = f"/v1/projects/{pid}/stats"
        labeled_items(client, admin, pid, ["production"] * 6)
        # Under ten resolved labels a share says nothing yet.
        assert source_warnings(client.get(url, headers=admin).json()) == []
        labeled_items(client, admin, pid, ["manual"] * 5)
        (warning,) = source_warnings(client.get(url, headers=admin).json())
        assert warning.startswith("Selection bias: 55% of resolved labels (6 of 11)")
        assert "'production'" in warning
        labeled_items(client, admin, pid, ["public"] * 2)
        assert source_warnings(client.get(url, headers=admin).json()) == []

    def test_synthetic_over_the_projects_ratio(self, client: TestClient, session: Session) -> None:
        admin = auth(make_key(session))
        pid = make_project(client, admin, synthetic_max_ratio=0.2)["id"]
        url = f"/v1/projects/{pid}/stats"
        labeled_items(client, admin, pid, ["manual"] * 8 + ["synthetic"] * 2)
        assert source_warnings(client.get(url, headers=admin).json()) == []  # 20%: at the ratio
        labeled_items(client, admin, pid, ["synthetic"])
        (warning,) = source_warnings(client.get(url, headers=admin).json())
        assert warning.startswith("Synthetic share: 27% of resolved labels (3 of 11)")
        assert "synthetic_max_ratio of 20%" in warning
