"""End to end through a real HTTP server: the README walkthrough, concurrency, bootstrap, logs."""

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.migrations import upgrade
from tests.databases import fresh_database
from tests.e2e.conftest import ADMIN_KEY, LiveServer, start_server, stop_server

pytestmark = pytest.mark.e2e


def new_key(server: LiveServer, name: str, role: str, tier: str | None = None) -> str:
    with server.client() as admin:
        response = admin.post("/v1/api-keys", json={"name": name, "role": role, "tier": tier})
        assert response.status_code == 201, response.text
        key: str = response.json()["key"]
        return key


def test_walkthrough(live_server: LiveServer) -> None:
    """The README's curl walkthrough, step by step."""
    alice = new_key(live_server, "walk-alice", "annotator", "in_house")
    bob = new_key(live_server, "walk-bob", "annotator", "crowd")
    with live_server.client() as admin:
        project = admin.post(
            "/v1/projects",
            json={
                "name": "walkthrough",
                "labels": ["bug", "feature", "question"],
                "annotators_per_item": 2,
                "cost_per_label": {"in_house": 0.3, "crowd": 0.05},
            },
        ).json()
        pid = project["id"]
        report = admin.post(
            f"/v1/projects/{pid}/items",
            json=[
                {"external_id": "t-1", "text": "App crashes when I click save"},
                {"external_id": "t-2", "text": "Please add dark mode"},
            ],
        ).json()
        assert report["created"] == 2
        ndjson = (
            '{"external_id": "t-3", "text": "How do I export my data?"}\n'
            '{"text": "please add DARK mode"}\n'
        )
        streamed = admin.post(
            f"/v1/projects/{pid}/items",
            content=ndjson,
            headers={"content-type": "application/x-ndjson"},
        ).json()
        assert (streamed["created"], streamed["duplicates"]) == (1, 1)
        ids = [r["id"] for r in report["results"]] + [streamed["results"][0]["id"]]
    for key, labels in ((alice, ["bug", "feature", "question"]), (bob, ["bug", "feature", "bug"])):
        with live_server.client(key) as annotator:
            batch = [{"item_id": i, "label": label} for i, label in zip(ids, labels, strict=True)]
            assert (
                annotator.post(f"/v1/projects/{pid}/annotations", json=batch).json()["created"] == 3
            )
    with live_server.client() as admin:
        stats = admin.get(f"/v1/projects/{pid}/stats").json()
        assert (
            stats["items_by_status"]["labeled"] == 2
            and stats["items_by_status"]["needs_review"] == 1
        )
        assert stats["cost_total"] == pytest.approx(3 * 0.3 + 3 * 0.05)
        assert (
            admin.get(f"/v1/projects/{pid}/items", params={"label": "bug"}).json()["items"][0]["id"]
            == ids[0]
        )


def test_concurrent_annotators_both_persist(live_server: LiveServer) -> None:
    with live_server.client() as admin:
        pid = admin.post(
            "/v1/projects",
            json={"name": "concurrency", "labels": ["a", "b"], "annotators_per_item": 2},
        ).json()["id"]
        ids = [
            r["id"]
            for r in admin.post(
                f"/v1/projects/{pid}/items", json=[{"text": f"contended {i}"} for i in range(40)]
            ).json()["results"]
        ]
    keys = [new_key(live_server, f"racer-{n}", "annotator") for n in range(4)]
    start = threading.Barrier(len(keys))
    failures: list[str] = []

    def annotate_all(key: str) -> None:
        with live_server.client(key) as client:
            start.wait()
            for item_id in ids:
                response = client.post(
                    f"/v1/projects/{pid}/annotations", json=[{"item_id": item_id, "label": "a"}]
                )
                if response.status_code != 200:
                    failures.append(response.text)

    threads = [threading.Thread(target=annotate_all, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    with live_server.client() as admin:
        annotations = admin.get(f"/v1/projects/{pid}/annotations", params={"limit": 1000}).json()[
            "items"
        ]
        assert len(annotations) == len(ids) * len(keys)
        items = admin.get(f"/v1/projects/{pid}/items", params={"limit": 1000}).json()["items"]
        assert {(i["status"], i["resolved_label"]) for i in items} == {("labeled", "a")}


def test_concurrent_identical_ingests_store_each_text_once(live_server: LiveServer) -> None:
    with live_server.client() as admin:
        pid = admin.post("/v1/projects", json={"name": "ingest-race", "labels": ["a", "b"]}).json()[
            "id"
        ]
    batch = [{"text": f"raced text {i}"} for i in range(500)]
    reports: list[dict[str, Any]] = []
    start = threading.Barrier(3)

    def send() -> None:
        with live_server.client() as client:
            start.wait()
            reports.append(client.post(f"/v1/projects/{pid}/items", json=batch).json())

    threads = [threading.Thread(target=send) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sum(r["created"] for r in reports) == 500
    assert sum(r["duplicates"] for r in reports) == 1000
    with live_server.client() as admin:
        stats = admin.get(f"/v1/projects/{pid}/stats").json()
        assert stats["n_items"] == 500


def test_request_log_is_one_json_line_per_request_without_secrets(live_server: LiveServer) -> None:
    with live_server.client() as admin:
        admin.get("/v1/projects", headers={"X-Request-ID": "log-probe-1"})
    probes: list[dict[str, Any]] = []
    for _ in range(50):  # the line is written just after the response is sent
        lines = [
            json.loads(line) for line in live_server.log().splitlines() if line.startswith("{")
        ]
        probes = [line for line in lines if line.get("request_id") == "log-probe-1"]
        if probes:
            break
        time.sleep(0.1)
    assert len(probes) == 1
    assert (
        probes[0]["route"] == "/v1/projects"
        and probes[0]["status"] == 200
        and probes[0]["duration_ms"] >= 0
    )
    assert ADMIN_KEY not in live_server.log()


def test_bootstrap_key_is_printed_once(tmp_path: Path) -> None:
    with fresh_database("sqlite", tmp_path) as url:
        upgrade(url)
        first = start_server(url, tmp_path / "first.log", bootstrap_key=None)
        try:
            printed = [
                json.loads(line)
                for line in first.log().splitlines()
                if "bootstrap admin key" in line
            ]
            assert len(printed) == 1
            secret = printed[0]["msg"].rsplit(" ", 1)[-1]
            with first.client(secret) as admin:
                assert admin.get("/v1/api-keys").json()["items"][0]["name"] == "admin"
        finally:
            stop_server(first)
        second = start_server(url, tmp_path / "second.log", bootstrap_key=None)
        try:
            assert "bootstrap admin key" not in second.log()
            assert (
                httpx.get(
                    f"{second.base_url}/v1/projects", headers={"Authorization": f"Bearer {secret}"}
                ).status_code
                == 200
            )
        finally:
            stop_server(second)


@pytest.mark.parametrize("media_type", ["application/x-ndjson", "application/json"])
def test_a_stalled_upload_does_not_block_other_writers(
    live_server: LiveServer, media_type: str
) -> None:
    with live_server.client() as admin:
        pid = admin.post(
            "/v1/projects", json={"name": f"stall-{media_type}", "labels": ["a", "b"]}
        ).json()["id"]
    host, port = live_server.base_url.removeprefix("http://").split(":")
    first_line = (
        b'{"text": "arrives"}\n' if media_type.endswith("ndjson") else b'[{"text": "arrives"},'
    )
    with socket.create_connection((host, int(port)), timeout=10) as stalled:
        stalled.sendall(
            f"POST /v1/projects/{pid}/items HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {ADMIN_KEY}\r\nContent-Type: {media_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
            + f"{len(first_line):x}\r\n".encode()
            + first_line
            + b"\r\n"
        )
        time.sleep(0.5)  # the server has authenticated and is waiting for the rest
        with live_server.client() as admin:
            started = time.monotonic()
            response = admin.post(
                "/v1/projects", json={"name": f"meanwhile-{media_type}", "labels": ["a", "b"]}
            )
            assert response.status_code == 201
            assert time.monotonic() - started < 5
