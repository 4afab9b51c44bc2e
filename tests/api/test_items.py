import gzip
import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from app.models.base import Role
from app.models.item import Item
from app.services.items import normalize_text
from app.settings import Settings
from tests.conftest import ClientFactory
from tests.factories import annotate, auth, ingest, make_key, make_project


def items_url(project_id: int) -> str:
    return f"/v1/projects/{project_id}/items"


def count_items(session: Session, project_id: int) -> int:
    return session.exec(
        select(func.count()).select_from(Item).where(Item.project_id == project_id)
    ).one()


class TestIngestItems:
    def test_identical_request_twice_creates_nothing_the_second_time(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session, role=Role.service))
        project = make_project(client, headers)
        items = [{"external_id": f"doc-{i}", "text": f"document number {i}"} for i in range(10_000)]
        first = ingest(client, headers, project["id"], items)
        assert (first["created"], first["failed"], first["duplicates"]) == (10_000, 0, 0)
        ids = [r["id"] for r in first["results"]]
        assert len(set(ids)) == 10_000
        second = ingest(client, headers, project["id"], items)
        assert (second["created"], second["updated"], second["unchanged"]) == (0, 0, 10_000)
        assert [r["id"] for r in second["results"]] == ids
        assert count_items(session, project["id"]) == 10_000

    def test_same_text_under_new_external_id_is_a_duplicate(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        original = ingest(
            client, headers, project["id"], [{"external_id": "a", "text": "The  Quick fox"}]
        )
        again = ingest(
            client, headers, project["id"], [{"external_id": "b", "text": "the quick FOX "}]
        )
        assert again["duplicates"] == 1 and again["created"] == 0
        assert again["results"][0] == {
            "index": 0,
            "id": original["results"][0]["id"],
            "status": "duplicate",
            "problem": None,
        }
        assert count_items(session, project["id"]) == 1

    def test_duplicates_within_one_request(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        report = ingest(
            client, headers, project["id"], [{"text": "x y"}, {"text": "X  y"}, {"text": "z"}]
        )
        assert [r["status"] for r in report["results"]] == ["created", "duplicate", "created"]
        assert report["results"][1]["id"] == report["results"][0]["id"]

    def test_three_bad_items_fail_alone(
        self, client: TestClient, session: Session, settings: Settings
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        items: list[Any] = [{"text": f"fine item {i}"} for i in range(100)]
        items[10] = {"external_id": "no-text"}
        items[50] = {"text": "x" * (settings.max_text_chars + 1)}
        items[90] = {"text": 42}
        report = ingest(client, headers, project["id"], items)
        assert (report["created"], report["failed"]) == (97, 3)
        failed = {r["index"]: r["problem"] for r in report["results"] if r["status"] == "failed"}
        assert set(failed) == {10, 50, 90}
        assert failed[10]["errors"][0]["loc"] == ["body", 10, "text"]
        assert "limit" in failed[50]["detail"]
        assert failed[90]["errors"][0]["loc"] == ["body", 90, "text"]
        assert all(
            p["status"] == 422 and p["type"] == "/problems/validation-error"
            for p in failed.values()
        )
        assert count_items(session, project["id"]) == 97

    def test_same_external_id_updates_in_place(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        created = ingest(
            client,
            headers,
            project["id"],
            [{"external_id": "e1", "text": "v1", "metadata": {"k": 1}}],
        )
        item_id = created["results"][0]["id"]
        updated = ingest(
            client,
            headers,
            project["id"],
            [{"external_id": "e1", "text": "v2", "metadata": {"k": 2}, "source": "production"}],
        )
        assert updated["results"][0] == {
            "index": 0,
            "id": item_id,
            "status": "updated",
            "problem": None,
        }
        item = client.get(f"{items_url(project['id'])}/{item_id}", headers=headers).json()
        assert (item["text"], item["metadata"], item["source"]) == ("v2", {"k": 2}, "production")
        # The old text is free again; a new item may take it.
        reuse = ingest(client, headers, project["id"], [{"text": "v1"}])
        assert reuse["created"] == 1

    def test_update_onto_another_items_text_fails_with_409(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        ingest(
            client,
            headers,
            project["id"],
            [{"external_id": "a", "text": "alpha"}, {"external_id": "b", "text": "beta"}],
        )
        report = ingest(
            client,
            headers,
            project["id"],
            [{"external_id": "b", "text": "ALPHA"}, {"text": "gamma"}],
        )
        assert report["results"][0]["status"] == "failed"
        assert report["results"][0]["problem"]["status"] == 409
        assert report["created"] == 1

    def test_repeated_external_id_within_a_request_updates_the_new_item(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        report = ingest(
            client,
            headers,
            project["id"],
            [{"external_id": "r", "text": "one"}, {"external_id": "r", "text": "two"}],
        )
        assert [r["status"] for r in report["results"]] == ["created", "updated"]
        item = client.get(
            f"{items_url(project['id'])}/{report['results'][0]['id']}", headers=headers
        ).json()
        assert item["text"] == "two"
        assert count_items(session, project["id"]) == 1

    def test_all_entries_failing_is_422_with_every_error(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        response = client.post(
            items_url(project["id"]), json=[{"text": ""}, {"nope": 1}], headers=headers
        )
        assert response.status_code == 422
        locs = [e["loc"][:2] for e in response.json()["errors"]]
        assert ["body", 0] in locs and ["body", 1] in locs

    def test_body_must_be_a_json_array(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        assert (
            client.post(items_url(project["id"]), json={"text": "x"}, headers=headers).status_code
            == 422
        )
        bad_json = client.post(
            items_url(project["id"]),
            content=b"[{",
            headers={**headers, "content-type": "application/json"},
        )
        assert bad_json.status_code == 422

    def test_more_than_the_json_limit_is_413(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        items = [{"text": f"t{i}"} for i in range(10_001)]
        response = client.post(items_url(project["id"]), json=items, headers=headers)
        assert response.status_code == 413
        assert "NDJSON" in response.json()["detail"] or "ndjson" in response.json()["detail"]
        assert count_items(session, project["id"]) == 0

    def test_other_media_types_are_415(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        response = client.post(
            items_url(project["id"]),
            content=b"text=x",
            headers={**headers, "content-type": "text/plain"},
        )
        assert response.status_code == 415

    def test_annotator_cannot_ingest(self, client: TestClient, session: Session) -> None:
        project = make_project(client, auth(make_key(session)))
        annotator = auth(make_key(session, role=Role.annotator))
        assert (
            client.post(
                items_url(project["id"]), json=[{"text": "x"}], headers=annotator
            ).status_code
            == 403
        )

    def test_unknown_project_is_404(self, client: TestClient, session: Session) -> None:
        assert (
            client.post(
                items_url(424242), json=[{"text": "x"}], headers=auth(make_key(session))
            ).status_code
            == 404
        )

    def test_results_errors_keeps_only_failures_and_duplicates(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        response = client.post(
            items_url(project["id"]),
            params={"results": "errors"},
            json=[{"text": "a"}, {"text": "a"}, {"text": 1}],
            headers=headers,
        )
        body = response.json()
        assert (body["created"], body["duplicates"], body["failed"]) == (1, 1, 1)
        assert [r["index"] for r in body["results"]] == [1, 2]


class TestIngestNdjson:
    def test_stream_in_chunks_with_line_numbers(self, client: TestClient, session: Session) -> None:
        admin = auth(make_key(session))
        headers = {**admin, "content-type": "application/x-ndjson"}
        project = make_project(client, admin)
        lines = [
            json.dumps({"external_id": f"n{i}", "text": f"streamed {i}"}) for i in range(2_500)
        ]
        lines[7] = "{not json"
        lines.insert(100, "")  # blank lines are skipped but still counted
        body = ("\n".join(lines) + "\n").encode()

        def chunks() -> Any:
            for start in range(0, len(body), 7_000):
                yield body[start : start + 7_000]

        response = client.post(items_url(project["id"]), content=chunks(), headers=headers)
        report = response.json()
        assert (report["created"], report["failed"]) == (2_499, 1)
        assert report["results"][7]["status"] == "failed"
        assert [r["index"] for r in report["results"]][99:102] == [99, 101, 102]
        assert count_items(session, project["id"]) == 2_499
        again = client.post(items_url(project["id"]), content=body, headers=headers).json()
        assert again["unchanged"] == 2_499

    def test_last_line_without_newline_and_overlong_line(
        self, session: Session, client_with: ClientFactory
    ) -> None:
        limited = client_with(max_ndjson_line_bytes=200, ingest_chunk_size=2)
        admin = auth(make_key(session))
        headers = {**admin, "content-type": "application/x-ndjson"}
        project = make_project(limited, admin)
        body = "\n".join(
            [
                json.dumps({"text": "short"}),
                json.dumps({"text": "y" * 500}),
                json.dumps({"text": "end"}),
            ]
        )
        report = limited.post(
            items_url(project["id"]), content=body.encode(), headers=headers
        ).json()
        assert [r["status"] for r in report["results"]] == ["created", "failed", "created"]
        assert report["results"][1]["problem"]["status"] == 413


class TestListItems:
    def test_filters_by_status_source_and_label(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        report = ingest(
            client,
            headers,
            project["id"],
            [
                {"text": "a", "source": "public"},
                {"text": "b", "source": "synthetic"},
                {"text": "c"},
            ],
        )
        a, b, _ = (r["id"] for r in report["results"])
        annotate(
            client,
            headers,
            project["id"],
            [{"item_id": a, "label": "positive"}, {"item_id": b, "label": "negative"}],
        )
        url = items_url(project["id"])

        def texts(**params: str) -> list[str]:
            return [
                i["text"] for i in client.get(url, params=params, headers=headers).json()["items"]
            ]

        assert texts() == ["a", "b", "c"]
        assert texts(status="labeled") == ["a", "b"]
        assert texts(status="unlabeled") == ["c"]
        assert texts(source="synthetic") == ["b"]
        assert texts(label="positive") == ["a"]
        assert texts(status="labeled", source="public", label="negative") == []
        assert client.get(url, params={"status": "done"}, headers=headers).status_code == 422

    def test_keyset_pagination_is_complete_and_stable(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        ingest(client, headers, project["id"], [{"text": f"item {i}"} for i in range(25)])
        seen: list[int] = []
        cursor: str | None = None
        for _ in range(10):
            params: dict[str, Any] = {"limit": 10} | ({"cursor": cursor} if cursor else {})
            page = client.get(items_url(project["id"]), params=params, headers=headers).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert len(seen) == 25 and seen == sorted(set(seen))


class TestGetItem:
    def test_detail_has_annotations_and_resolved_label(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        item_id = ingest(
            client, headers, project["id"], [{"text": "hello", "data": {"lang": "en"}}]
        )["results"][0]["id"]
        annotate(client, headers, project["id"], [{"item_id": item_id, "label": "neutral"}])
        item = client.get(f"{items_url(project['id'])}/{item_id}", headers=headers).json()
        assert item["data"] == {"lang": "en"} and item["resolved_label"] == "neutral"
        assert [a["label"] for a in item["annotations"]] == ["neutral"]
        assert item["predictions"] == []

    def test_item_of_another_project_is_404(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        p1, p2 = make_project(client, headers), make_project(client, headers)
        item_id = ingest(client, headers, p1["id"], [{"text": "mine"}])["results"][0]["id"]
        assert client.get(f"{items_url(p2['id'])}/{item_id}", headers=headers).status_code == 404


class TestIngestDebian:
    def test_real_descriptions_dedup_like_the_normalized_text(
        self, client: TestClient, session: Session, debian_path: Path
    ) -> None:
        with gzip.open(debian_path, "rt") as lines:
            rows = [json.loads(line) for _, line in zip(range(3_000), lines, strict=False)]
        headers = auth(make_key(session))
        project = make_project(client, headers, labels=sorted({r["label"] for r in rows}))
        items = [
            {
                "external_id": r["id"],
                "text": r["text"],
                "metadata": {"tags": r["tags"]},
                "source": "public",
            }
            for r in rows
        ]
        report = ingest(client, headers, project["id"], items)
        distinct = len({normalize_text(r["text"]) for r in rows})
        assert report["created"] == distinct
        assert report["duplicates"] == len(rows) - distinct
        assert report["failed"] == 0
