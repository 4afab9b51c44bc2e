"""POST /v1/projects/{id}/imports through HTTP: JSONL, CSV and Parquet files and SQL queries
(a real SQLite file and a real PostgreSQL table) become items and labels of a named source
annotator with provenance, in jobs that really run; a re-import changes nothing; bad requests
are refused before anything is written; writes through a SQL source fail and change nothing."""

import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import Session, col, func, select

from app.migrations import upgrade
from app.models.base import Role
from app.models.imports import ImportUpload, ImportUploadChunk
from app.models.item import Item
from app.models.job import Job
from app.settings import Settings
from tests.conftest import ADMIN_SECRET, ClientFactory, started_app, wait_for_job
from tests.databases import POSTGRES_URL, fresh_database
from tests.factories import auth, make_key, make_project

LABELS = ["bug", "feature", "question"]
CHUNK_ROWS = 5  # the live app's ingest_chunk_size: every test spans several chunks
TICKETS = [
    # id, text, label assigned, label it ended with, priority, opened
    (1, "App crashes when I click save", "bug", "bug", "high", "2024-01-03"),
    (2, "Please add a dark mode", "feature", "feature", "low", "2024-01-09"),
    (3, "How do I export my data?", "question", "question", "low", "2024-02-01"),
    (4, "Login page is blank on Safari", "bug", "bug", "high", "2024-02-11"),
    (5, "Support two-factor login", "feature", "bug", "medium", "2024-03-02"),
    (6, "Where are the invoices?", "question", "question", "low", "2024-03-05"),
    (7, "Sync loses my edits", "bug", "question", "high", "2024-04-17"),
    (8, "Add keyboard shortcuts", "feature", "feature", "low", "2024-04-20"),
    (9, "Error 500 when uploading", "bug", "bug", "high", "2024-05-02"),
    (10, "Can I change my plan?", "question", "question", "medium", "2024-05-30"),
    (11, "Add an export to CSV", "feature", "feature", "low", "2024-06-12"),
    (12, "Crash after the last update", "bug", "bug", "high", "2024-06-28"),
]
SQL_WRITES = [
    "DELETE FROM tickets",
    "INSERT INTO tickets (id, body, category, final_category, priority, opened) "
    "VALUES (99, 'x', 'bug', 'bug', 'low', '2024-01-01') RETURNING id",
    "UPDATE tickets SET category = 'oops' RETURNING id",
]


# --- sources and the live app ---------------------------------------------------------------------


def create_tickets(connection: Any) -> None:
    connection.execute(
        sa.text(
            "CREATE TABLE tickets (id INTEGER PRIMARY KEY, body TEXT, category TEXT, "
            "final_category TEXT, priority TEXT, opened TEXT)"
        )
    )
    connection.execute(
        sa.text("INSERT INTO tickets VALUES (:id, :body, :category, :final, :priority, :opened)"),
        [
            {"id": i, "body": b, "category": c, "final": f, "priority": p, "opened": o}
            for i, b, c, f, p, o in TICKETS
        ],
    )


@pytest.fixture(scope="module")
def sqlite_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crm") / "crm.db"
    engine = sa.create_engine(f"sqlite:///{path}", poolclass=sa.NullPool)
    with engine.begin() as connection:
        create_tickets(connection)
    engine.dispose()
    return path


@pytest.fixture(scope="module")
def postgres_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """The same table in a throwaway PostgreSQL database (None without a server)."""
    if not POSTGRES_URL:
        yield None
        return
    with fresh_database("postgresql", tmp_path_factory.mktemp("crm-pg")) as url:
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.begin() as connection:
            create_tickets(connection)
        engine.dispose()
        yield url


@dataclass
class Live:
    client: TestClient
    settings: Settings
    sqlite_source: Path
    postgres_source: str | None

    def connection_url(self, name: str) -> str:
        return self.settings.sql_sources[name]

    def source_rows(self, name: str) -> list[tuple[Any, ...]]:
        engine = sa.create_engine(self.connection_url(name), poolclass=sa.NullPool)
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT * FROM tickets ORDER BY id")).all()
        engine.dispose()
        return [tuple(r) for r in rows]

    def stored_uploads(self) -> int:
        engine = sa.create_engine(self.settings.database_url, poolclass=sa.NullPool)
        with engine.connect() as connection:
            count = (
                connection.execute(
                    sa.select(func.count()).select_from(ImportUploadChunk)
                ).scalar_one()
                + connection.execute(sa.select(func.count()).select_from(ImportUpload)).scalar_one()
            )
        engine.dispose()
        return int(count)


@pytest.fixture(scope="module")
def live(
    backend: str,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_source: Path,
    postgres_source: str | None,
) -> Iterator[Live]:
    """The app with its real job runner, two SQL sources configured, small chunks."""
    tmp = tmp_path_factory.mktemp(f"imports-{backend}")
    sources = {"crm_sqlite": f"sqlite:///{sqlite_source}"}
    if postgres_source:
        sources["crm_postgres"] = postgres_source
    with fresh_database(backend, tmp) as url:
        upgrade(url)
        settings = Settings(
            database_url=url,
            data_dir=tmp,
            bootstrap_admin_key=ADMIN_SECRET,
            ingest_chunk_size=CHUNK_ROWS,
            sql_sources=sources,
        )
        with started_app(settings) as client:
            yield Live(client, settings, sqlite_source, postgres_source)


@pytest.fixture(params=["crm_sqlite", "crm_postgres"])
def source_name(request: pytest.FixtureRequest, live: Live) -> str:
    name: str = request.param
    if name not in live.settings.sql_sources:
        pytest.skip("LABELWISE_TEST_POSTGRES_URL is not set: no PostgreSQL source")
    return name


# --- helpers ------------------------------------------------------------------------------------


def url(project_id: int) -> str:
    return f"/v1/projects/{project_id}/imports"


def upload_url(project_id: int) -> str:
    return f"/v1/projects/{project_id}/imports/upload"


def post_file(
    client: TestClient,
    project_id: int,
    content: bytes,
    file_name: str,
    mapping: dict[str, Any] | str,
    headers: dict[str, str] | None = None,
    **fields: str,
) -> Any:
    data = {"kind": "file", **fields}
    data["mapping"] = mapping if isinstance(mapping, str) else json.dumps(mapping)
    return client.post(
        upload_url(project_id),
        data=data,
        files={"file": (file_name, content, "application/octet-stream")},
        headers=headers or {},
    )


def accepted(response: Any, kind: str) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["kind"] == kind and job["status"] == "queued"
    return job


def run(client: TestClient, response: Any, kind: str) -> dict[str, Any]:
    """Wait for the accepted import job; it must succeed with full progress."""
    job = wait_for_job(client, accepted(response, kind), timeout=120)
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == 1.0
    return job


def items_of(client: TestClient, project_id: int) -> list[dict[str, Any]]:
    page = client.get(f"/v1/projects/{project_id}/items", params={"limit": 1000})
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    return items


def annotations_of(client: TestClient, project_id: int, **params: Any) -> list[dict[str, Any]]:
    page = client.get(f"/v1/projects/{project_id}/annotations", params={"limit": 1000, **params})
    assert page.status_code == 200, page.text
    found: list[dict[str, Any]] = page.json()["items"]
    return found


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def ticket_rows() -> list[dict[str, Any]]:
    return [
        {"ticket": f"t-{i}", "body": text, "category": label, "priority": priority}
        for i, text, label, _, priority, _ in TICKETS
    ]


def assert_labeled_from_import(
    client: TestClient,
    project_id: int,
    *,
    expected: dict[str, str | None],
    annotator: str,
    provenance: dict[str, Any],
) -> list[dict[str, Any]]:
    """Every item is there with its provenance; each label is the annotator's current
    annotation (source import, same provenance) and, one answer being enough, resolves it."""
    items = items_of(client, project_id)
    assert sorted(i["text"] for i in items) == sorted(expected)
    for item in items:
        label = expected[item["text"]]
        assert item["provenance"] == provenance
        assert item["resolved_label"] == label
        assert item["status"] == ("labeled" if label else "unlabeled")
    detail = client.get(f"/v1/projects/{project_id}/items/{items[0]['id']}").json()
    assert detail["provenance"] == provenance
    if expected[detail["text"]] is not None:
        [annotation] = detail["annotations"]
        assert annotation["annotator"] == annotator and annotation["source"] == "import"
        assert annotation["label"] == expected[detail["text"]]
        assert annotation["provenance"] == provenance
    labeled = annotations_of(client, project_id, source="import", annotator=annotator)
    assert len(labeled) == sum(1 for label in expected.values() if label)
    assert all(a["provenance"] == provenance for a in labeled)
    return items


# --- files --------------------------------------------------------------------------------------


class TestFileImports:
    def test_jsonl_end_to_end_and_a_re_import_changes_nothing(self, live: Live) -> None:
        client = live.client
        project = make_project(client, {}, labels=LABELS)
        content = jsonl(ticket_rows())
        mapping = {
            "external_id": "ticket",
            "text": "body",
            "label": "category",
            "metadata": ["priority"],
        }
        response = post_file(
            client, project["id"], content, "crm.jsonl", mapping, annotator="import:crm-2024"
        )
        job = run(client, response, "import_file")
        result = job["result"]
        n = len(TICKETS)
        assert result["rows_read"] == n and result["errors"] == [] and result["errors_total"] == 0
        assert result["items"] == {
            "created": n,
            "updated": 0,
            "unchanged": 0,
            "duplicates": 0,
            "failed": 0,
        }
        assert result["labels"] == {"created": n, "replaced": 0, "unchanged": 0, "failed": 0}
        provenance = result["provenance"]
        assert provenance["kind"] == "file" and provenance["name"] == "crm.jsonl"
        assert provenance["file_sha256"] == hashlib.sha256(content).hexdigest()
        assert provenance["job_id"] == job["id"] and provenance["imported_at"]
        assert job["params"]["annotator"] == result["annotator"] == "import:crm-2024"

        items = assert_labeled_from_import(
            client,
            project["id"],
            expected={text: label for _, text, label, *_ in TICKETS},
            annotator="import:crm-2024",
            provenance=provenance,
        )
        by_external_id = {i["external_id"]: i for i in items}
        assert by_external_id["t-4"]["metadata"] == {"priority": "high"}
        assert {i["source"] for i in items} == {"existing_db"}
        assert live.stored_uploads() == 0  # the upload is gone once the job ended

        again = run(
            client,
            post_file(
                client, project["id"], content, "crm.jsonl", mapping, annotator="import:crm-2024"
            ),
            "import_file",
        )
        assert again["result"]["items"]["unchanged"] == n
        assert again["result"]["labels"] == {
            "created": 0,
            "replaced": 0,
            "unchanged": n,
            "failed": 0,
        }
        after = {i["id"]: i for i in items_of(client, project["id"])}
        assert after == {i["id"]: i for i in items}  # same provenance, same updated_at
        history = annotations_of(client, project["id"], include_history=True)
        assert len(history) == n

    def test_csv_gzipped_without_ids_labels_dedupe_by_text_and_the_annotator_defaults(
        self, live: Live
    ) -> None:
        client = live.client
        project = make_project(client, {}, labels=LABELS)
        lines = ["body,category,priority"]
        for _, text, label, _, priority, _ in TICKETS[:6]:
            lines.append(f'"{text}",{label},{priority}')
        lines.append('"A ticket, with ""quotes""\nover two lines",,low')  # no label
        content = gzip.compress(("\r\n".join(lines) + "\r\n").encode())
        mapping = {"text": "body", "label": "category", "metadata": ["priority"]}
        response = post_file(client, project["id"], content, "Q3 export (final).csv.gz", mapping)
        job = run(client, response, "import_file")
        result = job["result"]
        assert result["annotator"] == "import:Q3-export-final"
        assert (result["rows_read"], result["items"]["created"]) == (7, 7)
        assert result["labels"]["created"] == 6
        expected: dict[str, str | None] = {text: label for _, text, label, *_ in TICKETS[:6]}
        expected['A ticket, with "quotes"\nover two lines'] = None
        assert_labeled_from_import(
            client,
            project["id"],
            expected=expected,
            annotator="import:Q3-export-final",
            provenance=result["provenance"],
        )
        again = run(
            client,
            post_file(client, project["id"], content, "Q3 export (final).csv.gz", mapping),
            "import_file",
        )
        assert again["result"]["items"]["duplicates"] == 7
        assert again["result"]["labels"]["unchanged"] == 6
        assert len(annotations_of(client, project["id"], include_history=True)) == 6

    def test_parquet_end_to_end(self, live: Live) -> None:
        client = live.client
        project = make_project(client, {}, labels=LABELS)
        table = pa.table(
            {
                "id": pa.array([100 + i for i, *_ in TICKETS], pa.int64()),
                "text": [t[1] for t in TICKETS],
                "label": [t[2] for t in TICKETS],
                "opened": [f"{t[5]}T09:00:00" for t in TICKETS],
                "score": pa.array([0.5] * len(TICKETS), pa.float64()),
            }
        )
        buffer = io.BytesIO()
        pq.write_table(table, buffer, row_group_size=4)
        mapping = {
            "external_id": "id",
            "text": "text",
            "label": "label",
            "metadata": ["opened", "score"],
        }
        response = post_file(
            client,
            project["id"],
            buffer.getvalue(),
            "warehouse.parquet",
            mapping,
            annotator="import:warehouse",
            source="public",
        )
        job = run(client, response, "import_file")
        assert job["result"]["items"]["created"] == len(TICKETS)
        items = assert_labeled_from_import(
            client,
            project["id"],
            expected={text: label for _, text, label, *_ in TICKETS},
            annotator="import:warehouse",
            provenance=job["result"]["provenance"],
        )
        first = next(i for i in items if i["external_id"] == "101")
        assert first["metadata"] == {"opened": "2024-01-03T09:00:00", "score": 0.5}
        assert {i["source"] for i in items} == {"public"}

    def test_bad_rows_fail_alone_and_are_reported_by_row(self, live: Live) -> None:
        client = live.client
        project = make_project(client, {}, labels=LABELS)
        content = b"\n".join(
            [
                b'{"ticket": "a", "body": "Good one", "category": "bug"}',
                b'{"ticket": "b", "body": "not closed',
                b'{"ticket": "c", "body": "Label unknown", "category": "urgent"}',
                b'{"ticket": "d"}',
                b'{"ticket": "e", "body": ""}',
                b'{"ticket": "f", "body": 42}',
                b'{"ticket": "g", "body": "good ONE", "category": "bug"}',
                b'{"ticket": "h", "body": "Also fine", "category": ["bug"]}',
            ]
        )
        mapping = {"external_id": "ticket", "text": "body", "label": "category"}
        job = run(
            client, post_file(client, project["id"], content, "mixed.jsonl", mapping), "import_file"
        )
        result = job["result"]
        assert result["rows_read"] == 8
        assert result["items"] == {
            "created": 3,
            "updated": 0,
            "unchanged": 0,
            "duplicates": 1,
            "failed": 4,
        }
        # Row 7 is row 1's text (another chunk): its label goes to the same item, unchanged.
        assert result["labels"] == {"created": 1, "replaced": 0, "unchanged": 1, "failed": 2}
        errors = [(e["row"], e["part"], e["problem"]["status"]) for e in result["errors"]]
        assert errors == [
            (2, "row", 422),
            (3, "label", 422),
            (4, "row", 422),
            (5, "item", 422),
            (6, "row", 422),
            (8, "label", 422),
        ]
        details = {e["row"]: e["problem"]["detail"] for e in result["errors"]}
        assert "not JSON" in details[2] and "'urgent'" in details[3]
        assert "no 'body'" in details[4] and "text" in details[5] and "not text" in details[6]
        items = {i["external_id"]: i for i in items_of(client, project["id"])}
        assert sorted(items) == ["a", "c", "h"]
        assert items["a"]["resolved_label"] == "bug"
        assert items["c"]["status"] == items["h"]["status"] == "unlabeled"

    def test_an_upload_needs_no_kind(self, live: Live) -> None:
        """The upload path makes every import a file one: `kind=file` is optional there."""
        client = live.client
        project = make_project(client, {}, labels=LABELS)
        response = client.post(
            upload_url(project["id"]),
            data={"mapping": json.dumps({"text": "body", "label": "category"})},
            files={"file": ("t.csv", CSV, "application/octet-stream")},
        )
        job = run(client, response, "import_file")
        assert job["result"]["labels"]["created"] == 2

    def test_a_file_uploaded_to_the_json_path_is_still_imported(self, live: Live) -> None:
        """How file imports were sent before they had their own path: still served."""
        client = live.client
        project = make_project(client, {}, labels=LABELS)
        response = client.post(
            url(project["id"]),
            data={"kind": "file", "mapping": json.dumps({"text": "body"})},
            files={"file": ("t.csv", CSV, "application/octet-stream")},
        )
        job = run(client, response, "import_file")
        assert job["result"]["items"]["created"] == 2

    def test_an_unreadable_file_fails_its_job_and_the_upload_is_dropped(self, live: Live) -> None:
        client = live.client
        project = make_project(client, {}, labels=LABELS)
        content = gzip.compress(jsonl(ticket_rows()) * 50)[:-30]
        response = post_file(client, project["id"], content, "cut.jsonl.gz", {"text": "body"})
        job = wait_for_job(client, accepted(response, "import_file"))
        assert job["status"] == "failed"
        assert job["error"]["type"] == "/problems/unreadable-file"
        assert "truncated" in job["error"]["detail"]
        assert live.stored_uploads() == 0
        retried = client.post(f"/v1/jobs/{job['id']}/retry")
        again = wait_for_job(client, accepted(retried, "import_file"))
        assert again["status"] == "failed"
        assert again["error"]["type"] == "/problems/import-upload-gone"
        assert again["error"]["status"] == 410


# --- SQL ----------------------------------------------------------------------------------------


def sql_body(connection: str, query: str, **fields: Any) -> dict[str, Any]:
    mapping = {"external_id": "id", "text": "body", "label": "category", "metadata": ["priority"]}
    return {"kind": "sql", "connection": connection, "query": query, "mapping": mapping, **fields}


ALL_TICKETS = "SELECT id, body, category, final_category, priority FROM tickets ORDER BY id"


class TestSqlImports:
    def test_a_query_with_params_end_to_end(self, live: Live, source_name: str) -> None:
        client = live.client
        project = make_project(client, {}, labels=LABELS)
        query = (
            "SELECT id, body, category, priority FROM tickets "
            "WHERE opened >= :since AND priority <> :skip ORDER BY id"
        )
        body = sql_body(source_name, query, params={"since": "2024-03-01", "skip": "medium"})
        job = run(client, client.post(url(project["id"]), json=body), "import_sql")
        chosen = [t for t in TICKETS if t[5] >= "2024-03-01" and t[4] != "medium"]
        result = job["result"]
        assert (result["rows_read"], result["capped"]) == (len(chosen), False)
        assert result["items"]["created"] == result["labels"]["created"] == len(chosen)
        provenance = result["provenance"]
        assert provenance["kind"] == "sql" and provenance["name"] == source_name
        assert provenance["query_sha256"] == hashlib.sha256(query.encode()).hexdigest()
        assert provenance["job_id"] == job["id"]
        items = assert_labeled_from_import(
            client,
            project["id"],
            expected={t[1]: t[2] for t in chosen},
            annotator=f"import:{source_name}",
            provenance=provenance,
        )
        assert {i["external_id"] for i in items} == {str(t[0]) for t in chosen}
        # The connection URL is nowhere in what the API shows about the job.
        assert live.connection_url(source_name) not in json.dumps(job)
        assert str(live.sqlite_source) not in json.dumps(job)

        again = run(client, client.post(url(project["id"]), json=body), "import_sql")
        assert again["result"]["items"]["unchanged"] == len(chosen)
        assert again["result"]["labels"]["unchanged"] == len(chosen)

    def test_params_are_bound_not_interpolated(self, live: Live, source_name: str) -> None:
        project = make_project(live.client, {}, labels=LABELS)
        query = "SELECT id, body, category, priority FROM tickets WHERE priority = :priority"
        body = sql_body(source_name, query, params={"priority": "high' OR '1'='1"})
        job = run(live.client, live.client.post(url(project["id"]), json=body), "import_sql")
        assert job["result"]["rows_read"] == 0
        assert items_of(live.client, project["id"]) == []

    def test_the_stability_filter_keeps_only_labels_never_changed(
        self, live: Live, source_name: str
    ) -> None:
        project = make_project(live.client, {}, labels=LABELS)
        body = sql_body(source_name, ALL_TICKETS, stable_only=True)
        body["mapping"]["final_label"] = "final_category"
        job = run(live.client, live.client.post(url(project["id"]), json=body), "import_sql")
        stable = [t for t in TICKETS if t[2] == t[3]]
        result = job["result"]
        assert result["rows_read"] == len(TICKETS)
        assert result["skipped_unstable"] == len(TICKETS) - len(stable) > 0
        assert sorted(i["text"] for i in items_of(live.client, project["id"])) == sorted(
            t[1] for t in stable
        )

    def test_max_rows_caps_the_query_and_says_so(self, live: Live, source_name: str) -> None:
        project = make_project(live.client, {}, labels=LABELS)
        capped = run(
            live.client,
            live.client.post(
                url(project["id"]), json=sql_body(source_name, ALL_TICKETS, max_rows=7)
            ),
            "import_sql",
        )
        assert (capped["result"]["rows_read"], capped["result"]["capped"]) == (7, True)
        assert len(items_of(live.client, project["id"])) == 7
        exact = run(
            live.client,
            live.client.post(
                url(project["id"]), json=sql_body(source_name, ALL_TICKETS, max_rows=len(TICKETS))
            ),
            "import_sql",
        )
        assert (exact["result"]["rows_read"], exact["result"]["capped"]) == (len(TICKETS), False)

    @pytest.mark.parametrize("query", SQL_WRITES)
    def test_a_query_that_writes_fails_and_changes_nothing(
        self, live: Live, source_name: str, query: str
    ) -> None:
        before = live.source_rows(source_name)
        project = make_project(live.client, {}, labels=LABELS)
        response = live.client.post(url(project["id"]), json=sql_body(source_name, query))
        job = wait_for_job(live.client, accepted(response, "import_sql"))
        assert job["status"] == "failed"
        assert job["error"]["type"] == "/problems/sql-query-failed"
        assert job["error"]["status"] == 422 and "read-only" in job["error"]["detail"]
        assert live.connection_url(source_name) not in json.dumps(job)
        assert live.source_rows(source_name) == before == [tuple(t) for t in TICKETS]
        assert items_of(live.client, project["id"]) == []

    def test_a_mapped_column_the_query_lacks_fails_before_writing(
        self, live: Live, source_name: str
    ) -> None:
        project = make_project(live.client, {}, labels=LABELS)
        body = sql_body(source_name, "SELECT id, body FROM tickets")
        job = wait_for_job(
            live.client, accepted(live.client.post(url(project["id"]), json=body), "import_sql")
        )
        assert job["status"] == "failed"
        assert job["error"]["type"] == "/problems/validation-error"
        assert "'category'" in job["error"]["detail"]
        assert items_of(live.client, project["id"]) == []

    def test_an_unknown_connection_is_a_404_and_nothing_is_queued(self, live: Live) -> None:
        project = make_project(live.client, {}, labels=LABELS)
        response = live.client.post(url(project["id"]), json=sql_body("billing", "SELECT 1"))
        assert response.status_code == 404
        problem = response.json()
        assert problem["type"] == "/problems/not-found" and "'billing'" in problem["detail"]
        assert "crm_sqlite" in problem["detail"]  # names are listed; URLs never
        assert str(live.sqlite_source) not in response.text
        jobs = live.client.get("/v1/jobs", params={"project_id": project["id"]}).json()
        assert jobs["items"] == []


# --- refused up front ---------------------------------------------------------------------------


def nothing_written(session: Session, project_id: int) -> None:
    for model, column in ((Job, Job.project_id), (Item, Item.project_id)):
        count = session.exec(
            select(func.count()).select_from(model).where(col(column) == project_id)
        ).one()
        assert count == 0, model
    assert session.exec(select(func.count()).select_from(ImportUpload)).one() == 0
    assert session.exec(select(func.count()).select_from(ImportUploadChunk)).one() == 0


CSV = b"id,body,category\n1,App crashes,bug\n2,Dark mode,feature\n"


class TestRefusals:
    def setup_project(self, client: TestClient, session: Session) -> tuple[dict[str, str], int]:
        admin = auth(make_key(session))
        return admin, make_project(client, admin, labels=LABELS)["id"]

    def problem(self, response: Any, status: int, type_: str = "validation-error") -> Any:
        assert response.status_code == status, response.text
        body = response.json()
        assert body["type"] == f"/problems/{type_}"
        return body

    @pytest.mark.parametrize(
        ("mapping", "loc"),
        [
            ("{text: body}", ["body", "mapping"]),
            ("[]", ["body", "mapping"]),
            ("{}", ["body", "mapping", "text"]),
            ('{"text": "body", "colour": "x"}', ["body", "mapping", "colour"]),
            (
                '{"text": "body", "label": "category", "metadata": ["id", "id"]}',
                ["body", "mapping"],
            ),
        ],
    )
    def test_a_malformed_mapping_is_a_422(
        self, client: TestClient, session: Session, mapping: str, loc: list[str]
    ) -> None:
        admin, project_id = self.setup_project(client, session)
        response = post_file(client, project_id, CSV, "t.csv", mapping, admin)
        body = self.problem(response, 422)
        assert loc in [e["loc"] for e in body["errors"]]
        nothing_written(session, project_id)

    def test_a_mapped_column_the_csv_header_lacks_is_a_422(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project_id = self.setup_project(client, session)
        mapping = {"text": "body", "label": "label", "metadata": ["id", "team"]}
        body = self.problem(post_file(client, project_id, CSV, "t.csv", mapping, admin), 422)
        assert [e["loc"] for e in body["errors"]] == [
            ["body", "mapping", "label"],
            ["body", "mapping", "metadata", 1],
        ]
        assert "'label'" in body["detail"] and "'team'" in body["detail"]
        assert "'category'" in body["detail"]  # the columns it does have
        nothing_written(session, project_id)

    def test_a_mapped_column_the_parquet_schema_lacks_is_a_422(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project_id = self.setup_project(client, session)
        buffer = io.BytesIO()
        pq.write_table(pa.table({"id": [1], "text": ["x"]}), buffer)
        mapping = {"text": "body"}
        body = self.problem(
            post_file(client, project_id, buffer.getvalue(), "t.parquet", mapping, admin), 422
        )
        assert body["errors"][0]["loc"] == ["body", "mapping", "text"]
        nothing_written(session, project_id)

    @pytest.mark.parametrize(
        ("content", "file_name", "fields", "type_", "loc"),
        [
            (CSV, "tickets.txt", {}, "validation-error", ["body", "format"]),
            (CSV, "tickets.csv", {"format": "xlsx"}, "validation-error", ["body", "format"]),
            (b"", "tickets.csv", {}, "unreadable-file", None),
            (b"", "tickets.jsonl", {}, "unreadable-file", None),
            (CSV, "tickets.parquet", {}, "unreadable-file", None),
            (
                CSV,
                "tickets.csv",
                {"annotator": "has space"},
                "validation-error",
                ["body", "annotator"],
            ),
            (CSV, "tickets.csv", {"source": "nowhere"}, "validation-error", ["body", "source"]),
            (CSV, "tickets.csv", {"colour": "red"}, "validation-error", ["body", "colour"]),
            (CSV, "tickets.csv", {"kind": "sql"}, "validation-error", ["body", "kind"]),
        ],
    )
    def test_a_bad_file_or_field_is_refused(
        self,
        client: TestClient,
        session: Session,
        content: bytes,
        file_name: str,
        fields: dict[str, str],
        type_: str,
        loc: list[str] | None,
    ) -> None:
        admin, project_id = self.setup_project(client, session)
        response = post_file(
            client, project_id, content, file_name, {"text": "body"}, admin, **fields
        )
        body = self.problem(response, 422, type_)
        if loc is not None:
            assert loc in [e["loc"] for e in body["errors"]]
        nothing_written(session, project_id)

    def test_a_form_without_a_file_is_a_422(self, client: TestClient, session: Session) -> None:
        admin, project_id = self.setup_project(client, session)
        parts = {"kind": "file", "mapping": '{"text": "body"}', "file": "inline text"}
        response = client.post(
            upload_url(project_id),
            files={name: (None, value) for name, value in parts.items()},  # text parts only
            headers=admin,
        )
        body = self.problem(response, 422)
        assert ["body", "file"] in [e["loc"] for e in body["errors"]]
        nothing_written(session, project_id)

    @pytest.mark.parametrize(
        ("body", "detail"),
        [
            ({"kind": "ftp", "path": "/etc"}, "'ftp'"),
            ({"kind": "file", "mapping": {"text": "body"}}, "multipart/form-data"),
            ({"connection": "crm"}, "kind"),
            ([{"kind": "sql"}], "object"),
        ],
    )
    def test_an_unknown_or_misplaced_kind_is_a_422(
        self, client: TestClient, session: Session, body: Any, detail: str
    ) -> None:
        admin, project_id = self.setup_project(client, session)
        problem = self.problem(client.post(url(project_id), json=body, headers=admin), 422)
        assert detail in problem["detail"]
        nothing_written(session, project_id)

    def test_a_body_that_is_not_json_is_a_422(self, client: TestClient, session: Session) -> None:
        admin, project_id = self.setup_project(client, session)
        response = client.post(
            url(project_id),
            content=b'{"kind": "sql", NaN}',
            headers={**admin, "content-type": "application/json"},
        )
        assert "not valid JSON" in self.problem(response, 422)["detail"]
        nothing_written(session, project_id)

    @pytest.mark.parametrize("content_type", ["text/csv", "application/x-ndjson", None])
    def test_another_content_type_is_a_415(
        self, client: TestClient, session: Session, content_type: str | None
    ) -> None:
        admin, project_id = self.setup_project(client, session)
        headers = {**admin, **({"content-type": content_type} if content_type else {})}
        response = client.post(url(project_id), content=CSV, headers=headers)
        self.problem(response, 415, "unsupported-media-type")
        response = client.post(upload_url(project_id), content=CSV, headers=headers)
        self.problem(response, 415, "unsupported-media-type")
        nothing_written(session, project_id)

    def test_json_to_the_upload_path_is_a_415_naming_the_json_path(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project_id = self.setup_project(client, session)
        response = client.post(
            upload_url(project_id), json=sql_body("crm", "SELECT 1"), headers=admin
        )
        assert ".../imports" in self.problem(response, 415, "unsupported-media-type")["detail"]
        nothing_written(session, project_id)

    def test_annotator_keys_cannot_import(self, client: TestClient, session: Session) -> None:
        _, project_id = self.setup_project(client, session)
        annotator = auth(make_key(session, role=Role.annotator))
        response = post_file(client, project_id, CSV, "t.csv", {"text": "body"}, annotator)
        self.problem(response, 403, "forbidden")
        response = client.post(url(project_id), json=sql_body("crm", "SELECT 1"), headers=annotator)
        self.problem(response, 403, "forbidden")
        nothing_written(session, project_id)

    def test_an_upload_over_the_import_limit_is_a_413_while_the_body_limit_is_not_its_limit(
        self, client_with: ClientFactory, session: Session
    ) -> None:
        small = client_with(max_import_bytes=2_000, max_body_bytes=500)
        admin, project_id = self.setup_project(small, session)
        big = b"id,body\n" + b"".join(b"%d,ticket number %d\n" % (i, i) for i in range(300))
        response = post_file(small, project_id, big, "t.csv", {"text": "body"}, admin)
        assert "import limit" in self.problem(response, 413, "payload-too-large")["detail"]
        nothing_written(session, project_id)
        response = post_file(small, project_id, big[:1_500], "t.csv", {"text": "body"}, admin)
        accepted(response, "import_file")  # over max_body_bytes, under max_import_bytes

    @pytest.mark.parametrize(
        ("changes", "loc"),
        [
            ({"params": {"since": "2024"}}, ["body", "params", "since"]),
            ({"query": "SELECT * FROM t WHERE a = :a"}, ["body", "params"]),
            ({"stable_only": True}, ["body"]),
            ({"mapping": {"text": "b", "final_label": "f"}}, ["body"]),
            ({"max_rows": 0}, ["body", "max_rows"]),
            ({"max_rows": 10_000_001}, ["body", "max_rows"]),
            ({"connection": "postgresql://u:p@h/db"}, ["body", "connection"]),
            ({"params": {"a": {"nested": 1}}}, ["body", "params", "a", "str"]),
            ({"url": "sqlite:///x.db"}, ["body", "url"]),
        ],
    )
    def test_a_bad_sql_import_is_a_422(
        self,
        client_with: ClientFactory,
        session: Session,
        changes: dict[str, Any],
        loc: list[str],
    ) -> None:
        client = client_with(sql_sources={"crm": "sqlite:////nowhere/crm.db"})
        admin, project_id = self.setup_project(client, session)
        body = {**sql_body("crm", "SELECT id, body, category FROM tickets"), **changes}
        problem = self.problem(client.post(url(project_id), json=body, headers=admin), 422)
        assert loc in [e["loc"] for e in problem["errors"]], problem
        nothing_written(session, project_id)

    def test_an_unconfigured_connection_is_a_404(
        self, client: TestClient, session: Session
    ) -> None:
        admin, project_id = self.setup_project(client, session)
        response = client.post(url(project_id), json=sql_body("crm", "SELECT 1"), headers=admin)
        assert "'crm'" in self.problem(response, 404, "not-found")["detail"]
        nothing_written(session, project_id)

    def test_a_queued_sql_import_keeps_no_url(
        self, client_with: ClientFactory, session: Session
    ) -> None:
        secret_url = "postgresql+psycopg://reader:hunter2@db.internal:5432/crm"
        client = client_with(sql_sources={"crm": secret_url})
        admin, project_id = self.setup_project(client, session)
        query = "SELECT id, body FROM tickets WHERE team = :team"
        body = {
            "kind": "sql",
            "connection": "crm",
            "query": query,
            "params": {"team": "a"},
            "mapping": {"external_id": "id", "text": "body"},
        }
        job = accepted(client.post(url(project_id), json=body, headers=admin), "import_sql")
        assert job["params"]["annotator"] == "import:crm"
        assert job["params"]["query_sha256"] == hashlib.sha256(query.encode()).hexdigest()
        assert job["params"]["max_rows"] == 100_000 and job["params"]["source"] == "existing_db"
        for secret in ("hunter2", "db.internal", "reader"):
            assert secret not in json.dumps(job)


class TestUploadStorage:
    def test_the_file_is_stored_in_1_mib_chunks_with_its_hash(
        self, client: TestClient, session: Session
    ) -> None:
        admin = auth(make_key(session))
        project_id = make_project(client, admin, labels=LABELS)["id"]
        row = b'{"body": "' + b"x" * 1000 + b'"}\n'
        content = row * 2_600  # about 2.5 MiB
        response = post_file(
            client, project_id, content, "../../etc/big.jsonl", {"text": "body"}, admin
        )
        job = accepted(response, "import_file")
        params = job["params"]
        assert params["file_name"] == "big.jsonl" and params["format"] == "jsonl"
        assert params["annotator"] == "import:big"
        assert params["size_bytes"] == len(content)
        assert params["file_sha256"] == hashlib.sha256(content).hexdigest()
        upload = session.get(ImportUpload, params["upload_id"])
        assert upload is not None and upload.job_id == job["id"] and upload.n_chunks == 3
        chunks = session.exec(
            select(ImportUploadChunk)
            .where(col(ImportUploadChunk.upload_id) == upload.id)
            .order_by(col(ImportUploadChunk.seq))
        ).all()
        assert [len(c.data) for c in chunks] == [2**20, 2**20, len(content) - 2**21]
        assert b"".join(c.data for c in chunks) == content
