"""The load test in its short form: ten simulated annotators fetch and answer batches for a few
seconds against two real server processes on one database. Zero errors, every acknowledged
answer stored, no item over its overlap. Speed is bench/load.py's (50 annotators, 60 s)."""

import importlib.util
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from app.migrations import upgrade
from tests.databases import fresh_database
from tests.e2e.conftest import ADMIN_KEY, ROOT, LiveServer, start_server, stop_server

pytestmark = pytest.mark.e2e

LABELS = ["bug", "feature", "question"]


def load_driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def two_servers(backend: str, tmp_path: Path) -> Iterator[list[LiveServer]]:
    with fresh_database(backend, tmp_path) as url:
        upgrade(url)
        servers = [
            start_server(url, tmp_path / f"server-{i}.log", bootstrap_key=ADMIN_KEY)
            for i in range(2)
        ]
        try:
            yield servers
        finally:
            for server in servers:
                stop_server(server)


def test_short_load_loses_nothing(two_servers: list[LiveServer]) -> None:
    driver = load_driver()
    with two_servers[0].client() as admin:
        body = {
            "name": f"load-{uuid.uuid4().hex[:6]}",
            "labels": LABELS,
            "phase": "production",
            "annotators_per_item": 2,  # items are shared: the overlap check means something
        }
        project = admin.post("/v1/projects", json=body).json()
        items = [{"text": f"ticket {i} about load"} for i in range(4_000)]
        admin.post(f"/v1/projects/{project['id']}/items", json=items)
        keys = {}
        for n in range(10):
            name = f"load-{n}-{uuid.uuid4().hex[:4]}"
            response = admin.post("/v1/api-keys", json={"name": name, "role": "annotator"})
            keys[name] = response.json()["key"]
    result = driver.run_load(
        [server.base_url for server in two_servers],
        keys,
        project["id"],
        LABELS,
        seconds=4,
        batch_size=10,
        warmup=1,
    )
    assert result.errors == []
    assert result.answers > 0 and len(result.acknowledged) == len(keys)
    assert 0 < result.measured <= result.answers
    assert driver.check_stored(two_servers[0].database_url, project["id"], result) == []
