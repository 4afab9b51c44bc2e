"""A real uvicorn server in a subprocess, on its own fresh migrated database."""

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.migrations import upgrade
from tests.conftest import check_response
from tests.corpus import TOPICS, labeled_corpus
from tests.databases import fresh_database

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "lw_e2e_admin_key_for_tests_only_0123456789"


@dataclass
class LiveServer:
    base_url: str
    database_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def client(self, key: str | None = ADMIN_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=60,
            event_hooks={"response": [check_response]},
        )

    def log(self) -> str:
        return self.log_path.read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(
    database_url: str,
    log_path: Path,
    *,
    bootstrap_key: str | None,
    settings: dict[str, str] | None = None,
    workers: int = 1,
) -> LiveServer:
    """`labelwise serve` on a free port; `settings` adds LABELWISE_* variables."""
    port = free_port()
    env = {
        **os.environ,
        "LABELWISE_DATABASE_URL": database_url,
        "LABELWISE_DATA_DIR": str(log_path.parent),
        "LABELWISE_LOG_LEVEL": "INFO",
        **(settings or {}),
    }
    env.pop("LABELWISE_BOOTSTRAP_ADMIN_KEY", None)
    if bootstrap_key:
        env["LABELWISE_BOOTSTRAP_ADMIN_KEY"] = bootstrap_key
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", database_url, log_path, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {server.log()}")
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not become ready: {server.log()}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def live_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp(f"live-{backend}")
    with fresh_database(backend, tmp) as url:
        upgrade(url)
        server = start_server(url, tmp / "server.log", bootstrap_key=ADMIN_KEY)
        try:
            yield server
        finally:
            stop_server(server)


def topics_project(
    client: httpx.Client, *, name: str, per_label: int, seed: int, labeled: int | None = None
) -> tuple[dict[str, Any], list[tuple[str, str]], list[int]]:
    """A production project over TOPICS with `per_label` corpus items of each topic, the
    first `labeled` of them (all by default) answered with their corpus label: the project,
    the corpus and the item ids."""
    body = {
        "name": f"{name}-{uuid.uuid4().hex[:6]}",
        "labels": sorted(TOPICS),
        "phase": "production",
    }
    project: dict[str, Any] = client.post("/v1/projects", json=body).json()
    base = f"/v1/projects/{project['id']}"
    corpus = labeled_corpus(per_label, seed=seed)
    items = [{"text": text} for text, _ in corpus]
    ids = [r["id"] for r in client.post(f"{base}/items", json=items).json()["results"]]
    answers = [
        {"item_id": i, "label": label} for i, (_, label) in zip(ids[:labeled], corpus, strict=False)
    ]
    client.post(f"{base}/annotations", json=answers)
    return project, corpus, ids


def wait(client: httpx.Client, job_id: int, until: tuple[str, ...], timeout: float = 120) -> Any:
    """Poll a job of a live server until its status is one of `until`; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {until}")
