"""`labelwise worker` and the procrastinate runner under database faults, with real processes
and a real PostgreSQL: every backend of the database terminated, and an outage (the database
refuses connections, `ALLOW_CONNECTIONS false`, and its backends are terminated).

- the worker keeps running and keeps taking jobs (its queue loop is started again after a
  fault: procrastinate stops it when its heartbeat fails);
- the API answers 202 when deferring a committed job fails, and the job still runs: workers
  re-defer queued jobs that have no queue entry (app/jobs/procrastinate_runner.py).
"""

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine import make_url

from app.main import create_app
from app.models.job import JobKind, JobStatus
from app.settings import Settings
from tests.conftest import check_response
from tests.databases import POSTGRES_URL, fresh_database
from tests.jobs.test_job_faults import Recorded, postgres_outage
from tests.jobs.test_procrastinate import (
    HOST,
    Stack,
    cli,
    cli_env,
    procrastinate_jobs,
    start_api,
    train,
    trainable_project,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not POSTGRES_URL, reason="set LABELWISE_TEST_POSTGRES_URL to run the worker fault tests"
    ),
]

# The worker re-defers unqueued jobs this often (and the runners give a claim this long).
FAULT_RETRY_SECONDS = 2
OUTAGE_SECONDS = 35


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not POSTGRES_URL:
        pytest.skip("set LABELWISE_TEST_POSTGRES_URL to run the worker fault tests")
    tmp = tmp_path_factory.mktemp("worker-faults")
    with fresh_database("postgresql", tmp) as url:
        env = cli_env(url, tmp) | {"LABELWISE_JOB_FAULT_RETRY_SECONDS": str(FAULT_RETRY_SECONDS)}
        migrated = cli(env, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        created = cli(env, "create-api-key", "--name", "admin", "--role", "admin")
        assert created.returncode == 0, created.stderr
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        api, base_url = start_api(env, tmp / "api.log")
        stack = Stack(url, env, tmp, engine, api, base_url, created.stdout.strip())
        try:
            stack.start_worker()
            yield stack
        finally:
            stack.stop_worker()
            api.stop()
            engine.dispose()


def terminate_every_backend(database_url: str) -> int:
    name = make_url(database_url).database
    admin = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_worker_keeps_taking_jobs_after_its_connections_die_and_an_outage(
    stack: Stack,
) -> None:
    worker = stack.start_worker()
    with stack.client() as client:
        project_id = trainable_project(client, "terminated")
        # The API's engine and defer pool, the worker's pool and its LISTEN connection.
        assert terminate_every_backend(stack.database_url) >= 3
        first = train(client, project_id)  # the API heals at once (pre-ping, pool check)
        assert stack.wait_finished(client, first)["status"] == "succeeded"

        # Longer than procrastinate waits for a pool connection (30 s) for its heartbeat: it
        # stops its queue loop, and the worker starts it again.
        with postgres_outage(stack.database_url):
            time.sleep(OUTAGE_SECONDS)
        deadline = time.monotonic() + 60
        while "starting it again" not in worker.log():
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.2)
        second = train(client, project_id)
        assert stack.wait_finished(client, second)["status"] == "succeeded"
    assert worker.process is not None and worker.process.poll() is None, worker.log()
    assert stack.job(first).worker == stack.job(second).worker == f"{HOST}:{worker.pid}"


def test_a_queued_job_without_a_queue_entry_is_deferred_again(stack: Stack) -> None:
    """A defer that failed, or a claim that met a database that stayed away: the job row is
    queued and no procrastinate job waits for it. A running worker defers it again."""
    stack.start_worker()
    with stack.client() as client:
        project_id = trainable_project(client, "orphan")
        params = {"algorithm": "hashing_sgd", "params": {}, "activate": False}
        orphan = stack.add_job(
            project_id=project_id, kind=JobKind.train_model, status=JobStatus.queued, params=params
        )
        assert procrastinate_jobs(stack.engine, orphan) == []
        job = stack.wait_finished(client, orphan)
    assert job["status"] == "succeeded", job


class OutageAtCommit:
    """Starts an outage of the database just before the commit of a transaction that
    inserted a job, sparing only that transaction's backend: the job row commits, and what
    comes next (deferring it) meets a database that refuses connections."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.exits = ExitStack()
        self.armed = False
        self.fired = 0

    def before_execute(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if self.armed and statement.startswith("INSERT INTO job "):
            conn.info["inserted_job"] = True

    def before_commit(self, conn: Any) -> None:
        if not (self.armed and conn.info.pop("inserted_job", False)):
            return
        self.armed = False
        self.fired += 1
        pid = conn.connection.dbapi_connection.info.backend_pid
        self.exits.enter_context(postgres_outage(self.database_url, spare_pid=pid))


def test_a_defer_that_meets_an_outage_answers_202_and_the_job_still_runs(
    stack: Stack, tmp_path: Path
) -> None:
    stack.start_worker()
    settings = Settings(
        database_url=stack.database_url, data_dir=tmp_path, job_runner="procrastinate"
    )
    app = create_app(settings)
    with (
        Recorded("labelwise.jobs") as logged,
        TestClient(app, raise_server_exceptions=False) as client,
    ):
        client.headers["Authorization"] = f"Bearer {stack.key}"
        client.event_hooks["response"] = [check_response]  # never a 500
        with stack.client() as api:
            project_id = trainable_project(api, "outage-at-defer")
        engine = app.state.database.engine
        outage = OutageAtCommit(stack.database_url)
        event.listen(engine, "before_cursor_execute", outage.before_execute)
        event.listen(engine, "commit", outage.before_commit)
        try:
            outage.armed = True
            started = time.monotonic()
            response = client.post(
                f"/v1/projects/{project_id}/models", json={"algorithm": "hashing_sgd"}
            )
            elapsed = time.monotonic() - started
        finally:
            outage.exits.close()  # the database accepts connections again
            event.remove(engine, "before_cursor_execute", outage.before_execute)
            event.remove(engine, "commit", outage.before_commit)
        assert outage.fired == 1
        assert response.status_code == 202, response.text
        assert elapsed < 15  # the defer gave up after its pool's wait, not minutes
        job_id = response.json()["id"]
        assert f"job {job_id}: deferring it failed" in logged.text()  # the defer was lost
        with stack.client() as api:
            job = stack.wait_finished(api, job_id)  # a worker deferred it again
            assert job["status"] == "succeeded", job

            # The runner's pool healed: the next defer goes through.
            again = client.post(
                f"/v1/projects/{project_id}/models", json={"algorithm": "hashing_sgd"}
            )
            assert again.status_code == 202
            assert stack.wait_finished(api, again.json()["id"])["status"] == "succeeded"
        assert f"job {again.json()['id']}: deferring it failed" not in logged.text()
