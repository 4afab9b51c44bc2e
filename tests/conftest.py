"""Fixtures: each test runs on SQLite and, when LABELWISE_TEST_POSTGRES_URL is set, PostgreSQL.

The schema is built by migrating. Every test runs inside a transaction that is rolled
back afterwards; the app's session joins it through savepoints, so the services' own
commits work as usual and nothing leaks between tests.
"""

import gzip
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine
from sqlmodel import Session

from app.db import Database, build_engine
from app.deps import get_session
from app.errors import PROBLEM_PREFIX, InternalError, declared_problems
from app.main import create_app
from app.migrations import upgrade
from app.settings import Settings
from tests.databases import BACKENDS, POSTGRES_URL, fresh_database

PROBLEM_JSON = "application/problem+json"


ACTIVE_BACKENDS = [b for b in BACKENDS if b == "sqlite" or POSTGRES_URL]


def pytest_report_header() -> str:
    if POSTGRES_URL:
        return "databases: sqlite, postgresql (LABELWISE_TEST_POSTGRES_URL)"
    return "databases: sqlite only (set LABELWISE_TEST_POSTGRES_URL to add the PostgreSQL leg)"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", ACTIVE_BACKENDS, scope="session")


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fresh_database(backend, tmp_path_factory.mktemp(backend)) as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    engine = build_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    connection = engine.connect()
    transaction = connection.begin()
    yield connection
    transaction.rollback()
    connection.close()


@pytest.fixture
def session(connection: Connection) -> Iterator[Session]:
    with Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    ) as s:
        yield s


def check_response(response: httpx.Response) -> None:
    """Every error is problem+json, and no request ever ends in a 500."""
    response.read()
    assert response.status_code != 500, response.text
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", "")
        assert content_type.startswith(PROBLEM_JSON), (
            response.status_code,
            content_type,
            response.text,
        )
        body = response.json()
        assert {"type", "title", "status", "detail"} <= body.keys(), body
        assert body["status"] == response.status_code


class RecordingRunner:
    """The job runner of savepoint-session apps: it records what was enqueued.

    A real runner's thread could not see a test's uncommitted transaction, so tests that
    run jobs use `live_client` (a committed database and the app's real lifespan) instead.
    """

    def __init__(self) -> None:
        self.enqueued: list[int] = []

    def enqueue(self, job_id: int) -> None:
        self.enqueued.append(job_id)

    def start(self) -> None: ...

    def stop(self) -> None: ...


# Problems answered by an operation whose responses in the spec do not declare their type.
UNDECLARED_PROBLEMS: list[str] = []


def undeclared_problem(app: FastAPI, request: Request, response: Response) -> str | None:
    """Why this problem answer breaks the contract: its type is not among those its operation
    declares for its status (problem_responses on the route, or added for all in
    build_openapi); None when it is declared, or when no operation answered."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or request.method not in (route.methods or ()):
        return None  # no route (404), or another method's route (405)
    operation = app.openapi()["paths"].get(route.path_format, {}).get(request.method.lower())
    if operation is None or not response.headers.get("content-type", "").startswith(PROBLEM_JSON):
        return None
    slug = json.loads(bytes(response.body))["type"].removeprefix(PROBLEM_PREFIX)
    declared = declared_problems(operation["responses"].get(str(response.status_code), {}))
    if slug in {kind.slug for kind in declared}:
        return None
    return (
        f"{request.method} {route.path_format} answered {response.status_code} "
        f"{PROBLEM_PREFIX}{slug}, which its responses do not declare: add the type to the "
        "route's problem_responses(...)"
    )


def check_declared_problems(app: FastAPI) -> FastAPI:
    """Wrap the app's problem handlers: an answer whose problem type the operation does not
    declare becomes a 500 naming it (and is recorded), so the test that caused it fails."""

    def checked(handler: Any) -> Any:
        async def check(request: Request, exc: Exception) -> Response:
            response: Response = await handler(request, exc)
            failure = undeclared_problem(app, request, response)
            if failure is None:
                return response
            UNDECLARED_PROBLEMS.append(failure)
            body = InternalError.problem(failure).model_dump_json(exclude_none=True)
            return Response(body, status_code=500, media_type=PROBLEM_JSON)

        return check

    for key, handler in list(app.exception_handlers.items()):
        if key not in (Exception, 500):  # a 500 is a bug wherever it happens
            app.exception_handlers[key] = checked(handler)
    return app


@pytest.fixture(autouse=True)
def no_undeclared_problems() -> Iterator[None]:
    """Every test checks the problem types it meets against the spec."""
    UNDECLARED_PROBLEMS.clear()
    yield
    assert not UNDECLARED_PROBLEMS, "\n".join(UNDECLARED_PROBLEMS)


def build_test_app(settings: Settings) -> FastAPI:
    """The app without its lifespan: the database is the test's own transaction."""
    app = check_declared_problems(create_app(settings))
    app.state.database = Database(settings)
    app.state.runner = RecordingRunner()
    return app


def client_for(app: FastAPI, session: Session) -> TestClient:
    def shared_session() -> Iterator[Session]:
        yield session

    app.dependency_overrides[get_session] = shared_session
    client = TestClient(app, raise_server_exceptions=False)
    client.event_hooks["response"] = [check_response]
    return client


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[FastAPI]:
    app = build_test_app(settings)
    yield app
    app.state.database.engine.dispose()


@pytest.fixture
def client(app: FastAPI, session: Session) -> Iterator[TestClient]:
    yield client_for(app, session)
    app.dependency_overrides.clear()


ClientFactory = Callable[..., TestClient]


@pytest.fixture
def client_with(settings: Settings, session: Session) -> Iterator[ClientFactory]:
    """A client for an app whose settings differ from the suite's (limits, database)."""
    apps: list[FastAPI] = []

    def make(**overrides: Any) -> TestClient:
        app = build_test_app(settings.model_copy(update=overrides))
        apps.append(app)
        return client_for(app, session)

    yield make
    for app in apps:
        app.state.database.engine.dispose()


@pytest.fixture(scope="session")
def debian_path() -> Path:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "debian-dev.jsonl.gz"
    if not path.exists():
        pytest.skip(f"the shared Debian dataset is absent ({path})")
    return path


@pytest.fixture(scope="session")
def debian_rows_in_file_order(debian_path: Path) -> list[dict[str, Any]]:
    """The shared Debian rows (id, text, label, tags), read once; shuffle a copy."""
    with gzip.open(debian_path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


ADMIN_SECRET = "lw_" + "a" * 43


@pytest.fixture(scope="module")
def live_settings(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A committed, migrated database of its own for a test module whose jobs really run."""
    tmp = tmp_path_factory.mktemp(f"live-{backend}")
    with fresh_database(backend, tmp) as url:
        upgrade(url)
        yield Settings(
            database_url=url,
            data_dir=tmp,
            bootstrap_admin_key=ADMIN_SECRET,
            retrain_check_seconds=0.05,
        )


@contextmanager
def started_app(settings: Settings) -> Iterator[TestClient]:
    """An admin client of the app with its real lifespan (a start-up, the job runner)."""
    app = check_declared_problems(create_app(settings))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_SECRET}"
        client.event_hooks["response"] = [check_response]
        yield client


@pytest.fixture(scope="module")
def live_client(live_settings: Settings) -> Iterator[TestClient]:
    """The app with its real lifespan (in-process job runner) on a committed database."""
    with started_app(live_settings) as client:
        yield client


def wait_until_running(client: TestClient, job: dict[str, Any]) -> dict[str, Any]:
    """Poll a job until it has left the queue; return its state."""
    deadline = time.monotonic() + 60
    while (current := client.get(f"/v1/jobs/{job['id']}").json())["status"] == "queued":
        assert time.monotonic() < deadline, f"job {job['id']} never started"
        time.sleep(0.01)
    return cast(dict[str, Any], current)


def wait_for_job(client: TestClient, job: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """Poll a job until it finishes; return its final state."""
    deadline = time.monotonic() + timeout
    while True:
        current: dict[str, Any] = client.get(f"/v1/jobs/{job['id']}").json()
        if current["status"] in ("succeeded", "failed", "cancelled"):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job['id']} still {current['status']} after {timeout}s")
        time.sleep(float(os.environ.get("POLL", "0.05")))
