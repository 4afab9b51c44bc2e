"""PostgreSQL job workers (procrastinate) end to end, with real processes.

`labelwise migrate` adds procrastinate's schema, `labelwise serve` defers jobs and never runs
them, `labelwise worker` runs them, and a worker that starts marks the jobs of a dead worker
failed (retryable). The PostgreSQL tests need LABELWISE_TEST_POSTGRES_URL; each module run
gets its own fresh database.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import Session

from alembic import command
from app.db import Database
from app.jobs.procrastinate_runner import (
    QUEUE,
    TASK_NAME,
    ProcrastinateNeedsPostgres,
    ProcrastinateRunner,
    ensure_procrastinate_schema,
    procrastinate_conninfo,
)
from app.migrations import alembic_config, head_revision
from app.models.base import utcnow
from app.models.job import Job, JobKind, JobStatus
from app.settings import Settings
from tests.conftest import check_response
from tests.databases import POSTGRES_URL, fresh_database

ROOT = Path(__file__).resolve().parents[2]
HOST = socket.gethostname()
JOB_TIMEOUT = 60.0
PROCRASTINATE_TABLES = {
    "procrastinate_jobs",
    "procrastinate_workers",
    "procrastinate_events",
    "procrastinate_periodic_defers",
}

needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="set LABELWISE_TEST_POSTGRES_URL to run the PostgreSQL worker tests"
)


# --- helpers: processes ---------------------------------------------------------------


def cli_env(
    database_url: str, data_dir: Path, *, job_runner: str = "procrastinate"
) -> dict[str, str]:
    env = {
        **os.environ,
        "LABELWISE_DATABASE_URL": database_url,
        "LABELWISE_DATA_DIR": str(data_dir),
        "LABELWISE_JOB_RUNNER": job_runner,
        "LABELWISE_LOG_LEVEL": "INFO",
    }
    env.pop("LABELWISE_BOOTSTRAP_ADMIN_KEY", None)
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for(condition: Any, what: str, timeout: float = JOB_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Process:
    """A `labelwise worker` or `labelwise serve` subprocess writing its log to a file."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> "Process":
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_until_logged(self, text: str, timeout: float = 60) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"{self.args[0]} exited early:\n{self.log()}")
            time.sleep(0.1)
        raise AssertionError(f"{self.args[0]} never logged {text!r}:\n{self.log()}")

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then the exit code (None if it had to be killed)."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is not None:
            return process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_worker(env: dict[str, str], log_path: Path) -> Process:
    worker = Process(["worker"], env, log_path).start()
    worker.wait_until_logged(f"Starting worker on queues {QUEUE}")
    return worker


def start_api(env: dict[str, str], log_path: Path) -> tuple[Process, str]:
    port = free_port()
    api = Process(["serve", "--port", str(port)], env, log_path).start()
    base_url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert api.process is not None
        if api.process.poll() is not None:
            raise AssertionError(f"the API exited:\n{api.log()}")
        try:
            return httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, "the API to be ready", timeout=30)
    return api, base_url


def dead_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# --- the stack: one migrated database, a worker and an API -------------------------------


@dataclass
class Stack:
    database_url: str
    env: dict[str, str]
    tmp: Path
    engine: sa.Engine
    api: Process
    base_url: str
    key: str
    worker: Process | None = None
    _logs: int = field(default=0)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=60,
            event_hooks={"response": [check_response]},
        )

    def start_worker(self) -> Process:
        if self.worker is None:
            self._logs += 1
            self.worker = start_worker(self.env, self.tmp / f"worker-{self._logs}.log")
        return self.worker

    def stop_worker(self) -> int | None:
        worker, self.worker = self.worker, None
        return worker.stop() if worker else None

    def job(self, job_id: int) -> Job:
        with Session(self.engine) as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def add_job(self, **values: Any) -> int:
        with Session(self.engine) as session:
            job = Job(created_by="test", **values)
            session.add(job)
            session.commit()
            assert job.id is not None
            return job.id

    def wait_finished(self, client: httpx.Client, job_id: int) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
            return body if body["status"] in ("succeeded", "failed", "cancelled") else None

        try:
            result: dict[str, Any] = wait_for(finished, f"job {job_id} to finish")
        except AssertionError as error:
            worker_log = self.worker.log() if self.worker else "(no worker running)"
            raise AssertionError(f"{error}\nworker log:\n{worker_log}") from None
        return result


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not POSTGRES_URL:
        pytest.skip("set LABELWISE_TEST_POSTGRES_URL to run the PostgreSQL worker tests")
    tmp = tmp_path_factory.mktemp("procrastinate")
    with fresh_database("postgresql", tmp) as url:
        env = cli_env(url, tmp)
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


def trainable_project(client: httpx.Client, name: str) -> int:
    """A project with 12 human-labelled items, 6 for each of two labels."""
    project = client.post(
        "/v1/projects", json={"name": name, "labels": ["good", "bad"], "phase": "production"}
    )
    assert project.status_code == 201, project.text
    project_id: int = project.json()["id"]
    good, bad = "lovely, great, works well", "broken, awful, crashes"
    texts = [f"{name} review {i}: {good if i % 2 else bad}" for i in range(12)]
    items = client.post(f"/v1/projects/{project_id}/items", json=[{"text": t} for t in texts])
    assert items.status_code == 200 and items.json()["created"] == 12, items.text
    ids = [r["id"] for r in items.json()["results"]]
    annotations = client.post(
        f"/v1/projects/{project_id}/annotations",
        json=[
            {"item_id": item_id, "label": "good" if i % 2 else "bad"}
            for i, item_id in enumerate(ids)
        ],
    )
    assert annotations.status_code == 200 and annotations.json()["created"] == 12, annotations.text
    return project_id


def train(client: httpx.Client, project_id: int, *, activate: bool = False) -> int:
    response = client.post(
        f"/v1/projects/{project_id}/models",
        json={"algorithm": "hashing_sgd", "activate": activate},
    )
    assert response.status_code == 202, response.text
    job_id: int = response.json()["id"]
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    return job_id


# --- tests without PostgreSQL ----------------------------------------------------------


def test_conninfo_from_the_sqlalchemy_url() -> None:
    conninfo = procrastinate_conninfo(
        "postgresql+psycopg://ann:p%40ss@db.internal:6543/labels?sslmode=require"
    )
    assert set(conninfo.split()) == {
        "host=db.internal",
        "port=6543",
        "dbname=labels",
        "user=ann",
        "password=p@ss",
        "sslmode=require",
    }
    with pytest.raises(ProcrastinateNeedsPostgres, match="needs PostgreSQL"):
        procrastinate_conninfo("sqlite:///data/labelwise.db")


def test_worker_and_migrate_refuse_sqlite(tmp_path: Path) -> None:
    env = cli_env(f"sqlite:///{tmp_path}/labelwise.db", tmp_path)
    for args in (["worker"], ["migrate"]):
        result = cli(env, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "needs PostgreSQL" in result.stderr
    assert not (tmp_path / "labelwise.db").exists()  # migrate refused before creating anything


# --- PostgreSQL: migrations -------------------------------------------------------------


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.connect() as connection:
        names = set(sa.inspect(connection).get_table_names())
    engine.dispose()
    return names


@needs_postgres
def test_migrate_adds_procrastinate_schema_only_for_workers_and_once(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        embedded = cli(cli_env(url, tmp_path, job_runner="inprocess"), "migrate")
        assert embedded.returncode == 0, embedded.stderr
        assert not table_names(url) & PROCRASTINATE_TABLES

        first = cli(cli_env(url, tmp_path), "migrate")
        assert first.returncode == 0, first.stderr
        assert "applied procrastinate's schema" in first.stdout
        assert table_names(url) >= PROCRASTINATE_TABLES

        again = cli(cli_env(url, tmp_path), "migrate")
        assert again.returncode == 0, again.stderr
        assert "applied procrastinate's schema" not in again.stdout
        assert ensure_procrastinate_schema(url) is False

        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.connect() as connection:
            revision = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            assert revision.scalar() == head_revision()
        engine.dispose()


@needs_postgres
def test_concurrent_schema_applications_apply_it_once(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        results: list[bool] = []
        errors: list[BaseException] = []

        def apply() -> None:
            try:
                results.append(ensure_procrastinate_schema(url))
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=apply) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert sorted(results) == [False, False, False, True]


@needs_postgres
def test_alembic_check_ignores_procrastinate_tables(stack: Stack) -> None:
    """procrastinate's tables are not Labelwise models: autogenerate must not want to drop them.

    Needs an include_name filter in alembic/env.py (docs/jobs.md).
    """
    command.check(alembic_config(stack.database_url))


@needs_postgres
def test_worker_and_api_refuse_a_database_without_the_queue_schema(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        migrated = cli(cli_env(url, tmp_path, job_runner="inprocess"), "migrate")
        assert migrated.returncode == 0, migrated.stderr
        env = cli_env(url, tmp_path)

        worker = cli(env, "worker")
        assert worker.returncode == 2
        assert "LABELWISE_JOB_RUNNER=procrastinate labelwise migrate" in worker.stderr

        api = Process(["serve", "--port", str(free_port())], env, tmp_path / "api.log").start()
        assert api.process is not None
        api.process.wait(timeout=60)
        assert api.process.returncode != 0
        assert "LABELWISE_JOB_RUNNER=procrastinate labelwise migrate" in api.log()


# --- PostgreSQL: the runner in this process -----------------------------------------------


def procrastinate_jobs(engine: sa.Engine, job_id: int) -> list[tuple[str, str, str]]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT task_name, queue_name, status::text FROM procrastinate_jobs "
            "WHERE (args->>'job_id')::int = %(job_id)s ORDER BY id",
            {"job_id": job_id},
        ).all()
    return [(row[0], row[1], row[2]) for row in rows]


@needs_postgres
def test_runner_defers_each_waiting_job_once_from_many_threads(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        assert cli(cli_env(url, tmp_path), "migrate").returncode == 0
        settings = Settings(database_url=url, data_dir=tmp_path, job_runner="procrastinate")
        database = Database(settings)
        runner = ProcrastinateRunner(database, settings)
        runner.start()
        try:
            threads = [threading.Thread(target=runner.enqueue, args=(41,)) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            runner.enqueue(42)
            assert procrastinate_jobs(database.engine, 41) == [(TASK_NAME, QUEUE, "todo")]
            assert procrastinate_jobs(database.engine, 42) == [(TASK_NAME, QUEUE, "todo")]
        finally:
            runner.stop()
            database.engine.dispose()


# --- PostgreSQL: real processes ---------------------------------------------------------


@needs_postgres
@pytest.mark.e2e
def test_training_runs_in_the_worker_process(stack: Stack) -> None:
    worker = stack.start_worker()
    with stack.client() as client:
        project_id = trainable_project(client, "worker-train")
        job_id = train(client, project_id, activate=True)
        job = stack.wait_finished(client, job_id)
        assert job["status"] == "succeeded", job
        assert job["result"]["version"] == 1 and job["result"]["n_train"] == 12
        # Activation queued a scoring job; the worker deferred it from the job's thread.
        scoring_id = job["result"]["scoring_job_id"]
        assert scoring_id is not None
        scoring = stack.wait_finished(client, scoring_id)
        assert (scoring["kind"], scoring["status"]) == ("score_pool", "succeeded"), scoring
        model = client.get(f"/v1/projects/{project_id}/models/1").json()
        assert model["active"] is True
    # Both ran in the worker process, not in the API.
    assert stack.job(job_id).worker == f"{HOST}:{worker.pid}"
    assert stack.job(scoring_id).worker == f"{HOST}:{worker.pid}"


@needs_postgres
@pytest.mark.e2e
def test_jobs_wait_for_a_worker_and_sigterm_stops_it_cleanly(stack: Stack) -> None:
    with stack.client() as client:
        project_id = trainable_project(client, "no-worker")
        stack.start_worker()
        assert stack.stop_worker() == 0  # SIGTERM: a graceful exit
        with stack.engine.connect() as connection:
            workers = connection.exec_driver_sql("SELECT count(*) FROM procrastinate_workers")
            assert workers.scalar() == 0  # it unregistered itself
        job_id = train(client, project_id)
        time.sleep(3)  # the API never runs jobs itself
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
        worker = stack.start_worker()
        job = stack.wait_finished(client, job_id)
        assert job["status"] == "succeeded", job
    assert stack.job(job_id).worker == f"{HOST}:{worker.pid}"


@needs_postgres
@pytest.mark.e2e
def test_a_starting_worker_fails_interrupted_jobs_and_runs_orphaned_ones(stack: Stack) -> None:
    with stack.client() as client:
        project_id = trainable_project(client, "crash")
        params = {"algorithm": "hashing_sgd", "params": {}, "activate": False}
        stack.stop_worker()
        now = utcnow()
        running = {
            "project_id": project_id,
            "kind": JobKind.train_model,
            "status": JobStatus.running,
            "params": params,
            "started_at": now,
        }
        # Its worker process has exited (a crash), though its last heartbeat is recent.
        crashed = stack.add_job(**running, worker=f"{HOST}:{dead_pid()}", heartbeat_at=now)
        # On another host, silent for ten minutes.
        silent = stack.add_job(
            **running, worker="elsewhere:1", heartbeat_at=now - timedelta(minutes=10)
        )
        # Alive (this test process) and beating: must be left alone.
        alive = stack.add_job(**running, worker=f"{HOST}:{os.getpid()}", heartbeat_at=now)
        # Committed but never deferred (the API stopped in between): must still run.
        orphan = stack.add_job(
            project_id=project_id, kind=JobKind.train_model, status=JobStatus.queued, params=params
        )

        stack.start_worker()
        for job_id in (crashed, silent):
            job = stack.wait_finished(client, job_id)
            assert job["status"] == "failed" and job["retryable"] is True, job
            assert job["error"]["type"] == "/problems/job-interrupted", job
            assert f"/v1/jobs/{job_id}/retry" in job["error"]["detail"]
        assert stack.wait_finished(client, orphan)["status"] == "succeeded"
        assert client.get(f"/v1/jobs/{alive}").json()["status"] == "running"

        retried = client.post(f"/v1/jobs/{crashed}/retry")
        assert retried.status_code == 202, retried.text
        retry = stack.wait_finished(client, retried.json()["id"])
        assert (retry["status"], retry["retry_of"]) == ("succeeded", crashed), retry
