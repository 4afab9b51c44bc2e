"""A real server killed with SIGKILL in the middle of a streamed bulk ingest: after the restart
only whole committed chunks are visible, and re-sending the ingest gives exactly the intended
items. (Killing it mid-training is tests/e2e/test_registry_restart.py; its retry is here.)"""

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.migrations import upgrade
from tests.databases import fresh_database
from tests.e2e.conftest import ADMIN_KEY, start_server, stop_server, topics_project, wait

pytestmark = pytest.mark.e2e

CHUNK = 2_000  # the server's ingest_chunk_size: NDJSON is committed every CHUNK lines
TOTAL = 6_000
SENT_BEFORE_KILL = 4_500  # two chunks committed, a third half-read when the server dies


@pytest.fixture
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fresh_database(backend, tmp_path_factory.mktemp("crash")) as url:
        upgrade(url)
        yield url


def line(i: int) -> bytes:
    item = {"external_id": f"doc-{i}", "text": f"document number {i} about crash safety"}
    return (json.dumps(item) + "\n").encode()


def item_count(client: httpx.Client, base: str) -> tuple[int, set[str]]:
    ids: set[str] = set()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"{base}/items", params=params).json()
        ids |= {item["external_id"] for item in page["items"]}
        cursor = page["next_cursor"]
        if cursor is None:
            return len(ids), ids


def test_sigkill_mid_ndjson_ingest_then_resend(database_url: str, tmp_path: Path) -> None:
    server = start_server(database_url, tmp_path / "a.log", bootstrap_key=ADMIN_KEY)
    sent_enough, release = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def body() -> Iterator[bytes]:
        for i in range(TOTAL):
            if i == SENT_BEFORE_KILL:
                sent_enough.set()
                release.wait(60)
            yield line(i)

    try:
        with server.client() as client:
            project = client.post(
                "/v1/projects",
                json={"name": f"crash-{uuid.uuid4().hex[:6]}", "labels": ["a", "b"]},
            ).json()
            base = f"/v1/projects/{project['id']}"

            def send() -> None:
                with httpx.Client(base_url=server.base_url, timeout=60) as raw:
                    try:
                        outcome["response"] = raw.post(
                            f"{base}/items",
                            content=body(),
                            headers={
                                "Authorization": f"Bearer {ADMIN_KEY}",
                                "Content-Type": "application/x-ndjson",
                            },
                        )
                    except httpx.TransportError as error:
                        outcome["error"] = error

            sender = threading.Thread(target=send)
            sender.start()
            assert sent_enough.wait(60)
            # Wait until the committed chunks are visible, then kill mid-chunk.
            deadline = time.monotonic() + 60
            while item_count(client, base)[0] < 2 * CHUNK and time.monotonic() < deadline:
                time.sleep(0.1)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        release.set()
        sender.join(60)
        assert "error" in outcome, outcome  # the request died with the server
    finally:
        release.set()
        stop_server(server)

    restarted = start_server(database_url, tmp_path / "b.log", bootstrap_key=ADMIN_KEY)
    try:
        with restarted.client() as client:
            count, seen = item_count(client, base)
            assert count == 2 * CHUNK  # whole chunks only: the half-read third left nothing
            assert seen == {f"doc-{i}" for i in range(count)}
            resent = client.post(
                f"{base}/items",
                content=b"".join(line(i) for i in range(TOTAL)),
                headers={"Content-Type": "application/x-ndjson"},
            ).json()
            assert (resent["created"], resent["unchanged"]) == (TOTAL - count, count)
            final, seen = item_count(client, base)
            assert final == TOTAL and seen == {f"doc-{i}" for i in range(TOTAL)}
    finally:
        stop_server(restarted)


def test_a_training_killed_mid_run_is_retried_to_success(database_url: str, tmp_path: Path) -> None:
    server = start_server(database_url, tmp_path / "a.log", bootstrap_key=ADMIN_KEY)
    try:
        with server.client() as client:
            project, _, ids = topics_project(client, name="crash", per_label=1_000, seed=5)
            base = f"/v1/projects/{project['id']}"
            job = client.post(f"{base}/models", json={}).json()
            wait(client, job["id"], ("running",), timeout=60)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    finally:
        stop_server(server)

    restarted = start_server(database_url, tmp_path / "b.log", bootstrap_key=ADMIN_KEY)
    try:
        with restarted.client() as client:
            failed = client.get(f"/v1/jobs/{job['id']}").json()
            assert failed["status"] == "failed" and failed["retryable"], failed
            assert client.get(f"{base}/models").json()["items"] == []
            retried = client.post(f"/v1/jobs/{job['id']}/retry").json()
            current = wait(client, retried["id"], ("succeeded", "failed"), timeout=180)
            assert current["status"] == "succeeded", current["error"]
            [model] = client.get(f"{base}/models").json()["items"]
            assert model["n_train"] == len(ids)
            versions = client.get(f"{base}/dataset-versions").json()["items"]
            assert [v["version"] for v in versions] == [model["dataset_version"]] == [1]
    finally:
        stop_server(restarted)
