"""A SQL import whose query runs past LABELWISE_SQL_SOURCE_TIMEOUT_SECONDS fails with
/problems/sql-query-timeout (the limit in its detail and context), on a SQLite source (a
recursive query that never ends) and on a PostgreSQL one (pg_sleep). Run through run_job with
the real job functions, as either runner does; the job's end is logged with the problem."""

import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from app.db import Database
from app.jobs.execute import run_job
from app.jobs.kinds import JOB_FUNCTIONS
from app.models.job import Job, JobKind
from app.models.job_kinds import ImportSqlParams
from app.models.project import ProjectCreate
from app.services.jobs import new_job
from app.services.projects import create_project
from app.settings import Settings
from tests.databases import POSTGRES_URL
from tests.jobs.conftest import JsonLines

SLOW_QUERIES = {
    "sqlite": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
    "SELECT count(*) AS id, 'never' AS body FROM n",
    "postgresql": "SELECT 1 AS id, 'slept ' || pg_sleep(30)::text AS body",
}
TIMEOUT = 0.5


@pytest.fixture(scope="module")
def sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slow-source") / "source.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    connection.close()
    return path


@pytest.mark.parametrize("source", ["sqlite", "postgresql"])
def test_a_query_past_the_limit_fails_the_job_with_sql_query_timeout(
    live_settings: Settings, sqlite_file: Path, job_log: JsonLines, source: str
) -> None:
    if source == "postgresql" and not POSTGRES_URL:
        pytest.skip("LABELWISE_TEST_POSTGRES_URL is not set: no PostgreSQL source to time out")
    sources = {"sqlite": f"sqlite:///{sqlite_file}", "postgresql": POSTGRES_URL}
    settings = live_settings.model_copy(
        update={"sql_sources": {"slow": sources[source]}, "sql_source_timeout_seconds": TIMEOUT}
    )
    database = Database(settings)
    try:
        with database.session(write=True) as session:
            project = create_project(
                session,
                data=ProjectCreate(
                    name=f"slow-{uuid.uuid4().hex[:8]}", labels=["a", "b"], phase="production"
                ),
            )
            job = new_job(
                session,
                project_id=project.id,
                kind=JobKind.import_sql,
                params=ImportSqlParams(
                    kind="sql",
                    connection="slow",
                    query=SLOW_QUERIES[source],
                    mapping={"external_id": "id", "text": "body"},
                    annotator="import:slow",
                    query_sha256="0" * 64,
                ),
                created_by="t",
            )
            session.commit()
            job_id = job.id
        assert job_id is not None
        started = time.monotonic()
        run_job(database, settings, job_id, functions=JOB_FUNCTIONS, enqueue=lambda _: None)
        elapsed = time.monotonic() - started
        with database.session() as session:
            stored = session.get(Job, job_id)
            assert stored is not None
            assert stored.status == "failed"
            error = stored.error or {}
    finally:
        database.engine.dispose()
    assert error["type"] == "/problems/sql-query-timeout" and error["status"] == 504
    assert f"longer than the {TIMEOUT:g} s" in error["detail"]
    assert "'slow'" in error["detail"] and "LABELWISE_SQL_SOURCE_TIMEOUT_SECONDS" in error["detail"]
    assert error["context"] == {"timeout_seconds": TIMEOUT, "rows_read": 0}
    assert elapsed < 15  # stopped at the limit, not after the query's 30 s or never
    [end] = [line for line in job_log.lines if line.get("job_id") == job_id and "problem" in line]
    assert (end["msg"], end["problem"]) == ("job failed", "/problems/sql-query-timeout")
