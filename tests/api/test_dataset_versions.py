"""Dataset versions through HTTP on a committed database: freezing, exact diffs, byte-stable
streamed exports in three formats, class balancing, a split that never moves, and lineage
between dataset versions and model versions (training jobs really run)."""

import csv
import io
import json
import uuid
from collections import Counter
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from app.services import dataset_versions
from app.sources import exports
from tests.conftest import wait_for_job
from tests.corpus import TOPICS, labeled_corpus
from tests.factories import auth

LABELS = sorted(TOPICS)


def new_project(client: TestClient, **fields: Any) -> int:
    body = {"name": f"datasets-{uuid.uuid4().hex[:8]}", "labels": LABELS, "phase": "production"}
    response = client.post("/v1/projects", json=body | fields)
    assert response.status_code == 201, response.text
    project_id: int = response.json()["id"]
    return project_id


def ingest(client: TestClient, project_id: int, texts: list[str], prefix: str) -> list[int]:
    items = [{"text": t, "external_id": f"{prefix}-{i}"} for i, t in enumerate(texts)]
    response = client.post(f"/v1/projects/{project_id}/items", json=items)
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["results"]]


def label(client: TestClient, project_id: int, pairs: list[tuple[int, str | None]]) -> None:
    entries = [
        {"item_id": item_id, "label": lab} if lab else {"item_id": item_id, "abstain": True}
        for item_id, lab in pairs
    ]
    response = client.post(f"/v1/projects/{project_id}/annotations", json=entries)
    assert response.status_code == 200, response.text


def freeze(client: TestClient, project_id: int, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project_id}/dataset-versions", json=body)
    assert response.status_code == 201, response.text
    version: dict[str, Any] = response.json()
    return version


def export(client: TestClient, project_id: int, version: int, **params: Any) -> bytes:
    response = client.get(
        f"/v1/projects/{project_id}/dataset-versions/{version}/export", params=params
    )
    assert response.status_code == 200, response.text
    return response.content


def jsonl_rows(content: bytes) -> list[dict[str, Any]]:
    # Split on newlines only: str.splitlines() also splits on U+2028, which JSON leaves as is.
    return [json.loads(line) for line in content.split(b"\n") if line]


def labeled_project(client: TestClient, n: int = 30) -> tuple[int, list[int], list[str]]:
    """n items per topic, all labeled with their topic by one admin answer each."""
    project_id = new_project(client)
    corpus = labeled_corpus(n, seed=7)
    ids = ingest(client, project_id, [text for text, _ in corpus], "doc")
    label(client, project_id, [(i, lab) for i, (_, lab) in zip(ids, corpus, strict=True)])
    return project_id, ids, [lab for _, lab in corpus]


def annotator_key(client: TestClient) -> str:
    body = {"name": f"ann-{uuid.uuid4().hex[:6]}", "role": "annotator"}
    response = client.post("/v1/api-keys", json=body)
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


def train(client: TestClient, project_id: int, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project_id}/models", json=body)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json())
    assert job["status"] == "succeeded", job["error"]
    return job


class TestFreeze:
    def test_a_version_records_labels_sources_split_and_a_content_hash(
        self, live_client: TestClient
    ) -> None:
        project_id, ids, labels = labeled_project(live_client, n=10)
        ingest(live_client, project_id, ["an unlabeled one"], "pool")
        version = freeze(live_client, project_id, name="baseline", note="first cut")
        assert version["version"] == 1 and version["name"] == "baseline"
        assert version["n_items"] == len(ids)  # the unlabeled item is not in it
        assert version["label_distribution"] == dict(sorted(Counter(labels).items()))
        assert version["label_sources"] == {"consensus": len(ids)}
        assert version["item_sources"] == {"manual": len(ids)}
        assert version["synthetic_share"] == 0.0
        assert version["test_share"] == 0.2
        split = version["split_counts"]
        assert split["train"] + split["test"] == len(ids) and split["test"] > 0
        assert len(version["content_hash"]) == 64
        assert version["trained_models"] == [] and version["auto_accept_models"] == []

        fetched = live_client.get(f"/v1/projects/{project_id}/dataset-versions/1").json()
        assert fetched == version
        again = freeze(live_client, project_id)
        assert again["version"] == 2 and again["content_hash"] == version["content_hash"]
        page = live_client.get(f"/v1/projects/{project_id}/dataset-versions").json()
        assert [v["version"] for v in page["items"]] == [2, 1]

    def test_rows_record_annotators_and_agreement(self, live_client: TestClient) -> None:
        project_id = new_project(live_client, annotators_per_item=3)
        [item] = ingest(live_client, project_id, ["a phone with a great battery"], "x")
        for lab in ("tech", "tech", "sports"):
            key = annotator_key(live_client)
            response = live_client.post(
                f"/v1/projects/{project_id}/annotations",
                json=[{"item_id": item, "label": lab}],
                headers=auth(key),
            )
            assert response.status_code == 200, response.text
        freeze(live_client, project_id)
        [row] = jsonl_rows(export(live_client, project_id, 1))
        assert row["item_id"] == item and row["label"] == "tech"
        assert row["n_annotators"] == 3 and row["agreement"] == pytest.approx(2 / 3, abs=1e-6)
        assert row["label_source"] == "consensus" and row["external_id"] == "x-0"

    def test_nothing_to_freeze_in_a_pilot_says_which_items_wait(
        self, live_client: TestClient
    ) -> None:
        project_id = new_project(live_client, phase="pilot")
        ids = ingest(live_client, project_id, ["one answer", "another", "none yet"], "p")
        label(live_client, project_id, [(ids[0], LABELS[0]), (ids[1], LABELS[1])])
        response = live_client.post(f"/v1/projects/{project_id}/dataset-versions", json={})
        assert response.status_code == 409
        problem = response.json()
        assert problem["type"].endswith("/nothing-to-freeze")
        assert "2 items have human answers but fewer than the 2" in problem["detail"]
        assert "pilot phase" in problem["detail"] and '"phase": "production"' in problem["detail"]
        assert problem["context"] == {
            "items_waiting_for_answers": 2,
            "answers_required": 2,
            "phase": "pilot",
        }

    def test_nothing_to_freeze_unknown_versions_and_roles(self, live_client: TestClient) -> None:
        project_id = new_project(live_client)
        url = f"/v1/projects/{project_id}/dataset-versions"
        response = live_client.post(url, json={})
        assert response.status_code == 409
        assert response.json()["type"].endswith("/nothing-to-freeze")
        assert live_client.get(url).json()["items"] == []  # nothing was kept
        assert live_client.get(f"{url}/1").status_code == 404
        assert live_client.get(f"{url}/1/export").status_code == 404
        assert live_client.post(url, json={"name": ""}).status_code == 422
        assert live_client.post(url, json={"test_share": 1.5}).status_code == 422
        key = annotator_key(live_client)
        assert live_client.get(url, headers=auth(key)).status_code == 403
        assert live_client.post(url, json={}, headers=auth(key)).status_code == 403

    def test_the_split_never_moves_and_its_share_cannot_change(
        self, live_client: TestClient
    ) -> None:
        project_id, _ids, _labels = labeled_project(live_client, n=10)
        freeze(live_client, project_id, test_share=0.3)
        more = ingest(live_client, project_id, [f"sports news number {i}" for i in range(20)], "m")
        label(live_client, project_id, [(i, "sports") for i in more])
        response = live_client.post(
            f"/v1/projects/{project_id}/dataset-versions", json={"test_share": 0.5}
        )
        assert response.status_code == 409
        assert response.json()["type"].endswith("/split-changed")
        second = freeze(live_client, project_id)
        assert second["test_share"] == 0.3
        first_rows = {
            r["item_id"]: r["split"] for r in jsonl_rows(export(live_client, project_id, 1))
        }
        second_rows = {
            r["item_id"]: r["split"] for r in jsonl_rows(export(live_client, project_id, 2))
        }
        assert all(second_rows[i] == split for i, split in first_rows.items())
        tests = [r for r in jsonl_rows(export(live_client, project_id, 2, split="test"))]
        assert {r["item_id"] for r in tests} == {i for i, s in second_rows.items() if s == "test"}
        assert 0.1 < len(tests) / len(second_rows) < 0.5


class TestDiffAndStableExports:
    def test_label_more_then_the_diff_is_exact_and_version_one_exports_as_before(
        self, live_client: TestClient
    ) -> None:
        project_id, ids, labels = labeled_project(live_client, n=10)
        freeze(live_client, project_id)
        before = {
            fmt: export(live_client, project_id, 1, format=fmt)
            for fmt in ("jsonl", "csv", "parquet")
        }

        added = ingest(live_client, project_id, [f"new cooking text {i}" for i in range(4)], "new")
        label(live_client, project_id, [(i, "cooking") for i in added])
        relabeled = [i for i, lab in zip(ids, labels, strict=True) if lab != "sports"][:3]
        label(live_client, project_id, [(i, "sports") for i in relabeled])
        removed = ids[-2:]
        label(live_client, project_id, [(i, None) for i in removed])  # an abstention: no label
        retexted = ids[0]
        assert retexted not in relabeled and retexted not in removed
        response = live_client.post(
            f"/v1/projects/{project_id}/items",
            json=[{"external_id": "doc-0", "text": "the same item, its text rewritten"}],
        )
        assert response.json()["updated"] == 1
        freeze(live_client, project_id)

        url = f"/v1/projects/{project_id}/dataset-versions/2/diff"
        diff = live_client.get(url, params={"against": 1}).json()
        assert (diff["added"], diff["removed"], diff["relabeled"]) == (4, 2, 3)
        current = live_client.get(f"/v1/projects/{project_id}/items/{retexted}").json()
        text_changed = 1 if current["resolved_label"] == labels[0] else 0
        assert diff["text_changed"] == text_changed
        assert diff["unchanged"] == len(ids) - 2 - 3 - text_changed
        by_change: dict[str, set[int]] = {}
        for entry in diff["items"]:
            by_change.setdefault(entry["change"], set()).add(entry["item_id"])
        assert by_change["added"] == set(added)
        assert by_change["removed"] == set(removed)
        assert by_change["relabeled"] == set(relabeled)
        assert [e["item_id"] for e in diff["items"]] == sorted(e["item_id"] for e in diff["items"])
        entry = next(e for e in diff["items"] if e["item_id"] == relabeled[0])
        old = labels[ids.index(relabeled[0])]
        assert (entry["old_label"], entry["new_label"]) == (old, "sports")

        # Paged, and filtered by change.
        seen, cursor = [], None
        while True:
            params: dict[str, Any] = {"against": 1, "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = live_client.get(url, params=params).json()
            seen += [e["item_id"] for e in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [e["item_id"] for e in diff["items"]]
        only = live_client.get(url, params={"against": 1, "change": "relabeled"}).json()
        assert {e["item_id"] for e in only["items"]} == set(relabeled)
        reverse = live_client.get(
            f"/v1/projects/{project_id}/dataset-versions/1/diff", params={"against": 2}
        ).json()
        assert (reverse["added"], reverse["removed"], reverse["relabeled"]) == (2, 4, 3)
        assert live_client.get(url).status_code == 422  # against is required
        assert live_client.get(url, params={"against": 9}).status_code == 404

        for fmt, content in before.items():
            assert export(live_client, project_id, 1, format=fmt) == content, fmt
        first = jsonl_rows(before["jsonl"])
        assert next(r for r in first if r["item_id"] == retexted)["text"] != current["text"]

    def test_three_formats_hold_the_same_rows(self, live_client: TestClient) -> None:
        project_id, ids, _ = labeled_project(live_client, n=5)
        freeze(live_client, project_id)
        rows = jsonl_rows(export(live_client, project_id, 1))
        assert [r["item_id"] for r in rows] == sorted(ids)
        assert list(rows[0]) == [
            "item_id",
            "external_id",
            "text",
            "label",
            "label_source",
            "split",
            "n_annotators",
            "agreement",
        ]
        table = pq.read_table(io.BytesIO(export(live_client, project_id, 1, format="parquet")))
        assert table.to_pylist() == rows
        reader = csv.DictReader(
            io.StringIO(export(live_client, project_id, 1, format="csv").decode())
        )
        from_csv = list(reader)
        assert [int(r["item_id"]) for r in from_csv] == [r["item_id"] for r in rows]
        assert [r["text"] for r in from_csv] == [r["text"] for r in rows]
        response = live_client.get(
            f"/v1/projects/{project_id}/dataset-versions/1/export", params={"format": "xml"}
        )
        assert response.status_code == 422
        head = live_client.get(
            f"/v1/projects/{project_id}/dataset-versions/1/export", params={"format": "csv"}
        )
        assert head.headers["content-type"].startswith("text/csv")
        assert 'filename="project-' in head.headers["content-disposition"]


class TestBalancing:
    def imbalanced(self, client: TestClient) -> int:
        project_id = new_project(client)
        counts = {"sports": 12, "tech": 5, "cooking": 2}
        texts = [(f"{lab} text number {i}", lab) for lab, n in counts.items() for i in range(n)]
        ids = ingest(client, project_id, [t for t, _ in texts], "b")
        label(client, project_id, [(i, lab) for i, (_, lab) in zip(ids, texts, strict=True)])
        freeze(client, project_id)
        return project_id

    def test_weights_make_every_class_weigh_the_same(self, live_client: TestClient) -> None:
        project_id = self.imbalanced(live_client)
        rows = jsonl_rows(export(live_client, project_id, 1, balance="weight"))
        assert len(rows) == 19
        totals: Counter[str] = Counter()
        for row in rows:
            totals[row["label"]] += row["weight"]
        assert all(total == pytest.approx(19 / 3, abs=1e-4) for total in totals.values())
        assert {r["label"]: r["weight"] for r in rows}["cooking"] == pytest.approx(19 / 6, abs=1e-6)
        parquet = pq.read_table(
            io.BytesIO(export(live_client, project_id, 1, balance="weight", format="parquet"))
        )
        assert parquet.column_names[-1] == "weight"

    def test_oversampling_evens_the_classes_the_same_way_every_time(
        self, live_client: TestClient
    ) -> None:
        project_id = self.imbalanced(live_client)
        content = export(live_client, project_id, 1, balance="oversample")
        rows = jsonl_rows(content)
        assert Counter(r["label"] for r in rows) == {"sports": 12, "tech": 12, "cooking": 12}
        copies = Counter(r["item_id"] for r in rows if r["label"] == "tech")
        assert sorted(copies.values()) == [2, 2, 2, 3, 3]  # 12 = 5 x 2 + 2 extra
        assert export(live_client, project_id, 1, balance="oversample") == content
        train_only = jsonl_rows(
            export(live_client, project_id, 1, balance="oversample", split="train")
        )
        assert {r["split"] for r in train_only} == {"train"}

    def test_oversampled_chunks_stay_bounded_and_give_the_same_bytes(
        self, live_client: TestClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        project_id = self.imbalanced(live_client)
        formats = ("jsonl", "csv", "parquet")
        whole = {
            f: export(live_client, project_id, 1, balance="oversample", format=f) for f in formats
        }
        # Chunks of at most 4 rows: a row's copies (up to 3) are split across chunks.
        sizes: list[int] = []
        write = exports.export_chunks

        def recording(file_format: str, chunks: Any, columns: list[str]) -> Any:
            def counted() -> Any:
                for chunk in chunks:
                    sizes.append(len(chunk))
                    yield chunk

            return write(file_format, counted(), columns)

        monkeypatch.setattr(dataset_versions, "EXPORT_CHUNK", 4)
        monkeypatch.setattr(dataset_versions, "export_chunks", recording)
        for f in formats:
            assert export(live_client, project_id, 1, balance="oversample", format=f) == whole[f]
        assert sizes and max(sizes) == 4 and sum(sizes) == 3 * 36


class TestLineage:
    def test_training_records_its_dataset_version_and_reuses_an_unchanged_one(
        self, live_client: TestClient
    ) -> None:
        project_id, _ids, _labels = labeled_project(live_client, n=10)
        job = train(live_client, project_id)
        assert job["result"]["dataset_version"] == 1
        model = live_client.get(f"/v1/projects/{project_id}/models/1").json()
        assert model["dataset_version"] == 1
        frozen = live_client.get(f"/v1/projects/{project_id}/dataset-versions/1").json()
        assert frozen["trained_models"] == [1] and frozen["n_items"] == model["n_train"]
        assert frozen["created_by"] == f"job:{job['id']}"

        train(live_client, project_id)  # nothing changed: the same dataset version
        assert live_client.get(f"/v1/projects/{project_id}/models/2").json()["dataset_version"] == 1
        page = live_client.get(f"/v1/projects/{project_id}/dataset-versions").json()
        assert [v["version"] for v in page["items"]] == [1]
        assert page["items"][0]["trained_models"] == [1, 2]

        more = ingest(live_client, project_id, [f"tech gadget review {i}" for i in range(6)], "t")
        label(live_client, project_id, [(i, "tech") for i in more])
        assert train(live_client, project_id)["result"]["dataset_version"] == 2
        # Reproducing the first model: train on version 1 whatever the labels are now.
        again = train(live_client, project_id, dataset_version=1)
        assert again["result"]["dataset_version"] == 1
        assert again["result"]["n_train"] == frozen["n_items"]
        response = live_client.post(
            f"/v1/projects/{project_id}/models", json={"dataset_version": 9}
        )
        assert response.status_code == 404

    def test_a_version_names_the_models_behind_its_auto_accepted_labels(
        self, live_client: TestClient
    ) -> None:
        project_id, ids, _ = labeled_project(live_client, n=10)
        train(live_client, project_id, activate=True)
        corpus = labeled_corpus(2, seed=99)
        ingest(live_client, project_id, [text for text, _ in corpus], "pool")
        response = live_client.post(
            f"/v1/projects/{project_id}/prelabels", json={"threshold": 0.01, "audit_share": 0}
        )
        assert response.status_code == 202, response.text
        job = wait_for_job(live_client, response.json())
        assert job["status"] == "succeeded", job["error"]
        version = freeze(live_client, project_id)
        assert version["auto_accept_models"] == ["registry:1"]
        assert version["label_sources"] == {"consensus": len(ids), "model": 6}
        rows = jsonl_rows(export(live_client, project_id, version["version"]))
        assert Counter(r["label_source"] for r in rows) == {"consensus": len(ids), "model": 6}
