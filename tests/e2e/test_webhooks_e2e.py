"""Webhooks end to end, with real processes: `labelwise serve` sends to the receiver that
docs/webhooks.md prints (run as it is pasted, a separate process verifying every signature
with `standardwebhooks` and deduplicating by webhook-id).

- A scripted flow (answers, a phase change, a freeze, training and activation, pool scoring,
  a label-issue report, a failed job) reaches the receiver: every event, once per webhook-id.
  On PostgreSQL the server runs two API processes, whose senders share the deliveries.
- A server SIGKILLed while deliveries are pending (its receiver down) delivers every one of
  them after its restart, under the webhook-ids they had before.
- On PostgreSQL, jobs run by a `labelwise worker` (procrastinate) send their events too.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.migrations import upgrade
from tests.corpus import TOPICS, labeled_corpus
from tests.databases import POSTGRES_URL, fresh_database
from tests.e2e.conftest import ADMIN_KEY, free_port, start_server, stop_server, wait

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FAST_WEBHOOKS = {
    "LABELWISE_WEBHOOKS_ALLOW_PRIVATE": "true",
    "LABELWISE_WEBHOOKS_POLL_SECONDS": "0.1",
    "LABELWISE_WEBHOOKS_RETRY_BASE_SECONDS": "0.2",
    "LABELWISE_WEBHOOKS_RETRY_MAX_SECONDS": "1",
    "LABELWISE_WEBHOOKS_MAX_ATTEMPTS": "100",
    "LABELWISE_WEBHOOKS_TIMEOUT_SECONDS": "2",
}
EVERY_EVENT = [
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "model.activated",
    "dataset_version.created",
    "label_issues.ready",
    "project.phase_changed",
    "items.labeled",
]


def receiver_source() -> str:
    """The receiver of docs/webhooks.md, exactly as the page shows it."""
    page = (ROOT / "docs" / "webhooks.md").read_text()
    blocks: list[str] = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    [receiver] = [block for block in blocks if block.startswith("# receiver.py")]
    return receiver


@dataclass
class Receiver:
    """The docs' receiver in its own process: what it printed, one JSON object a line."""

    process: subprocess.Popen[bytes]
    output: Path
    port: int

    def lines(self) -> list[dict[str, Any]]:
        text = self.output.read_text() if self.output.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def events(self) -> dict[str, dict[str, Any]]:
        """The verified events by webhook-id (the receiver printed each id once)."""
        found: dict[str, dict[str, Any]] = {}
        for line in self.lines():
            if "id" in line:
                assert line["id"] not in found, f"{line['id']} processed twice"
                found[line["id"]] = line
        return found

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_receiver(tmp: Path, port: int, secret: str) -> Receiver:
    script = tmp / "receiver.py"
    script.write_text(receiver_source())
    output = tmp / f"received-{port}.jsonl"
    with output.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, str(script)],
            env={**os.environ, "WEBHOOK_SECRET": secret, "PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, output.read_text()
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return Receiver(process, output, port)
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the receiver never listened: {output.read_text()}")


def subscribe(client: httpx.Client, port: int) -> dict[str, Any]:
    created = client.post(
        "/v1/webhooks",
        json={"url": f"http://127.0.0.1:{port}/hooks", "events": EVERY_EVENT},
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def deliveries(client: httpx.Client, webhook_id: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"/v1/webhooks/{webhook_id}/deliveries", params=params).json()
        found += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def all_delivered(client: httpx.Client, webhook_id: int, receiver: Receiver) -> None:
    """Every delivery of the endpoint succeeded and the receiver has each event once."""

    def done() -> bool:
        rows = deliveries(client, webhook_id)
        return all(d["status"] == "succeeded" for d in rows) and {
            d["message_id"] for d in rows
        } <= set(receiver.events())

    wait_until(done, "every delivery to reach the receiver")
    rows = deliveries(client, webhook_id)
    assert set(receiver.events()) == {d["message_id"] for d in rows}
    duplicates = {line["duplicate"] for line in receiver.lines() if "duplicate" in line}
    assert duplicates <= set(receiver.events())  # a redelivery is always a known id


@pytest.fixture
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fresh_database(backend, tmp_path_factory.mktemp("webhooks")) as url:
        upgrade(url)
        yield url


def answer(client: httpx.Client, base: str, entries: list[dict[str, Any]]) -> None:
    response = client.post(f"{base}/annotations", json=entries)
    assert response.status_code == 200, response.text


def scripted_flow(client: httpx.Client) -> dict[str, Any]:
    """Every kind of event, through the API as a service would cause them; what it did."""
    project = client.post(
        "/v1/projects",
        json={"name": f"hooks-{uuid.uuid4().hex[:6]}", "labels": sorted(TOPICS)},
    ).json()
    base = f"/v1/projects/{project['id']}"
    corpus = labeled_corpus(8, seed=3)
    ids = [
        r["id"]
        for r in client.post(f"{base}/items", json=[{"text": t} for t, _ in corpus]).json()[
            "results"
        ]
    ]
    # A pilot: two answers per item. Alice's alone label nothing; Bob's two requests do.
    answers = [(i, label) for i, (_, label) in zip(ids, corpus, strict=True)]
    answer(client, base, [{"item_id": i, "label": lab, "annotator": "alice"} for i, lab in answers])
    half = len(answers) // 2
    for part in (answers[:half], answers[half:]):
        answer(client, base, [{"item_id": i, "label": lab, "annotator": "bob"} for i, lab in part])
    moved = client.patch(base, json={"phase": "production"})
    assert moved.status_code == 200, moved.text
    assert client.post(f"{base}/dataset-versions", json={}).status_code == 201
    training = client.post(f"{base}/models", json={"algorithm": "hashing_sgd", "activate": True})
    trained = wait(client, training.json()["id"], ("succeeded", "failed"))
    assert trained["status"] == "succeeded", trained
    wait(client, trained["result"]["scoring_job_id"], ("succeeded",))
    report = client.post(f"{base}/label-issues", json={"send_to_review": False})
    assert wait(client, report.json()["id"], ("succeeded", "failed"))["status"] == "succeeded"
    # A report on too few labels fails: job.failed.
    small = client.post(
        "/v1/projects",
        json={"name": f"small-{uuid.uuid4().hex[:6]}", "labels": ["a", "b"], "phase": "production"},
    ).json()
    small_base = f"/v1/projects/{small['id']}"
    small_item = client.post(f"{small_base}/items", json=[{"text": "lonely"}]).json()
    answer(client, small_base, [{"item_id": small_item["results"][0]["id"], "label": "a"}])
    failing = client.post(f"{small_base}/label-issues", json={})
    assert wait(client, failing.json()["id"], ("succeeded", "failed"))["status"] == "failed"
    return {"project": project["id"], "small": small["id"], "items": ids}


def expected_events(client: httpx.Client, flow: dict[str, Any]) -> dict[str, list[Any]]:
    """What the receiver must have seen, from the API's own records."""
    jobs = client.get("/v1/jobs", params={"limit": 1000}).json()["items"]
    base = f"/v1/projects/{flow['project']}"
    return {
        "job.succeeded": sorted(j["id"] for j in jobs if j["status"] == "succeeded"),
        "job.failed": sorted(j["id"] for j in jobs if j["status"] == "failed"),
        "model.activated": [1],
        "dataset_version.created": sorted(
            v["version"] for v in client.get(f"{base}/dataset-versions").json()["items"]
        ),
        "label_issues.ready": [r["id"] for r in client.get(f"{base}/label-issues").json()["items"]],
        "project.phase_changed": [flow["project"]],
    }


def seen_events(receiver: Receiver) -> dict[str, list[Any]]:
    by_type: dict[str, list[Any]] = {}
    for event in receiver.events().values():
        data = event["data"]
        key = {
            "job.succeeded": "job_id",
            "job.failed": "job_id",
            "job.cancelled": "job_id",
            "model.activated": "version",
            "dataset_version.created": "version",
            "label_issues.ready": "report_id",
            "project.phase_changed": "project_id",
        }.get(event["type"])
        if key is not None:
            by_type.setdefault(event["type"], []).append(data[key])
    return {kind: sorted(values) for kind, values in by_type.items()}


def test_a_scripted_flow_reaches_a_real_receiver(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    # Several API processes on PostgreSQL: their senders claim with SKIP LOCKED.
    workers = 2 if backend == "postgresql" else 1
    server = start_server(
        database_url,
        tmp_path / "server.log",
        bootstrap_key=ADMIN_KEY,
        settings=FAST_WEBHOOKS,
        workers=workers,
    )
    receiver: Receiver | None = None
    try:
        with server.client() as client:
            port = free_port()
            webhook = subscribe(client, port)
            receiver = start_receiver(tmp_path, port, webhook["secret"])
            flow = scripted_flow(client)
            all_delivered(client, webhook["id"], receiver)
            assert seen_events(receiver) == expected_events(client, flow)
            events = list(receiver.events().values())
            labeled = [e["data"] for e in events if e["type"] == "items.labeled"]
            # Bob's two requests, and the small project's one answer: three events, not one
            # per answer, naming every item once.
            assert len(labeled) == 3
            named = [item["id"] for data in labeled for item in data["items"]]
            assert sorted(named) == sorted([*flow["items"], *_small_items(client, flow)])
            trained = [
                e["data"]
                for e in events
                if e["type"] == "job.succeeded" and e["data"]["kind"] == "train_model"
            ]
            [training] = trained
            polled = client.get(f"/v1/jobs/{training['job_id']}").json()
            assert training["result"] == polled["result"]  # the typed result, as polled
            [failed] = [e["data"] for e in events if e["type"] == "job.failed"]
            assert failed["error"]["type"] == "/problems/not-enough-labels"
    finally:
        if receiver is not None:
            receiver.stop()
        stop_server(server)


def _small_items(client: httpx.Client, flow: dict[str, Any]) -> list[int]:
    page = client.get(f"/v1/projects/{flow['small']}/items").json()
    return [item["id"] for item in page["items"]]


def test_sigkill_with_deliveries_pending_then_every_event_arrives(
    database_url: str, tmp_path: Path
) -> None:
    first = start_server(
        database_url, tmp_path / "a.log", bootstrap_key=ADMIN_KEY, settings=FAST_WEBHOOKS
    )
    port = free_port()  # nothing listens there yet: every attempt fails
    try:
        with first.client() as client:
            webhook = subscribe(client, port)
            project = client.post(
                "/v1/projects",
                json={"name": f"kill-{uuid.uuid4().hex[:6]}", "labels": ["a", "b"]},
            ).json()
            base = f"/v1/projects/{project['id']}"
            ids = [
                r["id"]
                for r in client.post(
                    f"{base}/items", json=[{"text": f"text {i}"} for i in range(6)]
                ).json()["results"]
            ]
            moved = client.patch(
                base, json={"phase": "production", "force": True, "reason": "crash test"}
            )
            assert moved.status_code == 200, moved.text
            for item_id in ids[:3]:
                answer(client, base, [{"item_id": item_id, "label": "a"}])
            assert client.post(f"{base}/dataset-versions", json={}).status_code == 201
            answer(client, base, [{"item_id": i, "label": "b"} for i in ids[3:]])

            def tried() -> bool:
                rows = deliveries(client, webhook["id"])
                return len(rows) == 6 and all(d["attempts"] >= 1 for d in rows)

            wait_until(tried, "every delivery to have failed at least once")
            pending = deliveries(client, webhook["id"])
            assert {d["status"] for d in pending} == {"pending"}
            assert all(d["last_error"] for d in pending)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    finally:
        stop_server(first)

    receiver = start_receiver(tmp_path, port, webhook["secret"])
    second = start_server(
        database_url, tmp_path / "b.log", bootstrap_key=ADMIN_KEY, settings=FAST_WEBHOOKS
    )
    try:
        with second.client() as client:
            all_delivered(client, webhook["id"], receiver)
            received = receiver.events()
            assert set(received) == {d["message_id"] for d in pending}
            for delivery in pending:
                assert received[delivery["message_id"]]["type"] == delivery["event_type"]
            kinds = sorted(event["type"] for event in received.values())
            assert kinds == sorted(
                ["project.phase_changed", "dataset_version.created"] + ["items.labeled"] * 4
            )
    finally:
        receiver.stop()
        stop_server(second)


# --- PostgreSQL: jobs in `labelwise worker` processes --------------------------------------------


@pytest.mark.skipif(
    not POSTGRES_URL, reason="set LABELWISE_TEST_POSTGRES_URL to run the worker (procrastinate) leg"
)
def test_jobs_run_by_a_procrastinate_worker_send_their_events(tmp_path: Path) -> None:
    from tests.jobs.test_procrastinate import cli, cli_env, start_worker

    with fresh_database("postgresql", tmp_path) as url:
        env = cli_env(url, tmp_path) | FAST_WEBHOOKS
        migrated = cli(env, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        settings = {"LABELWISE_JOB_RUNNER": "procrastinate", **FAST_WEBHOOKS}
        server = start_server(
            url, tmp_path / "api.log", bootstrap_key=ADMIN_KEY, settings=settings, workers=2
        )
        worker = start_worker(env, tmp_path / "worker.log")
        receiver: Receiver | None = None
        try:
            with server.client() as client:
                port = free_port()
                webhook = subscribe(client, port)
                receiver = start_receiver(tmp_path, port, webhook["secret"])
                project = client.post(
                    "/v1/projects",
                    json={"name": "worker-hooks", "labels": sorted(TOPICS), "phase": "production"},
                ).json()
                base = f"/v1/projects/{project['id']}"
                corpus = labeled_corpus(6, seed=5)
                ids = [
                    r["id"]
                    for r in client.post(
                        f"{base}/items", json=[{"text": t} for t, _ in corpus]
                    ).json()["results"]
                ]
                answer(
                    client,
                    base,
                    [{"item_id": i, "label": lab} for i, (_, lab) in zip(ids, corpus, strict=True)],
                )
                job = client.post(
                    f"{base}/models", json={"algorithm": "hashing_sgd", "activate": True}
                ).json()
                trained = wait(client, job["id"], ("succeeded", "failed"))
                assert trained["status"] == "succeeded", trained
                wait(client, trained["result"]["scoring_job_id"], ("succeeded",))
                all_delivered(client, webhook["id"], receiver)
                assert seen_events(receiver) == {
                    "job.succeeded": sorted([job["id"], trained["result"]["scoring_job_id"]]),
                    "model.activated": [1],
                    # Frozen by the training job, reported with the model it registered.
                    "dataset_version.created": [1],
                }
                assert trained["worker"].endswith(f":{worker.pid}")  # not an API process
        finally:
            if receiver is not None:
                receiver.stop()
            worker.stop()
            stop_server(server)
