"""Bulk ingest benchmark: HTTP throughput against the physical floor of the same schema.

For each database (a SQLite file in a temporary directory; a throwaway PostgreSQL database),
in one run on one machine:

* http-json: the real server (`labelwise serve`, a subprocess) receives the items as JSON
  arrays of --batch items, one request at a time;
* http-ndjson: the same items as one streamed application/x-ndjson request, into a second
  project of the same database;
* core-executemany: the floor. A fresh database migrated with the same migrations, and the
  same rows (every column the service writes) inserted with SQLAlchemy Core executemany in
  batches of --batch, one transaction per batch, on the engine the service builds.

Request bodies, row parameters and content hashes are prepared before the clock starts. The
data is the Debian package descriptions (../shared/data/debian-dev.jsonl.gz relative to the
repository, or LABELWISE_DEBIAN_DATA), cycled to --items with a suffix that keeps every text
unique after normalization. The target: HTTP ingest into SQLite at >= 50% of the floor rate.
It is a benchmark, not a test: the exit status is 0 whether the target is met or not.

    .venv/bin/python bench/ingest.py [--items N] [--batch N] [--only sqlite|postgresql]
"""

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from common import (
    BIN,
    BenchError,
    api_client,
    code_version,
    copy_of,
    find_debian_data,
    postgres_server,
    read_rows,
    running_server,
    service_env,
    throwaway_database,
)
from sqlmodel import Session

from app.db import build_engine
from app.migrations import upgrade
from app.models.base import ItemStatus, utcnow
from app.models.project import ProjectCreate
from app.services.items import ITEM_TABLE, content_hash
from app.services.projects import create_project
from app.settings import Settings

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TARGET_RATIO = 0.5
NDJSON_WRITE_LINES = 1_000  # lines per chunk the client writes to the stream
REQUEST_TIMEOUT_S = 900.0
FLOOR = "core-executemany"


@dataclass(frozen=True, slots=True)
class Dataset:
    items: list[dict[str, Any]]
    hashes: list[str]
    labels: list[str]


@dataclass(frozen=True, slots=True)
class Result:
    database: str
    leg: str
    items: int
    seconds: float
    peak_rss_mib: float | None = None

    @property
    def rate(self) -> float:
        return self.items / self.seconds


# --- data ----------------------------------------------------------------------------------


def load_dataset(path: Path, count: int) -> Dataset:
    """`count` items cycled from the rows; the k-th pass makes the k-th copies (copy_of)."""
    rows = read_rows(path)
    items: list[dict[str, Any]] = []
    for position in range(count):
        k, index = divmod(position, len(rows))
        row = rows[index]
        external_id, text = copy_of(row["id"], row["text"], k)
        items.append(
            {
                "external_id": external_id,
                "text": text,
                "metadata": {"tags": row["tags"]},
                "source": "public",
            }
        )
    hashes = [content_hash(item["text"]) for item in items]
    if len(set(hashes)) != len(hashes):
        raise BenchError("the scaled texts are not unique after normalization")
    return Dataset(items=items, hashes=hashes, labels=sorted({row["label"] for row in rows}))


def batches(values: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


@contextmanager
def quiet_heap() -> Iterator[None]:
    """Keep what was prepared before the clock out of the garbage collector's full passes.

    The prepared items, bodies and rows are millions of long-lived objects; without this,
    every full collection during a timed section walks them all and bills the leg for it.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# --- the server ----------------------------------------------------------------------------


def labelwise(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(BIN / "labelwise"), *args], env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise BenchError(f"labelwise {args[0]} failed:\n{done.stderr.strip()}")
    return done.stdout.strip()


# --- the legs ------------------------------------------------------------------------------


def check_report(response: httpx.Response, expected: int, *, leg: str) -> None:
    if response.status_code != 200:
        raise BenchError(f"{leg}: HTTP {response.status_code}: {response.text[:500]}")
    report = response.json()
    if report["created"] != expected or report["failed"] or report["duplicates"]:
        counts = {k: report[k] for k in ("created", "updated", "unchanged", "duplicates", "failed")}
        raise BenchError(f"{leg}: expected {expected} created, got {counts}")


def new_project(client: httpx.Client, name: str, labels: list[str]) -> int:
    response = client.post("/v1/projects", json={"name": name, "labels": labels})
    if response.status_code != 201:
        raise BenchError(f"creating project {name}: HTTP {response.status_code}: {response.text}")
    project_id: int = response.json()["id"]
    return project_id


def http_legs(
    database: str, database_url: str, workdir: Path, data: Dataset, batch: int
) -> list[Result]:
    """Migrate, create a key, start the server, then time JSON-array and NDJSON ingest."""
    env = service_env(database_url, workdir)
    labelwise(["migrate"], env)
    key = labelwise(["create-api-key", "--name", "bench", "--role", "admin"], env)
    json_bodies = [(json.dumps(list(b)).encode(), len(b)) for b in batches(data.items, batch)]
    ndjson_lines = [json.dumps(item).encode() + b"\n" for item in data.items]
    ndjson_chunks = [b"".join(chunk) for chunk in batches(ndjson_lines, NDJSON_WRITE_LINES)]
    del ndjson_lines
    results: list[Result] = []
    with (
        running_server(env, workdir / "server.log") as server,
        api_client(server, key, REQUEST_TIMEOUT_S) as client,
    ):
        project_id = new_project(client, "bench-json", data.labels)
        server.reset_peak_rss()
        with quiet_heap():
            started = time.perf_counter()
            for body, size in json_bodies:
                response = client.post(
                    f"/v1/projects/{project_id}/items",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                check_report(response, size, leg="http-json")
            elapsed = time.perf_counter() - started
        results.append(
            Result(database, "http-json", len(data.items), elapsed, server.peak_rss_mib())
        )
        progress(results[-1])

        def stream() -> Iterator[bytes]:
            yield from ndjson_chunks

        project_id = new_project(client, "bench-ndjson", data.labels)
        server.reset_peak_rss()
        with quiet_heap():
            started = time.perf_counter()
            response = client.post(
                f"/v1/projects/{project_id}/items",
                params={"results": "errors"},  # the documented mode for large streams
                content=stream(),
                headers={"content-type": "application/x-ndjson"},
            )
            check_report(response, len(data.items), leg="http-ndjson")
            elapsed = time.perf_counter() - started
        results.append(
            Result(database, "http-ndjson", len(data.items), elapsed, server.peak_rss_mib())
        )
        progress(results[-1])
    return results


def floor_leg(database: str, database_url: str, workdir: Path, data: Dataset, batch: int) -> Result:
    """The same rows into the same schema with Core executemany: what the design can't beat."""
    upgrade(database_url)
    engine = build_engine(Settings(database_url=database_url, data_dir=workdir))
    try:
        with Session(engine, expire_on_commit=False) as session:
            project = create_project(
                session, data=ProjectCreate(name="bench-floor", labels=data.labels)
            )
        now = utcnow()
        params = [
            {
                "project_id": project.id,
                "external_id": item["external_id"],
                "text": item["text"],
                "content_hash": digest,
                "data": {},
                "metadata": item["metadata"],
                "source": item["source"],
                "status": ItemStatus.unlabeled.value,
                "created_at": now,
                "updated_at": now,
            }
            for item, digest in zip(data.items, data.hashes, strict=True)
        ]
        chunks = [list(chunk) for chunk in batches(params, batch)]
        statement = sa.insert(ITEM_TABLE)
        with quiet_heap():
            started = time.perf_counter()
            for chunk in chunks:
                with engine.begin() as connection:
                    connection.execute(statement, chunk)
            elapsed = time.perf_counter() - started
        with engine.connect() as connection:
            stored = connection.execute(sa.select(sa.func.count()).select_from(ITEM_TABLE))
            if stored.scalar_one() != len(params):
                raise BenchError(f"{database} {FLOOR}: the row count does not match")
    finally:
        engine.dispose()
    result = Result(database, FLOOR, len(params), elapsed)
    progress(result)
    return result


# --- databases -----------------------------------------------------------------------------


def run_sqlite(data: Dataset, batch: int) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="labelwise-bench-") as tmp:
        floor_dir, http_dir = Path(tmp, "floor"), Path(tmp, "http")
        floor_dir.mkdir()
        http_dir.mkdir()
        floor = floor_leg(
            "sqlite", f"sqlite:///{floor_dir / 'labelwise.db'}", floor_dir, data, batch
        )
        http = http_legs("sqlite", f"sqlite:///{http_dir / 'labelwise.db'}", http_dir, data, batch)
        return [floor, *http]


def run_postgresql(data: Dataset, batch: int, admin_url: str) -> list[Result]:
    url = sa.make_url(admin_url)
    skipped = f"postgresql: skipped, {url.host}:{url.port} is unreachable"
    with postgres_server(admin_url, skipped) as admin:
        if admin is None:
            return []
        name = f"labelwise_bench_{os.getpid()}"
        with (
            tempfile.TemporaryDirectory(prefix="labelwise-bench-") as tmp,
            throwaway_database(admin, f"{name}_floor") as floor_url,
            throwaway_database(admin, name) as http_url,
        ):
            floor = floor_leg("postgresql", floor_url, Path(tmp), data, batch)
            http = http_legs("postgresql", http_url, Path(tmp), data, batch)
            return [floor, *http]


# --- report --------------------------------------------------------------------------------


def progress(result: Result) -> None:
    print(
        f"  {result.database} {result.leg}: {result.items} items in {result.seconds:.2f} s",
        file=sys.stderr,
        flush=True,
    )


def report(results: list[Result]) -> str:
    floors = {r.database: r.rate for r in results if r.leg == FLOOR}
    header = (
        f"{'database':<11} {'leg':<17} {'items':>8} {'seconds':>8} {'items/s':>9} "
        f"{'http/floor':>10} {'server peak RSS':>15}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        ratio = f"{r.rate / floors[r.database]:.2f}" if r.database in floors else "-"
        rss = f"{r.peak_rss_mib:.0f} MiB" if r.peak_rss_mib is not None else "-"
        lines.append(
            f"{r.database:<11} {r.leg:<17} {r.items:>8} {r.seconds:>8.2f} {r.rate:>9,.0f} "
            f"{ratio:>10} {rss:>15}"
        )
    if "sqlite" in floors:
        lines.append("")
        for r in results:
            if r.database == "sqlite" and r.leg != FLOOR:
                share = r.rate / floors["sqlite"]
                verdict = "PASS" if share >= TARGET_RATIO else "FAIL"
                lines.append(
                    f"{verdict}: SQLite {r.leg} at {share:.0%} of {FLOOR} "
                    f"(target >= {TARGET_RATIO:.0%}, same run)"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=200_000, help="items per leg")
    parser.add_argument("--batch", type=int, default=10_000, help="items per request/transaction")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], help="one database only")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("LABELWISE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a server where the benchmark may create and drop databases",
    )
    args = parser.parse_args(argv)
    if args.items < 1 or args.batch < 1:
        parser.error("--items and --batch must be positive")

    path = find_debian_data()
    if path is None:
        return 2
    data = load_dataset(path, args.items)
    version = code_version()
    print(f"{len(data.items)} items from {path}, batches of {args.batch}", file=sys.stderr)

    # A SIGTERM unwinds like Ctrl-C, so the finally blocks stop the server and drop databases.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    results: list[Result] = []
    status = 0
    try:
        if args.only in (None, "sqlite"):
            results += run_sqlite(data, args.batch)
        if args.only in (None, "postgresql"):
            results += run_postgresql(data, args.batch, args.postgres_url)
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        status = 1
    print(f"code {version}, {args.items} items per leg, batches of {args.batch}")
    print(report(results) if results else "no results")
    return status


if __name__ == "__main__":
    sys.exit(main())
