"""File import benchmark: a JSON-lines file of --rows lines (200,000) through HTTP into a real
server's import job, with memory measured where it matters.

For each database (a SQLite file in a temporary directory; a throwaway PostgreSQL database):
migrate, start `labelwise serve` (a subprocess, embedded job runner), create a production
project whose labels are the Debian sections, and upload the file with the mapping
external_id, text, label and metadata tags, so every row becomes an item and a label
annotation of `import:bench`. Timed:

* upload: the POST until its 202 (the server spools the body, checks it and stores it in
  the database in 1 MiB chunks);
* job: from the 202 until the job has succeeded;
* total: both, and rows/s over the total.

Memory: the peak RSS (VmHWM) of the server process during the leg, and of the job's child
process (spawned for the first job, so its peak covers its start-up and this import). The
target is < 300 MB for each. The file is the Debian descriptions (see bench/common.py)
cycled to --rows with a suffix that keeps every text unique; it is written before the
clock starts. A benchmark, not a test: the exit status is 0 whether the target is met or not.

    .venv/bin/python bench/import_jsonl.py [--rows N] [--only sqlite|postgres]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import (
    BenchError,
    Database,
    Server,
    Setup,
    add_backends_option,
    api_client,
    code_version,
    copy_of,
    expect,
    find_debian_data,
    machine,
    migrated_server,
    on_each_database,
    progress,
    read_rows,
    table,
)

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ADMIN_KEY = "lw_" + "b" * 43
TARGET_MIB = 300
TIMEOUT_S = 3600.0
MAPPING = {"external_id": "id", "text": "text", "label": "label", "metadata": ["tags"]}


def write_file(path: Path, source: Path, count: int) -> list[str]:
    """`count` JSON lines cycled from the Debian rows; returns the labels they use."""
    rows = read_rows(source)
    with path.open("w", encoding="utf-8") as out:
        for position in range(count):
            k, index = divmod(position, len(rows))
            row = rows[index]
            external_id, text = copy_of(row["id"], row["text"], k)
            line = {"id": external_id, "text": text, "label": row["label"], "tags": row["tags"]}
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    return sorted({row["label"] for row in rows})


def job_child_peak_mib(server: Server) -> float | None:
    """VmHWM of the server's job process (the spawned multiprocessing child)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rpartition(")")[2].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server.process.pid and b"spawn_main" in cmdline:
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    return None


def wait_for(client: httpx.Client, job_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        job: dict[str, Any] = expect(client.get(f"/v1/jobs/{job_id}"), 200, "polling the job")
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise BenchError(f"job {job_id} did not finish within {TIMEOUT_S:.0f} s")


def run_leg(database: Database, path: Path, labels: list[str], rows: int) -> dict[str, Any]:
    setup = Setup(database.backend)
    with (
        migrated_server(setup, database, ADMIN_KEY) as server,
        api_client(server, ADMIN_KEY, TIMEOUT_S) as client,
    ):
        body = {"name": "bench-import", "labels": labels, "phase": "production"}
        project = expect(client.post("/v1/projects", json=body), 201, "creating the project")
        server.reset_peak_rss()
        started = time.perf_counter()
        with path.open("rb") as file:
            response = client.post(
                f"/v1/projects/{project['id']}/imports/upload",
                data={"kind": "file", "mapping": json.dumps(MAPPING), "annotator": "import:bench"},
                files={"file": (path.name, file, "application/x-ndjson")},
            )
        accepted = expect(response, 202, "uploading the file")
        uploaded = time.perf_counter()
        job = wait_for(client, accepted["id"])
        finished = time.perf_counter()
        if job["status"] != "succeeded":
            raise BenchError(f"{database.backend}: the import {job['status']}: {job['error']}")
        result = job["result"]
        if result["items"]["created"] != rows or result["labels"]["created"] != rows:
            raise BenchError(f"{database.backend}: expected {rows} items and labels: {result}")
        figures = {
            "database": database.backend,
            "rows": rows,
            "upload_s": uploaded - started,
            "job_s": finished - uploaded,
            "total_s": finished - started,
            "server_mib": server.peak_rss_mib(),
            "job_mib": job_child_peak_mib(server),
        }
    progress(f"{database.backend}: {rows} rows in {figures['total_s']:.1f} s")
    return figures


def report(results: list[dict[str, Any]], size_mib: float) -> list[str]:
    def mib(value: float | None) -> str:
        return f"{value:.0f}" if value is not None else "-"

    lines = table(
        ["database", "rows", "upload s", "job s", "total s", "rows/s", "server MiB", "job MiB"],
        [
            [
                r["database"],
                f"{r['rows']:,}",
                f"{r['upload_s']:.1f}",
                f"{r['job_s']:.1f}",
                f"{r['total_s']:.1f}",
                f"{r['rows'] / r['total_s']:,.0f}",
                mib(r["server_mib"]),
                mib(r["job_mib"]),
            ]
            for r in results
        ],
    )
    lines.append("")
    lines.append(f"file: {size_mib:.1f} MiB of JSON lines; peak RSS target < {TARGET_MIB} MB")
    for r in results:
        peaks = [p for p in (r["server_mib"], r["job_mib"]) if p is not None]
        ok = peaks and max(peaks) * 2**20 < TARGET_MIB * 1e6
        lines.append(
            f"{'PASS' if ok else 'FAIL'}: {r['database']} peak RSS {mib(max(peaks or [0]))} MiB"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    add_backends_option(parser)
    args = parser.parse_args()
    source = find_debian_data()
    if source is None:
        return 1
    postgres_url = os.environ.get("LABELWISE_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    backends = [b for b in ("sqlite", "postgres") if b in args.only]
    with tempfile.TemporaryDirectory(prefix="labelwise-bench-import-") as tmp:
        path = Path(tmp) / "debian.jsonl"
        labels = write_file(path, source, args.rows)
        size_mib = path.stat().st_size / 2**20
        progress(f"wrote {args.rows} lines ({size_mib:.1f} MiB)")
        results, status = on_each_database(
            backends,
            postgres_url,
            f"labelwise_bench_import_{os.getpid()}",
            lambda database: run_leg(database, path, labels, args.rows),
        )
    print(f"code {code_version()}, {machine()}")
    print("\n".join(report(results, size_mib)))
    return status


if __name__ == "__main__":
    sys.exit(main())
