"""Database faults inside a request: classified, retried while nothing has committed, and
answered as 503/507 problems otherwise (app/db_faults.py, app/api/routing.py).

The faults are real driver errors raised where the driver raises them: on PostgreSQL the
request's own backend is terminated (`pg_terminate_backend`), on SQLite the driver's own
error is raised from the statement. The many-annotator versions, a real PostgreSQL restart,
a held SQLite lock and a full disk are tests/e2e/test_db_faults.py.
"""

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.api.routing import MAX_ATTEMPTS, backoff_seconds
from app.db import WRITE_OPTION
from app.db_faults import DatabaseFault, classify
from tests.factories import unique

PROBLEM = "application/problem+json"


def wrapped(original: Exception) -> OperationalError:
    return OperationalError("SELECT 1", None, original)


def postgres_error(state: str) -> Exception:
    error = psycopg.errors.lookup(state)("injected")
    return error


class TestClassify:
    @pytest.mark.parametrize(
        ("error", "fault"),
        [
            (sqlite3.OperationalError("database is locked"), DatabaseFault.lock_timeout),
            (sqlite3.OperationalError("database or disk is full"), DatabaseFault.disk_full),
            (
                sqlite3.OperationalError("attempt to write a readonly database"),
                DatabaseFault.read_only,
            ),
            (sqlite3.OperationalError("disk I/O error"), DatabaseFault.io_error),
            (
                sqlite3.OperationalError("unable to open database file"),
                DatabaseFault.cannot_connect,
            ),
            (postgres_error("57P01"), DatabaseFault.shutting_down),
            (postgres_error("57P03"), DatabaseFault.cannot_connect),
            (postgres_error("40001"), DatabaseFault.serialization_failure),
            (postgres_error("40P01"), DatabaseFault.deadlock),
            (postgres_error("55P03"), DatabaseFault.lock_timeout),
            (postgres_error("25006"), DatabaseFault.read_only),
            (postgres_error("53100"), DatabaseFault.disk_full),
            (postgres_error("08006"), DatabaseFault.connection_lost),
            (
                psycopg.OperationalError("server closed the connection"),
                DatabaseFault.connection_lost,
            ),
            (
                psycopg.OperationalError(
                    'connection failed: connection to server at "127.0.0.1", port 5999 failed: '
                    "Connection refused"
                ),
                DatabaseFault.cannot_connect,
            ),
        ],
    )
    def test_driver_errors(self, error: Exception, fault: DatabaseFault) -> None:
        assert classify(wrapped(error)) == fault

    @pytest.mark.parametrize(
        "error",
        [
            wrapped(sqlite3.OperationalError("no such table: item")),
            wrapped(postgres_error("42P01")),  # undefined_table: a bug, not a fault
            wrapped(postgres_error("23505")),  # unique_violation
            ValueError("not a database error"),
        ],
    )
    def test_bugs_and_refusals_are_not_faults(self, error: Exception) -> None:
        assert classify(error) is None

    def test_pool_timeout(self) -> None:
        assert classify(PoolTimeout("QueuePool limit reached")) == DatabaseFault.pool_exhausted

    def test_a_real_sqlite_lock_timeout(self, tmp_path: Any) -> None:
        engine = create_engine(f"sqlite:///{tmp_path / 'locked.db'}")
        holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
        holder.execute("CREATE TABLE t (x INTEGER)")
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(OperationalError) as caught, engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA busy_timeout = 10")
                connection.exec_driver_sql("INSERT INTO t VALUES (1)")
            assert classify(caught.value) == DatabaseFault.lock_timeout
        finally:
            holder.close()
            engine.dispose()


def test_backoff_grows_with_jitter() -> None:
    import random

    rng = random.Random(1)
    first = [backoff_seconds(1, rng) for _ in range(50)]
    second = [backoff_seconds(2, rng) for _ in range(50)]
    assert min(first) >= 0.025 and max(first) <= 0.075
    assert min(second) >= 0.1 and max(second) <= 0.3
    assert len(set(first)) > 1


class Injector:
    """Fails chosen statements of the app's engine with a real driver error."""

    def __init__(self, engine: Engine, backend: str) -> None:
        self.engine = engine
        self.backend = backend
        self.remaining = 0
        self.fired = 0
        self.pattern = ""

    def fail(self, pattern: str, times: int) -> None:
        self.pattern, self.remaining = pattern, times

    def before_execute(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if self.remaining <= 0 or self.pattern not in statement:
            return
        self.remaining -= 1
        self.fired += 1
        if self.backend == "postgresql":
            pid = conn.connection.dbapi_connection.info.backend_pid
            killer = psycopg.connect(
                conn.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                autocommit=True,
            )
            with killer:
                killer.execute("SELECT pg_terminate_backend(%s)", [pid])
            return  # the statement now meets the terminated backend: AdminShutdown
        raise sqlite3.OperationalError("unable to open database file")

    def before_commit(self, conn: Any) -> None:
        """A write transaction's commit fails in the driver: on PostgreSQL its backend is
        terminated just before COMMIT; on SQLite the driver's commit raises."""
        if self.remaining <= 0 or self.pattern != "COMMIT":
            return
        if not conn.get_execution_options().get(WRITE_OPTION, False):
            return  # a SQLite write request's dependencies commit a read of their own
        self.remaining -= 1
        self.fired += 1
        dbapi_connection = conn.connection.dbapi_connection
        if self.backend == "postgresql":
            self.terminate(dbapi_connection.info.backend_pid)
            return

        def failing_commit() -> None:
            del dbapi_connection.commit_in_driver  # once
            raise sqlite3.OperationalError("disk I/O error")

        dbapi_connection.commit_in_driver = failing_commit

    def terminate(self, pid: int) -> None:
        url = self.engine.url.set(drivername="postgresql")
        with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", [pid])


@contextmanager
def injected(client: TestClient, backend: str) -> Iterator[Injector]:
    engine: Engine = client.app.state.database.engine  # type: ignore[attr-defined]
    injector = Injector(engine, backend)
    event.listen(engine, "before_cursor_execute", injector.before_execute)
    event.listen(engine, "commit", injector.before_commit)
    try:
        yield injector
    finally:
        event.remove(engine, "before_cursor_execute", injector.before_execute)
        event.remove(engine, "commit", injector.before_commit)


@pytest.fixture
def labeled_item(live_client: TestClient) -> Callable[[], tuple[str, int]]:
    """A new production project with one item: (the project's path, the item id)."""

    def make() -> tuple[str, int]:
        project = live_client.post(
            "/v1/projects",
            json={"name": unique("faults"), "labels": ["a", "b"], "phase": "production"},
        ).json()
        base = f"/v1/projects/{project['id']}"
        items = live_client.post(f"{base}/items", json=[{"text": unique("fault item")}]).json()
        return base, items["results"][0]["id"]

    return make


def stored_answers(client: TestClient, base: str, item_id: int) -> int:
    page = client.get(f"{base}/annotations", params={"item_id": item_id}).json()
    return len(page["items"])


def test_a_fault_before_commit_is_retried_invisibly(
    live_client: TestClient, backend: str, labeled_item: Callable[[], tuple[str, int]]
) -> None:
    base, item_id = labeled_item()
    with injected(live_client, backend) as injector:
        injector.fail("INSERT INTO annotation", times=1)
        response = live_client.post(
            f"{base}/annotations", json=[{"item_id": item_id, "label": "a"}]
        )
    assert injector.fired == 1
    assert response.status_code == 200, response.text
    assert stored_answers(live_client, base, item_id) == 1


def test_a_fault_that_outlasts_the_retries_is_a_503_and_changes_nothing(
    live_client: TestClient, backend: str, labeled_item: Callable[[], tuple[str, int]]
) -> None:
    base, item_id = labeled_item()
    with injected(live_client, backend) as injector:
        injector.fail("INSERT INTO annotation", times=MAX_ATTEMPTS)
        response = live_client.post(
            f"{base}/annotations", json=[{"item_id": item_id, "label": "a"}]
        )
    assert injector.fired == MAX_ATTEMPTS
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["retry-after"] == "2"
    problem = response.json()
    assert problem["type"] == "/problems/database-unavailable"
    assert problem["context"]["fault"] in {"shutting_down", "cannot_connect"}
    assert "nothing of this request was stored" in problem["detail"]
    assert stored_answers(live_client, base, item_id) == 0
    # and the service heals: the same request now succeeds
    again = live_client.post(f"{base}/annotations", json=[{"item_id": item_id, "label": "a"}])
    assert again.status_code == 200
    assert stored_answers(live_client, base, item_id) == 1


def test_a_fault_while_committing_is_not_retried(
    live_client: TestClient, backend: str, labeled_item: Callable[[], tuple[str, int]]
) -> None:
    base, item_id = labeled_item()
    with injected(live_client, backend) as injector:
        injector.fail("COMMIT", times=1)
        response = live_client.post(
            f"{base}/annotations", json=[{"item_id": item_id, "label": "a"}]
        )
    assert injector.fired == 1  # one attempt only: its commit had begun
    assert response.status_code == 503
    problem = response.json()
    assert problem["type"] == "/problems/database-unavailable"
    assert "unknown" in problem["detail"]
    # The injected failure came before the driver's commit, so nothing was stored: an
    # identical answer is then safe to send again, as docs/hardening.md says.
    again = live_client.post(f"{base}/annotations", json=[{"item_id": item_id, "label": "a"}])
    assert again.status_code == 200, again.text
    assert stored_answers(live_client, base, item_id) == 1


def test_reads_are_retried_too(
    live_client: TestClient, backend: str, labeled_item: Callable[[], tuple[str, int]]
) -> None:
    base, _ = labeled_item()
    with injected(live_client, backend) as injector:
        injector.fail("FROM item", times=1)
        response = live_client.get(f"{base}/items")
    assert injector.fired == 1
    assert response.status_code == 200
    assert len(response.json()["items"]) == 1


def test_readiness_is_503_while_the_database_fails(live_client: TestClient, backend: str) -> None:
    with injected(live_client, backend) as injector:
        injector.fail("alembic_version", times=MAX_ATTEMPTS)
        response = live_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["type"] == "/problems/database-unavailable"
    assert live_client.get("/readyz").status_code == 200


def test_the_spec_declares_database_problems() -> None:
    import json
    from pathlib import Path

    spec = json.loads((Path(__file__).parents[2] / "openapi" / "openapi.json").read_text())
    answer = spec["paths"]["/v1/projects/{project_id}/annotations"]["post"]["responses"]
    assert set(answer["503"]["content"][PROBLEM]["examples"]) >= {
        "database-unavailable",
        "database-busy",
    }
    assert "database-full" in answer["507"]["content"][PROBLEM]["examples"]
    listing = spec["paths"]["/v1/projects/{project_id}/items"]["get"]["responses"]
    assert "507" not in listing
    assert "503" not in spec["paths"]["/healthz"]["get"]["responses"]


def test_a_select_still_works_after_the_faults(live_client: TestClient) -> None:
    engine: Engine = live_client.app.state.database.engine  # type: ignore[attr-defined]
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1
