"""Jobs under database faults (app/jobs/execute.py, app/jobs/runner.py): a job that meets a
fault fails with its database-* problem and its retry succeeds; a claim or an end that meets
one is retried; a claim that never happens leaves the job queued and the runner enqueues it
again; an end that is never recorded is left to the sweep. Never stuck `running`.

The faults are real: the lead's `Injector` (tests/api/test_db_faults.py) on the engine of the
job's own `Database` (PostgreSQL: the statement's backend is terminated; SQLite: the driver's
error), a held SQLite write lock, or a PostgreSQL database that refuses connections for a
while (`ALLOW_CONNECTIONS false` and its backends terminated: a real outage of one database).
"""

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine import make_url

from app.db import Database
from app.jobs.context import worker_name
from app.jobs.execute import JobNotClaimed, fail_interrupted_jobs, fail_job_if_running, run_job
from app.jobs.kinds import JOB_FUNCTIONS
from app.models.job import Job, JobStatus
from app.settings import Settings
from tests.api.test_db_faults import Injector
from tests.api.test_jobs import queued_training
from tests.api.test_registry import labeled_project
from tests.conftest import started_app, wait_for_job
from tests.databases import POSTGRES_URL
from tests.factories import annotate, ingest, make_project

FAULT_TYPES = {"/problems/database-unavailable", "/problems/database-busy"}


@contextmanager
def job_database(settings: Settings, backend: str) -> Iterator[tuple[Database, Injector]]:
    """The `Database` a runner would give run_job, with an injector on its engine."""
    database = Database(settings)
    injector = Injector(database.engine, backend)
    event.listen(database.engine, "before_cursor_execute", injector.before_execute)
    event.listen(database.engine, "commit", injector.before_commit)
    try:
        yield database, injector
    finally:
        database.engine.dispose()


def queue_training(database: Database, project_id: int) -> int:
    """A training job committed as queued, enqueued nowhere (the test runs it)."""
    with database.session(write=True) as session:
        job = queued_training(session, project_id, algorithm="hashing_sgd", activate=False)
        session.commit()
        assert job.id is not None
        return job.id


def stored(database: Database, job_id: int) -> Job:
    with database.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def run(database: Database, settings: Settings, job_id: int) -> list[int]:
    follow_ups: list[int] = []
    run_job(database, settings, job_id, functions=JOB_FUNCTIONS, enqueue=follow_ups.append)
    return follow_ups


class Recorded(logging.Handler):
    """The messages of one logger while the block runs (whatever its propagation)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.logger = logging.getLogger(name)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def text(self) -> str:
        return "\n".join(self.messages)

    def __enter__(self) -> "Recorded":
        self.logger.addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        self.logger.removeHandler(self)


@pytest.fixture
def fast_settings(live_settings: Settings) -> Settings:
    return live_settings.model_copy(update={"job_fault_retry_seconds": 5.0})


def test_a_job_that_meets_a_fault_fails_with_its_problem_and_its_retry_succeeds(
    live_client: TestClient, fast_settings: Settings, backend: str
) -> None:
    project_id, _, _ = labeled_project(live_client, n_labeled=10, n_pool=0, seed=80)
    with job_database(fast_settings, backend) as (database, injector):
        job_id = queue_training(database, project_id)
        injector.fail("INSERT INTO model_version", times=1)
        run(database, fast_settings, job_id)
        assert injector.fired == 1
    failed = live_client.get(f"/v1/jobs/{job_id}").json()
    assert failed["status"] == "failed" and failed["retryable"] is True, failed
    problem = failed["error"]
    assert problem["type"] == "/problems/database-unavailable", problem
    assert problem["status"] == 503
    assert problem["context"]["fault"] in {"shutting_down", "cannot_connect"}
    assert "This is a bug" not in problem["detail"]
    assert f"POST /v1/jobs/{job_id}/retry" in problem["detail"]
    assert live_client.get(f"/v1/projects/{project_id}/models").json()["items"] == []

    retried = live_client.post(f"/v1/jobs/{job_id}/retry")
    assert retried.status_code == 202, retried.text
    retry = wait_for_job(live_client, retried.json())
    assert (retry["status"], retry["retry_of"]) == ("succeeded", job_id), retry
    assert retry["result"]["version"] == 1


def test_a_job_that_meets_a_full_disk_fails_database_full(
    live_client: TestClient, fast_settings: Settings, backend: str
) -> None:
    """SQLite's own error for a full disk, raised by the driver for the job's write (a full
    PostgreSQL disk cannot be made in a test); the end is then recorded once space is back."""
    if backend != "sqlite":
        pytest.skip("a full disk is simulated with SQLite's driver error only")
    project_id, _, _ = labeled_project(live_client, n_labeled=10, n_pool=0, seed=88)
    with job_database(fast_settings, backend) as (database, _):
        job_id = queue_training(database, project_id)

        def disk_full(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            if statement.startswith("INSERT INTO model_version"):
                raise sqlite3.OperationalError("database or disk is full")

        event.listen(database.engine, "before_cursor_execute", disk_full)
        run(database, fast_settings, job_id)
    failed = live_client.get(f"/v1/jobs/{job_id}").json()
    assert (failed["status"], failed["retryable"]) == ("failed", True), failed
    assert failed["error"]["type"] == "/problems/database-full"
    assert failed["error"]["status"] == 507
    assert failed["error"]["context"] == {"fault": "disk_full"}
    assert failed["error"]["detail"].startswith("The database has no space left to write, so")


@pytest.mark.parametrize(
    ("pattern", "what"),
    [
        ("started_at=", "the claim's statement"),
        ("COMMIT", "the claim's commit"),
        ("finished_at=", "the end's statement"),
        ("SET progress=", "a progress report (the job's own heartbeat)"),
    ],
)
def test_a_claim_an_end_or_a_progress_report_that_meets_a_fault_once_is_retried(
    live_client: TestClient, fast_settings: Settings, backend: str, pattern: str, what: str
) -> None:
    project_id, _, _ = labeled_project(live_client, n_labeled=10, n_pool=0, seed=81)
    with job_database(fast_settings, backend) as (database, injector):
        job_id = queue_training(database, project_id)
        injector.fail(pattern, times=1)
        run(database, fast_settings, job_id)
        assert injector.fired == 1, what
        job = stored(database, job_id)
    assert job.status == JobStatus.succeeded, (what, job.error)
    assert job.worker == worker_name() and job.result is not None
    events = live_client.get(f"/v1/jobs/{job_id}").json()
    assert events["result"]["version"] == 1


def test_a_claim_whose_commit_was_stored_before_the_driver_failed_is_still_ours(
    live_client: TestClient, fast_settings: Settings, backend: str
) -> None:
    """The outcome of a failed commit is unknown; the retried claim must recognise its own
    stored claim instead of leaving the job `running` with nobody running it. (SQLite: the
    driver commits, then raises; PostgreSQL cannot be made to lose the answer to a COMMIT.)"""
    if backend != "sqlite":
        pytest.skip("needs a commit that is stored and then fails in the driver: SQLite only")
    project_id, _, _ = labeled_project(live_client, n_labeled=10, n_pool=0, seed=82)
    with job_database(fast_settings, backend) as (database, _):
        job_id = queue_training(database, project_id)
        fired: list[int] = []

        def commit_then_fail(connection: Any) -> None:
            if fired:
                return
            fired.append(1)
            dbapi_connection = connection.connection.dbapi_connection
            real_commit = dbapi_connection.commit_in_driver

            def committed_but_failed() -> None:
                del dbapi_connection.commit_in_driver  # once
                real_commit()
                raise sqlite3.OperationalError("disk I/O error")

            dbapi_connection.commit_in_driver = committed_but_failed

        event.listen(database.engine, "commit", commit_then_fail)
        run(database, fast_settings, job_id)
        assert fired == [1]
        job = stored(database, job_id)
    assert job.status == JobStatus.succeeded, job.error


def test_a_claim_that_meets_a_lasting_fault_leaves_the_job_queued(
    live_client: TestClient, live_settings: Settings, backend: str
) -> None:
    settings = live_settings.model_copy(update={"job_fault_retry_seconds": 0.5})
    project_id, _, _ = labeled_project(live_client, n_labeled=10, n_pool=0, seed=83)
    with job_database(settings, backend) as (database, injector):
        job_id = queue_training(database, project_id)
        injector.fail("started_at=", times=10_000)
        started = time.monotonic()
        with pytest.raises(JobNotClaimed) as caught:
            run(database, settings, job_id)
        assert time.monotonic() - started < 5  # within the 0.5 s window, plus a statement
        assert injector.fired >= 3  # retried with backoff, then given up
        assert caught.value.job_id == job_id
        injector.fail("", times=0)
        assert stored(database, job_id).status == JobStatus.queued
        run(database, settings, job_id)  # the runner's next enqueue
        assert stored(database, job_id).status == JobStatus.succeeded


def test_an_end_that_cannot_be_recorded_is_left_to_the_sweep(
    live_client: TestClient, live_settings: Settings, backend: str
) -> None:
    settings = live_settings.model_copy(update={"job_fault_retry_seconds": 0.5})
    project_id, _, _ = labeled_project(live_client, n_labeled=10, n_pool=0, seed=84)
    with job_database(settings, backend) as (database, injector):
        job_id = queue_training(database, project_id)
        injector.fail("finished_at=", times=10_000)
        run(database, settings, job_id)  # logs, does not raise
        injector.fail("", times=0)
        job = stored(database, job_id)
        assert (job.status, job.worker) == (JobStatus.running, worker_name())
        # This process no longer runs it: its own periodic sweep fails it (retryable), as a
        # sweep of any other process would once its heartbeat is stale.
        swept = fail_interrupted_jobs(database, stale_after=timedelta(hours=1), at_startup=False)
        assert job_id in swept
    failed = live_client.get(f"/v1/jobs/{job_id}").json()
    assert (failed["status"], failed["retryable"]) == ("failed", True)
    assert failed["error"]["type"] == "/problems/job-interrupted"


def test_failing_a_job_whose_process_died_waits_a_fault_out(
    live_client: TestClient, fast_settings: Settings, backend: str
) -> None:
    project_id, _, _ = labeled_project(live_client, n_labeled=10, n_pool=0, seed=87)
    with job_database(fast_settings, backend) as (database, injector):
        job_id = queue_training(database, project_id)
        with database.session(write=True) as session:
            job = session.get(Job, job_id)
            assert job is not None
            job.status, job.worker = JobStatus.running, "elsewhere:1"
            session.add(job)
            session.commit()
        injector.fail("finished_at=", times=2)
        fail_job_if_running(database, job_id, "its process died", retry_seconds=5)
        assert injector.fired == 2
        job = stored(database, job_id)
    assert job.status == JobStatus.failed
    assert job.error is not None and job.error["type"] == "/problems/job-interrupted"


# --- the in-process runner: a job whose claim never happened runs later ----------------------


@contextmanager
def database_away(settings: Settings, backend: str) -> Iterator[None]:
    """The database refuses the job's claim while the block runs: SQLite, a write lock held
    (writers time out: database is locked); PostgreSQL, the database refuses connections and
    its backends are terminated."""
    url = make_url(settings.resolved_database_url)
    if backend == "sqlite":
        assert url.database is not None
        holder = sqlite3.connect(url.database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    with postgres_outage(url.render_as_string(hide_password=False)):
        yield


@contextmanager
def postgres_outage(database_url: str, *, spare_pid: int | None = None) -> Iterator[None]:
    """A real outage of one PostgreSQL database: it refuses new connections and every
    backend but `spare_pid` is terminated; then it accepts connections again."""
    url = make_url(database_url)
    name = url.database
    admin = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND pid IS DISTINCT FROM %s",
            [name, spare_pid],
        )
        try:
            yield
        finally:
            connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_the_in_process_runner_enqueues_an_unclaimed_job_again(
    live_settings: Settings, backend: str, tmp_path: Path
) -> None:
    settings = live_settings.model_copy(
        update={"job_fault_retry_seconds": 1.0, "sqlite_busy_timeout_ms": 100}
    )
    with started_app(settings) as client:
        project_id, _, _ = labeled_project(client, n_labeled=10, n_pool=0, seed=85)
        database = Database(settings)
        job_id = queue_training(database, project_id)
        database.engine.dispose()
        runner = client.app.state.runner  # type: ignore[attr-defined]
        with Recorded("labelwise.jobs") as logged, database_away(settings, backend):
            runner.enqueue(job_id)
            # The child's claim gives up after 1 s; the runner enqueues it again 1 s later,
            # and again, while the database stays away.
            deadline = time.monotonic() + 30
            while f"job {job_id} stays queued" not in logged.text():
                assert time.monotonic() < deadline, logged.text()
                time.sleep(0.1)
        finished = wait_for_job(client, {"id": job_id}, timeout=60)
        assert finished["status"] == "succeeded", finished
        # The API's own threads lived through it: the retrain watcher still checks.
        watcher = client.app.state.retrain_watcher  # type: ignore[attr-defined]
        passes = watcher.passes
        deadline = time.monotonic() + 10
        while watcher.passes < passes + 2:
            assert time.monotonic() < deadline, "the retrain watcher stopped"
            time.sleep(0.05)
        assert all(
            thread.is_alive()
            for thread in threading.enumerate()
            if thread.name in {"retrain-watch", "job-sweeper", "webhook-sender"}
        )


def test_a_runner_started_while_the_database_is_away_runs_the_queued_jobs_later(
    live_client: TestClient, live_settings: Settings, backend: str
) -> None:
    settings = live_settings.model_copy(
        update={"job_fault_retry_seconds": 1.0, "sqlite_busy_timeout_ms": 100}
    )
    project_id, _, _ = labeled_project(live_client, n_labeled=10, n_pool=0, seed=86)
    database = Database(settings)
    job_id = queue_training(database, project_id)  # accepted before the restart
    database.engine.dispose()
    with ExitStack() as outage:
        outage.enter_context(database_away(settings, backend))
        with started_app(settings) as client:
            time.sleep(1.5)  # its start-up recovery failed, and is tried again every second
            outage.close()  # the database is back; the app was not restarted
            finished = wait_for_job(client, {"id": job_id}, timeout=60)
    assert finished["status"] == "succeeded", finished


# --- the API process's background threads ---------------------------------------------------


def test_the_webhook_sender_lives_through_faults_and_delivers_after_them(
    live_settings: Settings, backend: str
) -> None:
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers.get("content-length", "0"))))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = live_settings.model_copy(
        update={"webhooks_allow_private": True, "webhooks_poll_seconds": 0.05}
    )
    try:
        with started_app(settings) as client:
            project = make_project(client, {})
            item = ingest(client, {}, project["id"], [{"text": "deliver me"}])["results"][0]
            hook = client.post(
                "/v1/webhooks",
                json={
                    "url": f"http://127.0.0.1:{server.server_address[1]}/ok",
                    "events": ["items.labeled"],
                    "project_id": project["id"],
                },
            )
            assert hook.status_code == 201, hook.text
            engine = client.app.state.database.engine  # type: ignore[attr-defined]
            injector = Injector(engine, backend)
            event.listen(engine, "before_cursor_execute", injector.before_execute)
            try:
                # The sender's claim (its first read) fails five times in a row.
                injector.fail("FROM webhook_delivery JOIN webhook", times=5)
                annotate(client, {}, project["id"], [{"item_id": item["id"], "label": "positive"}])
                deadline = time.monotonic() + 30
                while not received:
                    assert time.monotonic() < deadline, f"nothing delivered ({injector.fired})"
                    time.sleep(0.05)
            finally:
                event.remove(engine, "before_cursor_execute", injector.before_execute)
            assert injector.fired == 5
            assert [t for t in threading.enumerate() if t.name == "webhook-sender"]
    finally:
        server.shutdown()
        server.server_close()
