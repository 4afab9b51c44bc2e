"""The scaled-out topology of compose.yaml without containers: one PostgreSQL database,
`labelwise migrate` once, two `labelwise serve` processes on two ports and one
`labelwise worker`, all with LABELWISE_JOB_RUNNER=procrastinate. A job asked of one API is run
by the worker and seen from the other API."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import Session

from app.models.job import Job
from tests.conftest import check_response
from tests.databases import POSTGRES_URL, fresh_database
from tests.jobs.test_procrastinate import (
    HOST,
    Process,
    cli,
    cli_env,
    free_port,
    start_worker,
    train,
    trainable_project,
    wait_for,
)

ADMIN_KEY = "lw_scaled_out_admin_key_for_tests_only_0123"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not POSTGRES_URL,
        reason="set LABELWISE_TEST_POSTGRES_URL to run the scaled-out topology (PostgreSQL only)",
    ),
]


def client(base_url: str) -> httpx.Client:
    return httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=60,
        event_hooks={"response": [check_response]},
    )


def ready(api: Process, base_url: str) -> bool:
    assert api.process is not None
    if api.process.poll() is not None:
        raise AssertionError(f"the API exited:\n{api.log()}")
    try:
        return httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("scaled-out")
    with fresh_database("postgresql", tmp) as url:
        env = cli_env(url, tmp)  # LABELWISE_JOB_RUNNER=procrastinate, as in compose.yaml
        migrated = cli(env, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        # Both APIs get the same bootstrap key and start together, as compose starts them.
        api_env = {**env, "LABELWISE_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY}
        ports = [free_port(), free_port()]
        apis = [
            Process(["serve", "--port", str(port)], api_env, tmp / f"api-{i}.log").start()
            for i, port in enumerate(ports, start=1)
        ]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        worker = None
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        try:
            for api, base_url in zip(apis, urls, strict=True):
                wait_for(lambda: ready(api, base_url), f"{base_url} to be ready", timeout=60)  # noqa: B023
            worker = start_worker(env, tmp / "worker.log")
            yield {"urls": urls, "worker": worker, "engine": engine}
        finally:
            if worker is not None:
                worker.stop()
            for api in apis:
                api.stop()
            engine.dispose()


def test_a_job_asked_of_one_api_runs_in_the_worker_and_shows_on_the_other(
    topology: dict[str, Any],
) -> None:
    first, second = topology["urls"]
    worker: Process = topology["worker"]
    with client(first) as api_1, client(second) as api_2:
        assert api_1.get("/v1/me").json()["role"] == "admin"
        assert api_2.get("/v1/me").json()["role"] == "admin"
        project_id = trainable_project(api_1, "scaled-out")
        job_id = train(api_2, project_id, activate=True)

        def finished(job_id: int) -> dict[str, Any] | None:
            body: dict[str, Any] = api_1.get(f"/v1/jobs/{job_id}").json()
            return body if body["status"] in ("succeeded", "failed", "cancelled") else None

        job = wait_for(lambda: finished(job_id), f"job {job_id}")
        assert job["status"] == "succeeded", (job, worker.log())
        scoring = wait_for(lambda: finished(job["result"]["scoring_job_id"]), "the scoring job")
        assert scoring["status"] == "succeeded", scoring
        assert api_2.get(f"/v1/projects/{project_id}/models/1").json()["active"] is True
    with Session(topology["engine"]) as session:
        ran_by = {session.get_one(Job, i).worker for i in (job_id, scoring["id"])}
    assert ran_by == {f"{HOST}:{worker.pid}"}
