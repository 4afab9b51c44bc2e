"""A real server killed mid-training: the job fails as interrupted, nothing half-written is
visible, and after the restart the active version predicts without retraining."""

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from app.migrations import upgrade
from tests.databases import fresh_database
from tests.e2e.conftest import ADMIN_KEY, start_server, stop_server, topics_project, wait

pytestmark = pytest.mark.e2e


@pytest.fixture
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fresh_database(backend, tmp_path_factory.mktemp("restart")) as url:
        upgrade(url)
        yield url


def test_kill_during_training_then_restart(database_url: str, tmp_path: Any) -> None:
    server = start_server(database_url, tmp_path / "a.log", bootstrap_key=ADMIN_KEY)
    try:
        with server.client() as client:
            project, corpus, ids = topics_project(
                client, name="r", per_label=1_500, seed=11, labeled=60
            )
            base = f"/v1/projects/{project['id']}"
            first = client.post(f"{base}/models", json={"activate": True}).json()
            first = wait(client, first["id"], ("succeeded", "failed"))
            assert first["status"] == "succeeded", first
            wait(client, first["result"]["scoring_job_id"], ("succeeded",))

            # Label the rest and start a bigger training run; kill the server while it runs.
            rest = [{"item_id": i, "label": lab} for i, (_, lab) in zip(ids, corpus, strict=True)][
                60:4000
            ]
            for start in range(0, len(rest), 5_000):
                client.post(f"{base}/annotations", json=rest[start : start + 5_000])
            second = client.post(f"{base}/models", json={"activate": True}).json()
            wait(client, second["id"], ("running",), timeout=60)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    finally:
        stop_server(server)

    restarted = start_server(database_url, tmp_path / "b.log", bootstrap_key=ADMIN_KEY)
    try:
        with restarted.client() as client:
            job = client.get(f"/v1/jobs/{second['id']}").json()
            assert job["status"] == "failed", job
            assert job["error"]["type"] == "/problems/job-interrupted" and job["retryable"]
            versions = client.get(f"{base}/models").json()["items"]
            assert [(v["version"], v["active"]) for v in versions] == [(1, True)]

            prelabel = client.post(
                f"{base}/prelabels", json={"threshold": 0.01, "limit": 50}
            ).json()
            result = wait(client, prelabel["id"], ("succeeded", "failed"))
            assert result["status"] == "succeeded", result
            assert result["result"]["model_version"] == "registry:1"
            assert result["result"]["auto_accepted"] == 50
            jobs = client.get(f"/v1/jobs?project_id={project['id']}&kind=train_model").json()
            assert len(jobs["items"]) == 2  # no retraining happened behind our back
    finally:
        stop_server(restarted)
