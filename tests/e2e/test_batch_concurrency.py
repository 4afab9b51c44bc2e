"""Twenty annotators pull batches at once from two real server processes on one database:
nobody gets an item twice, no item goes to more annotators than the project allows, and when
everyone has answered, every item has exactly its quota of annotations."""

import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from app.migrations import upgrade
from tests.databases import fresh_database
from tests.e2e.conftest import ADMIN_KEY, LiveServer, start_server, stop_server

pytestmark = pytest.mark.e2e

N_ITEMS = 2_000
N_ANNOTATORS = 20
BATCH_SIZE = 10
PER_ITEM = 2


@pytest.fixture(scope="module")
def two_servers(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[LiveServer]]:
    tmp = tmp_path_factory.mktemp(f"batches-{backend}")
    with fresh_database(backend, tmp) as url:
        upgrade(url)
        servers = [
            start_server(url, tmp / f"server-{i}.log", bootstrap_key=ADMIN_KEY) for i in range(2)
        ]
        try:
            yield servers
        finally:
            for server in servers:
                stop_server(server)


def annotator_loop(
    server: LiveServer, key: str, project_id: int, handed: list[tuple[str, int]], errors: list[str]
) -> None:
    """Label until the project is done. An empty batch means every eligible item is held by
    another claim at this instant (skipped, not waited for): look again shortly, as a
    labeling front-end would, until the admin's stats say nothing is left to answer."""
    rng = random.Random(key)
    base = f"/v1/projects/{project_id}"
    with server.client(key) as client, server.client() as admin:
        while True:
            response = client.post(f"{base}/batches", json={"size": BATCH_SIZE})
            if response.status_code not in (200, 201):  # 200: nothing to hand out now
                errors.append(response.text)
                return
            batch = response.json()
            if not batch["items"]:
                left = admin.get(f"{base}/stats").json()["items_by_status"]
                if left.get("unlabeled", 0) == left.get("in_progress", 0) == 0:
                    return
                time.sleep(0.2)
                continue
            ids = [entry["item"]["id"] for entry in batch["items"]]
            handed.extend((batch["annotator"], item_id) for item_id in ids)
            answers = [{"item_id": i, "label": rng.choice(["yes", "no"])} for i in ids]
            submitted = client.post(f"{base}/annotations", json=answers)
            if submitted.status_code != 200 or submitted.json()["created"] != len(ids):
                errors.append(submitted.text)
                return


def test_twenty_annotators_two_processes(two_servers: list[LiveServer]) -> None:
    first = two_servers[0]
    with first.client() as admin:
        project = admin.post(
            "/v1/projects",
            json={
                "name": f"crowd-{uuid.uuid4().hex[:6]}",
                "labels": ["yes", "no"],
                "annotators_per_item": PER_ITEM,
            },
        ).json()
        items = [{"text": f"item {i} about topic {i % 37}"} for i in range(N_ITEMS)]
        report = admin.post(f"/v1/projects/{project['id']}/items", json=items).json()
        assert report["created"] == N_ITEMS
        keys = [
            admin.post("/v1/api-keys", json={"name": f"annotator-{i}", "role": "annotator"}).json()[
                "key"
            ]
            for i in range(N_ANNOTATORS)
        ]

    handed: list[tuple[str, int]] = []
    errors: list[str] = []
    threads = [
        threading.Thread(
            target=annotator_loop,
            args=(two_servers[i % 2], key, project["id"], handed, errors),
        )
        for i, key in enumerate(keys)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:3]

    # Never the same item twice to one annotator, never more than PER_ITEM annotators an item.
    assert len(handed) == len(set(handed))
    annotators_of: dict[int, set[str]] = defaultdict(set)
    for annotator, item_id in handed:
        annotators_of[item_id].add(annotator)
    assert max(len(a) for a in annotators_of.values()) == PER_ITEM
    # The work was shared out, not done by a few fast threads.
    per_annotator = Counter(annotator for annotator, _ in handed)
    assert len(per_annotator) == N_ANNOTATORS

    with first.client() as admin:
        counts: Counter[int] = Counter()
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = admin.get(f"/v1/projects/{project['id']}/annotations", params=params).json()
            counts.update(a["item_id"] for a in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        stats = admin.get(f"/v1/projects/{project['id']}/stats").json()
    assert len(counts) == N_ITEMS
    assert set(counts.values()) == {PER_ITEM}
    assert stats["items_by_status"]["unlabeled"] == stats["items_by_status"]["in_progress"] == 0
