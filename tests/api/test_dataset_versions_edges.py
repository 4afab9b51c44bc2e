"""Edge cases of dataset versions, most found in review: lineage when training fails or uses
an older version, diff pages under every filter, what the content hash covers, a freeze
beside a concurrent write, unusual texts in every format, and bad input."""

import csv
import io
import json
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.services import dataset_versions
from app.settings import Settings
from tests.api.test_dataset_versions import (
    LABELS,
    annotator_key,
    export,
    freeze,
    ingest,
    jsonl_rows,
    label,
    labeled_project,
    new_project,
    train,
)
from tests.conftest import started_app, wait_for_job
from tests.factories import auth


class TestLineageEdges:
    def test_a_failed_training_leaves_no_dataset_version(self, live_client: TestClient) -> None:
        project_id, _, _ = labeled_project(live_client, n=10)
        # scikit-learn refuses this min_df on this data
        body = {"algorithm": "tfidf_logreg", "params": {"min_df": 1000}}
        response = live_client.post(f"/v1/projects/{project_id}/models", json=body)
        assert response.status_code == 202, response.text
        job = wait_for_job(live_client, response.json())
        assert job["status"] == "failed"
        assert job["error"]["type"].endswith("/training-refused")
        page = live_client.get(f"/v1/projects/{project_id}/dataset-versions").json()
        assert page["items"] == []

    def test_training_on_an_old_version_leaves_out_labels_the_project_dropped(
        self, live_client: TestClient
    ) -> None:
        project_id, ids, labels = labeled_project(live_client, n=10)
        freeze(live_client, project_id)
        gone, keep = LABELS[-1], LABELS[:-1]
        label(
            live_client,
            project_id,
            [(i, keep[0]) for i, lab in zip(ids, labels, strict=True) if lab == gone],
        )
        response = live_client.patch(f"/v1/projects/{project_id}", json={"labels": keep})
        assert response.status_code == 200, response.text
        pool = ingest(live_client, project_id, [f"{gone} story {i}" for i in range(3)], "pool")
        job = train(live_client, project_id, dataset_version=1, activate=True)
        model = live_client.get(f"/v1/projects/{project_id}/models/{job['result']['version']}")
        assert model.json()["labels"] == keep
        assert model.json()["metrics"]["excluded_labels"] == {gone: 10}
        scoring = wait_for_job(live_client, {"id": job["result"]["scoring_job_id"]})
        assert scoring["status"] == "succeeded"
        item = live_client.get(f"/v1/projects/{project_id}/items/{pool[0]}").json()
        assert item["predictions"] and all(
            set(p["probabilities"]) <= set(keep) for p in item["predictions"]
        )


class TestDiffAndHashEdges:
    @staticmethod
    def walk(client: TestClient, url: str, **params: Any) -> list[tuple[int, str]]:
        seen: list[tuple[int, str]] = []
        cursor = None
        while True:
            page = client.get(url, params=params | ({"cursor": cursor} if cursor else {})).json()
            seen += [(e["item_id"], e["change"]) for e in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen

    def test_every_page_size_and_filter_gives_each_change_once(
        self, live_client: TestClient
    ) -> None:
        project_id, ids, labels = labeled_project(live_client, n=8)
        freeze(live_client, project_id)
        added = ingest(live_client, project_id, [f"cooking new {i}" for i in range(5)], "n")
        label(live_client, project_id, [(i, "cooking") for i in added])
        relabeled = [i for i, lab in zip(ids, labels, strict=True) if lab != "tech"][:6]
        label(live_client, project_id, [(i, "tech") for i in relabeled])
        removed = [i for i, lab in zip(ids, labels, strict=True) if lab == "tech"][:4]
        label(live_client, project_id, [(i, None) for i in removed])
        freeze(live_client, project_id)
        url = f"/v1/projects/{project_id}/dataset-versions/2/diff"
        full = live_client.get(url, params={"against": 1, "limit": 1000}).json()
        everything = [(e["item_id"], e["change"]) for e in full["items"]]
        assert len(everything) == 5 + 6 + 4 == full["added"] + full["removed"] + full["relabeled"]
        assert len({item for item, _ in everything}) == len(everything)
        for limit in (1, 2, 3, 7):
            assert self.walk(live_client, url, against=1, limit=limit) == everything
            for change in ("added", "removed", "relabeled", "text_changed"):
                expected = [e for e in everything if e[1] == change]
                assert self.walk(live_client, url, against=1, limit=limit, change=change) == (
                    expected
                )
        same = f"/v1/projects/{project_id}/dataset-versions/1/diff"
        assert self.walk(live_client, same, against=1, limit=1) == []

    def test_the_content_hash_covers_every_frozen_column(self, live_client: TestClient) -> None:
        project_id = new_project(live_client)
        [item, other] = ingest(live_client, project_id, ["phone battery", "football match"], "h")
        label(live_client, project_id, [(item, "tech"), (other, "sports")])
        first = freeze(live_client, project_id)
        # A second annotator agrees: same labels, but the rows' annotator counts change.
        response = live_client.post(
            f"/v1/projects/{project_id}/annotations",
            json=[{"item_id": item, "label": "tech"}],
            headers=auth(annotator_key(live_client)),
        )
        assert response.status_code == 200, response.text
        second = freeze(live_client, project_id)
        assert export(live_client, project_id, 1) != export(live_client, project_id, 2)
        assert first["content_hash"] != second["content_hash"]


def test_a_freeze_never_sees_half_of_a_concurrent_transaction(
    live_client: TestClient, live_settings: Settings, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between two chunks of a freeze, another connection moves both items to another label
    in one transaction: the version holds both labels from before, or both from after."""
    if backend != "postgresql":
        pytest.skip("SQLite's write lock keeps every writer out of a freeze")
    project_id = new_project(live_client)
    ids = ingest(live_client, project_id, ["first sports text", "second sports text"], "c")
    label(live_client, project_id, [(ids[0], "sports"), (ids[1], "sports")])
    monkeypatch.setattr(dataset_versions, "CHUNK", 1)
    store_texts = dataset_versions._store_texts
    chunks = []

    def write_between_chunks(session: Any, project: int, texts: dict[str, str]) -> None:
        chunks.append(texts)
        if len(chunks) == 1:
            other = sa.create_engine(live_settings.resolved_database_url)
            with other.begin() as connection:
                connection.execute(
                    sa.text("UPDATE item SET resolved_label = 'tech' WHERE id IN (:a, :b)"),
                    {"a": ids[0], "b": ids[1]},
                )
            other.dispose()
        store_texts(session, project, texts)

    monkeypatch.setattr(dataset_versions, "_store_texts", write_between_chunks)
    freeze(live_client, project_id)
    assert len(chunks) == 2
    rows = jsonl_rows(export(live_client, project_id, 1))
    assert [r["label"] for r in rows] == ["sports", "sports"]


def test_an_annotation_is_not_held_up_by_a_freeze(
    live_client: TestClient, live_settings: Settings, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The freeze locks the project row FOR NO KEY UPDATE: a new annotation's foreign key to
    the project (FOR KEY SHARE) goes through while the freeze is running."""
    if backend != "postgresql":
        pytest.skip("SQLite's write lock keeps every writer out of a freeze")
    project_id = new_project(live_client)
    ids = ingest(live_client, project_id, ["first sports text", "second sports text"], "c")
    label(live_client, project_id, [(ids[0], "sports"), (ids[1], "sports")])
    monkeypatch.setattr(dataset_versions, "CHUNK", 1)
    store_texts = dataset_versions._store_texts
    written: list[int] = []

    def annotate_during_the_freeze(session: Any, project: int, texts: dict[str, str]) -> None:
        written.append(len(written))
        other = sa.create_engine(live_settings.resolved_database_url)
        with other.begin() as connection:
            connection.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
            connection.execute(
                sa.text(
                    "INSERT INTO annotation (project_id, item_id, annotator, label, abstain,"
                    " source, is_current, created_at) VALUES (:project, :item, :annotator,"
                    " 'tech', false, 'human', true, now())"
                ),
                {"project": project_id, "item": ids[0], "annotator": f"late-{len(written)}"},
            )
        other.dispose()
        store_texts(session, project, texts)

    monkeypatch.setattr(dataset_versions, "_store_texts", annotate_during_the_freeze)
    freeze(live_client, project_id)
    assert written == [0, 1]


class TestExportEdges:
    def test_unusual_texts_and_labels_round_trip_in_every_format(
        self, live_client: TestClient
    ) -> None:
        labels = ['a,"b"', "ü\u2028x", "plain"]
        project_id = new_project(live_client, labels=labels)
        texts = [
            'line one\nline two, with "quotes", commas',
            "unicode: Ωμέγα 😀 \u2028 and \u2029 separators",
            "x" * 99_000,
            "\r\n crlf \r only",
            "tab\tand backslash \\ and {json: 1}",
        ]
        response = live_client.post(
            f"/v1/projects/{project_id}/items", json=[{"text": t} for t in texts]
        )
        ids = [r["id"] for r in response.json()["results"]]
        given = [labels[0], labels[1], labels[2], labels[0], labels[2]]
        label(live_client, project_id, list(zip(ids, given, strict=True)))
        freeze(live_client, project_id)
        rows = jsonl_rows(export(live_client, project_id, 1))
        assert [r["text"] for r in rows] == texts and [r["label"] for r in rows] == given
        assert all(r["external_id"] is None for r in rows)
        parquet = export(live_client, project_id, 1, format="parquet")
        assert pq.read_table(io.BytesIO(parquet)).to_pylist() == rows
        content = export(live_client, project_id, 1, format="csv").decode()
        from_csv = list(csv.DictReader(io.StringIO(content, newline="")))
        assert [r["text"] for r in from_csv] == texts
        assert [r["label"] for r in from_csv] == given
        for balance in ("weight", "oversample"):
            for file_format in ("jsonl", "csv", "parquet"):
                for split in ("train", "test"):
                    export(
                        live_client,
                        project_id,
                        1,
                        format=file_format,
                        balance=balance,
                        split=split,
                    )

    def test_a_text_over_one_mib_exports_to_parquet(self, live_settings: Settings) -> None:
        settings = live_settings.model_copy(update={"max_text_chars": 3_000_000})
        with started_app(settings) as client:
            project_id = new_project(client, labels=["a", "b"])
            texts = ["é" * 1_500_000, "short", "\u2028" * 600_000 + "z"]
            items = [{"text": t, "external_id": f"e{i}"} for i, t in enumerate(texts)]
            response = client.post(f"/v1/projects/{project_id}/items", json=items)
            assert response.status_code == 200, response.text[:300]
            ids = [r["id"] for r in response.json()["results"]]
            label(client, project_id, list(zip(ids, ["a", "b", "a"], strict=True)))
            freeze(client, project_id)
            table = pq.read_table(io.BytesIO(export(client, project_id, 1, format="parquet")))
            assert [r["text"] for r in table.to_pylist()] == texts
            oversampled = export(client, project_id, 1, format="parquet", balance="oversample")
            assert pq.read_table(io.BytesIO(oversampled)).num_rows == 4


def test_bad_input_is_a_clean_4xx_problem(live_client: TestClient) -> None:
    """Every answer passes the client's problem+json check (never a 500)."""
    project_id, _, _ = labeled_project(live_client, n=3)
    freeze(live_client, project_id)
    other, _, _ = labeled_project(live_client, n=3)
    freeze(live_client, other)
    freeze(live_client, other)
    base = f"/v1/projects/{project_id}/dataset-versions"
    cases: list[tuple[str, dict[str, Any], int]] = [
        (base, {"limit": "x"}, 422),
        (base, {"cursor": "garbage"}, 422),
        (f"{base}/0", {}, 422),
        (f"{base}/99999999999999999999", {}, 422),
        (f"{base}/abc", {}, 422),
        (f"{base}/1/export", {"format": "xml"}, 422),
        (f"{base}/1/export", {"balance": "x"}, 422),
        (f"{base}/1/export", {"split": "validation"}, 422),
        (f"{base}/1/diff", {"against": 0}, 422),
        (f"{base}/1/diff", {"against": 10**30}, 422),
        (f"{base}/1/diff", {"against": 2}, 404),  # the other project's version 2 is not ours
        (f"{base}/1/diff", {"against": 1, "change": "moved"}, 422),
        (f"{base}/1/diff", {"against": 1, "cursor": "@@@"}, 422),
        ("/v1/projects/999999/dataset-versions/1/diff", {"against": 1}, 404),
    ]
    for url, params, status in cases:
        assert live_client.get(url, params=params).status_code == status, (url, params)
    body: object
    for body in (
        {"test_share": 0},
        {"test_share": 1},
        {"test_share": True},
        {"name": "x" * 101},
        {"bogus": 1},
        [],
    ):
        assert live_client.post(base, json=body).status_code == 422, body
    raw = {"content-type": "application/json"}
    assert live_client.post(base, content=b'{"test_share": 1e400}', headers=raw).status_code in (
        400,
        422,
    )
    assert live_client.post(base, content=b"{not json", headers=raw).status_code in (400, 422)
    assert json.loads(live_client.get(base).text)["items"][0]["version"] == 1
