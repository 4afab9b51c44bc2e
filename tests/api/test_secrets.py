"""Secrets never leak: API keys (outside their one-time creation answer) and the URLs and
passwords of configured SQL connections appear in no response body or header, no job and no
log line, including on the error paths (refused keys, broken or unreachable connections,
failing queries).

The app runs on a committed database of its own, so its import jobs are run here, in this
process, and their log lines are captured with everything else.
"""

import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx2  # what TestClient answers with (starlette prefers the fork; openai installs it)
import pytest
from fastapi.testclient import TestClient

from app.jobs.execute import run_job
from app.jobs.kinds import JOB_FUNCTIONS
from app.logs import JsonFormatter
from app.migrations import upgrade
from app.models.api_key import ApiKeyCreate
from app.models.base import Role
from app.services.api_keys import create_api_key
from app.settings import Settings
from tests.conftest import RecordingRunner, build_test_app, check_response
from tests.databases import fresh_database

PASSWORD = "Pa55-w0rd-LEAK"
UNREACHABLE = f"postgresql+psycopg://leaky-user:{PASSWORD}@127.0.0.1:1/salesdb"
MISCONFIGURED = f"mysql+pymysql://leaky-user:{PASSWORD}@db.internal.example/salesdb"
LLM_KEY = "sk-llm-" + "k" * 40


class LineCollector(logging.Handler):
    """Every record of the app's loggers, formatted as the JSON line it would print."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class Leaky:
    client: TestClient
    settings: Settings
    runner: RecordingRunner
    admin: dict[str, str]
    secrets: list[str]
    sqlite_source: str
    responses: list[httpx2.Response] = field(default_factory=list)

    def run_jobs(self) -> None:
        database = self.client.app.state.database  # type: ignore[attr-defined]
        while self.runner.enqueued:
            job_id = self.runner.enqueued.pop(0)
            run_job(
                database, self.settings, job_id, functions=JOB_FUNCTIONS, enqueue=lambda _: None
            )


@pytest.fixture(scope="module")
def leaky(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Leaky]:
    tmp = tmp_path_factory.mktemp(f"secrets-{backend}")
    source_file = tmp / "crm-private.db"
    with sqlite3.connect(source_file) as connection:
        connection.execute("CREATE TABLE tickets (id INTEGER PRIMARY KEY, body TEXT)")
        connection.execute("INSERT INTO tickets VALUES (1, 'hello')")
    sqlite_source = f"sqlite:///{source_file.as_posix()}"
    with fresh_database(backend, tmp) as url:
        upgrade(url)
        settings = Settings(
            database_url=url,
            data_dir=tmp,
            sql_sources={
                "dwh": UNREACHABLE,
                "legacy": MISCONFIGURED,
                "crm": sqlite_source,
                "gone": f"sqlite:///{(tmp / 'no-such-dir' / 'x.db').as_posix()}",
            },
            llm_api_key=LLM_KEY,
        )
        app = build_test_app(settings)  # no override: every request commits for real
        runner: RecordingRunner = app.state.runner
        with app.state.database.session(write=True) as session:
            _, admin_secret = create_api_key(
                session, data=ApiKeyCreate(name="root", role=Role.admin)
            )
        client = TestClient(app, raise_server_exceptions=False)
        secrets = [admin_secret, UNREACHABLE, MISCONFIGURED, PASSWORD, LLM_KEY]
        secrets += [sqlite_source, str(source_file), "leaky-user", "db.internal.example"]
        leaky = Leaky(
            client,
            settings,
            runner,
            {"Authorization": f"Bearer {admin_secret}"},
            secrets,
            sqlite_source,
        )
        client.event_hooks["response"] = [check_response, leaky.responses.append]
        yield leaky
        app.state.database.engine.dispose()


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    collector = LineCollector()
    root = logging.getLogger("labelwise")
    level = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    yield collector.lines
    root.setLevel(level)
    root.removeHandler(collector)


def exposed(response: httpx2.Response) -> str:
    return response.text + json.dumps(dict(response.headers))


def test_no_key_or_connection_url_leaks_into_responses_jobs_or_logs(
    leaky: Leaky, log_lines: list[str]
) -> None:
    client, admin = leaky.client, leaky.admin
    # Keys: created once (the only answer that shows a secret), then used, misused, revoked.
    created = {}
    for role in ("service", "annotator", "admin"):
        response = client.post(
            "/v1/api-keys", json={"name": f"leak-{role}", "role": role}, headers=admin
        )
        assert response.status_code == 201, response.text
        created[role] = response.json()
    secrets = [*leaky.secrets, *(key["key"] for key in created.values())]
    leaky.responses.clear()
    service = {"Authorization": f"Bearer {created['service']['key']}"}
    annotator = {"Authorization": f"Bearer {created['annotator']['key']}"}
    revoked = {"Authorization": f"Bearer {created['admin']['key']}"}
    assert client.delete(f"/v1/api-keys/{created['admin']['id']}", headers=admin).status_code == 204
    assert client.get("/v1/api-keys", headers=admin).status_code == 200
    assert client.get("/v1/projects", headers=revoked).status_code == 401
    assert client.get("/v1/api-keys", headers=service).status_code == 403
    assert client.get("/v1/api-keys", headers=annotator).status_code == 403
    forged = "lw_" + created["service"]["key"][3:][::-1]
    secrets.append(forged)
    assert (
        client.get("/v1/projects", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    )
    # Connection URLs: broken at request time, missing, failing in the job.
    project = client.post(
        "/v1/projects", json={"name": "leaks", "labels": ["a", "b"]}, headers=service
    ).json()
    imports = f"/v1/projects/{project['id']}/imports"

    def sql(connection: str, query: str = "SELECT id, body FROM tickets") -> httpx2.Response:
        body = {
            "kind": "sql",
            "connection": connection,
            "query": query,
            "mapping": {"text": "body"},
        }
        return client.post(imports, json=body, headers=service)

    assert sql("legacy").status_code == 503
    assert sql("nope").status_code == 404
    queued = [sql("dwh"), sql("gone"), sql("crm", "SELECT nothing FROM nowhere")]
    assert [r.status_code for r in queued] == [202, 202, 202]
    assert sql("crm").status_code == 202  # a working one, for contrast
    leaky.run_jobs()
    jobs = [client.get(f"/v1/jobs/{r.json()['id']}", headers=service).json() for r in queued]
    assert [job["status"] for job in jobs] == ["failed", "failed", "failed"], jobs
    assert "'dwh'" in jobs[0]["error"]["detail"]  # the problem names the connection, not its URL
    assert client.get("/v1/jobs", params={"limit": 1000}, headers=service).status_code == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200

    assert len(leaky.responses) > 15
    for response in leaky.responses:
        for secret in secrets:
            assert secret not in exposed(response), (response.request.url, secret)
    assert log_lines, "no log line was captured"
    for line in log_lines:
        for secret in secrets:
            assert secret not in line, (line, secret)
