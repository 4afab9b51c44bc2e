"""Dataset-version benchmark: freeze --rows labeled items (200,000), stream their export as
JSON lines, CSV and Parquet through HTTP, and diff two versions, with the server's memory
measured during each leg.

For each database (a SQLite file in a temporary directory; a throwaway PostgreSQL database):
migrate, start `labelwise serve` (a subprocess), create a production project whose labels are
the Debian sections (one answer per item settles it), then load straight into the tables
with SQL (COPY on PostgreSQL, executemany on SQLite), since loading is setup and not what
is measured: --rows items cycled from the Debian descriptions (see bench/common.py), each
with one current human annotation by "ann-1" giving the row's section, and the item labeled
by consensus with that label. Timed through HTTP, with the server's peak RSS (VmHWM, reset
before each leg):

* freeze v1: POST .../dataset-versions (synchronous: every resolved label is copied);
* export v1 as jsonl, csv and parquet: GET .../dataset-versions/1/export, streamed by the
  client and hashed with SHA-256 as the bytes arrive (the body is never held); each format
  is exported twice and the two hashes must be equal (the same request, the same bytes);
  one jsonl export with balance=oversample comes before parquet, whose first export
  imports pyarrow (and pandas) into the server for good;
* relabel 1% of the items (every 100th) with POST .../annotations in batches of 10,000,
  each a second answer by "ann-1" (the admin key submits in that name) that replaces the
  first with another label; freeze v2 and GET .../dataset-versions/2/diff?against=1
  &limit=1000, whose relabeled count must be the number relabeled;
* export v1 as jsonl once more: its hash must still be the first one (v1 is immutable).

The target (the issue): the export of a 200,000-item version streams with peak RSS under
300 MB, and repeat exports are byte-identical. A benchmark, not a test: the exit status is 0
whether the targets are met or not, and 1 on an error.

    .venv/bin/python bench/export.py [--rows N] [--only sqlite|postgres]
"""

import argparse
import hashlib
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from common import (
    BACKENDS,
    LABELED_ITEM_TABLES,
    BenchError,
    BulkLoader,
    Database,
    Server,
    Setup,
    Source,
    add_backends_option,
    api_client,
    bulk_loader,
    code_version,
    expect,
    find_debian_data,
    item_heads,
    load_average,
    load_sources,
    machine,
    migrated_server,
    on_each_database,
    postgres_version,
    progress,
    setup_table,
    source_digest,
    table,
    timed,
)

from app.models.base import utcnow

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ADMIN_KEY = "lw_" + "e" * 43
ANNOTATOR = "ann-1"
TARGET_MIB = 300
TIMEOUT_S = 3600.0
FORMATS = ("jsonl", "csv", "parquet")
RELABEL_EVERY = 100  # 1% of the items
ANNOTATION_BATCH = 10_000  # the server's limit per POST .../annotations
DIFF_LIMIT = 1000

TABLES = LABELED_ITEM_TABLES


# --- loading -------------------------------------------------------------------------------------


def item_rows(
    loader: BulkLoader, project_id: int, sources: list[Source], count: int, created: datetime
) -> Iterator[tuple[Any, ...]]:
    """Items labeled by consensus with their source's section (one answer settles them)."""
    created_at = loader.time(created)
    updated_at = loader.time(created + timedelta(hours=1))
    for source, head in item_heads(sources, count, project_id):
        yield (*head, "labeled", source.label, "consensus", 1.0, created_at, updated_at)


def annotation_rows(
    loader: BulkLoader, project_id: int, sources: list[Source], count: int, created: datetime
) -> Iterator[tuple[Any, ...]]:
    """One current human answer per item by ANNOTATOR: the source's section (ids 1..count)."""
    answered_at = loader.time(created + timedelta(minutes=30))
    for position in range(count):
        label = sources[position % len(sources)].label
        yield (
            position + 1,
            project_id,
            position + 1,
            ANNOTATOR,
            label,
            False,
            "human",
            5_000,
            True,
            answered_at,
        )


def populate(
    setup: Setup, database: Database, project_id: int, sources: list[Source], count: int
) -> None:
    with bulk_loader(database, TABLES) as loader:
        created = utcnow() - timedelta(days=1)
        setup.rows["item"] = timed(setup, f"load {count:,} items")(
            lambda: loader.load("item", item_rows(loader, project_id, sources, count, created))
        )
        setup.rows["annotation"] = timed(setup, f"load {count:,} annotations")(
            lambda: loader.load(
                "annotation", annotation_rows(loader, project_id, sources, count, created)
            )
        )
        finish = "setval + VACUUM ANALYZE" if loader.postgres else "WAL checkpoint"
        timed(setup, finish)(loader.finish)
        setup.size_mib = loader.size_mib()


# --- measuring -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Leg:
    """One timed request: its seconds, the server's peak RSS during it (and the RSS it
    started from), and for exports the body's size, lines, first-byte time and SHA-256."""

    name: str
    seconds: float
    peak_mib: float | None
    start_mib: float | None
    rows: int | None = None
    bytes: int | None = None
    lines: int | None = None
    first_byte_s: float | None = None
    sha256: str | None = None


@dataclass(slots=True)
class Run:
    setup: Setup
    legs: list[Leg] = field(default_factory=list)
    repeats: dict[str, tuple[str, str]] = field(default_factory=dict)  # format: first, second
    v1_again: str = ""
    relabeled: int = 0
    diff: dict[str, Any] = field(default_factory=dict)
    load: tuple[float, float] = (float("nan"), float("nan"))


def start_leg(server: Server) -> float | None:
    """Reset the server's VmHWM to its current RSS, and return that RSS."""
    server.reset_peak_rss()
    return server.peak_rss_mib()


def export(
    server: Server, client: httpx.Client, base: str, name: str, rows: int, **params: str
) -> Leg:
    """GET .../export streamed: hashed and counted as the bytes arrive, never held."""
    start = start_leg(server)
    digest = hashlib.sha256()
    size = lines = 0
    first_byte: float | None = None
    started = time.perf_counter()
    with client.stream("GET", f"{base}/export", params=params) as response:
        if response.status_code != 200:
            response.read()
            expect(response, 200, f"export {params}")
        for block in response.iter_bytes():
            if first_byte is None:
                first_byte = time.perf_counter() - started
            digest.update(block)
            size += len(block)
            lines += block.count(b"\n")
    seconds = time.perf_counter() - started
    leg = Leg(
        name,
        seconds,
        server.peak_rss_mib(),
        start,
        rows,
        size,
        lines,
        first_byte,
        digest.hexdigest(),
    )
    progress(
        f"{name}: {size / 2**20:.1f} MiB in {seconds:.1f} s, server peak {mib(leg.peak_mib)} MiB, "
        f"sha256 {leg.sha256[:12] if leg.sha256 else '?'}"
    )
    return leg


def freeze(server: Server, client: httpx.Client, base: str, name: str) -> tuple[Leg, Any]:
    start = start_leg(server)
    started = time.perf_counter()
    version = expect(client.post(f"{base}/dataset-versions", json={"name": name}), 201, name)
    seconds = time.perf_counter() - started
    leg = Leg(f"freeze {name}", seconds, server.peak_rss_mib(), start, rows=version["n_items"])
    progress(f"freeze {name}: {version['n_items']:,} items in {seconds:.1f} s")
    return leg, version


def relabel(
    server: Server,
    client: httpx.Client,
    project_id: int,
    sources: list[Source],
    labels: list[str],
    count: int,
) -> tuple[Leg, int]:
    """A second answer by ANNOTATOR on every RELABEL_EVERY-th item, with the next label."""
    ids = list(range(RELABEL_EVERY, count + 1, RELABEL_EVERY))
    start = start_leg(server)
    started = time.perf_counter()
    replaced = 0
    for first in range(0, len(ids), ANNOTATION_BATCH):
        entries = []
        for item_id in ids[first : first + ANNOTATION_BATCH]:
            old = sources[(item_id - 1) % len(sources)].label
            new = labels[(labels.index(old) + 1) % len(labels)]
            entries.append({"item_id": item_id, "label": new, "annotator": ANNOTATOR})
        answer = expect(
            client.post(f"/v1/projects/{project_id}/annotations", json=entries),
            200,
            "relabeling",
        )
        if answer["failed"] or answer["replaced"] != len(entries):
            raise BenchError(f"relabeling: expected {len(entries)} replaced: {answer}")
        replaced += answer["replaced"]
    seconds = time.perf_counter() - started
    progress(f"relabeled {replaced:,} items in {seconds:.1f} s")
    return Leg(
        "relabel 1% (POST annotations)", seconds, server.peak_rss_mib(), start, replaced
    ), replaced


def run_backend(database: Database, sources: list[Source], labels: list[str], count: int) -> Run:
    backend = database.backend
    run = Run(Setup(backend))
    setup = run.setup
    with (
        migrated_server(setup, database, ADMIN_KEY) as server,
        api_client(server, ADMIN_KEY, TIMEOUT_S) as client,
    ):
        body = {"name": "bench-export", "labels": labels, "phase": "production"}
        project = timed(setup, "HTTP: create the project")(
            lambda: expect(client.post("/v1/projects", json=body), 201, "creating the project")
        )
        project_id = int(project["id"])
        populate(setup, database, project_id, sources, count)
        progress(f"{backend}: setup {setup.total:.0f} s")
        run.load = (load_average(), run.load[1])
        base = f"/v1/projects/{project_id}"
        versions = f"{base}/dataset-versions"

        leg, v1 = freeze(server, client, base, "v1")
        run.legs.append(leg)
        if v1["n_items"] != count:
            raise BenchError(f"{backend}: v1 froze {v1['n_items']} items, not {count}")
        # parquet last: its first export imports pyarrow (and pandas) into the server for
        # good, which the other legs would otherwise carry in their RSS.
        for file_format in FORMATS:
            if file_format == "parquet":
                oversampled = export(
                    server,
                    client,
                    f"{versions}/1",
                    "export v1 jsonl oversample",
                    0,
                    format="jsonl",
                    balance="oversample",
                )
                oversampled.rows = oversampled.lines
                run.legs.append(oversampled)
            legs = [
                export(server, client, f"{versions}/1", name, count, format=file_format)
                for name in (f"export v1 {file_format}", f"export v1 {file_format} again")
            ]
            run.legs += legs
            run.repeats[file_format] = (legs[0].sha256 or "", legs[1].sha256 or "")

        leg, run.relabeled = relabel(server, client, project_id, sources, labels, count)
        run.legs.append(leg)
        leg, v2 = freeze(server, client, base, "v2")
        run.legs.append(leg)
        start = start_leg(server)
        started = time.perf_counter()
        run.diff = expect(
            client.get(f"{versions}/2/diff", params={"against": 1, "limit": DIFF_LIMIT}),
            200,
            "diff",
        )
        seconds = time.perf_counter() - started
        run.legs.append(
            Leg(f"diff v2 against v1 (limit {DIFF_LIMIT})", seconds, server.peak_rss_mib(), start)
        )
        progress(f"diff in {seconds:.2f} s: relabeled {run.diff['relabeled']:,}")
        again = export(
            server, client, f"{versions}/1", "export v1 jsonl after v2", count, format="jsonl"
        )
        run.legs.append(again)
        run.v1_again = again.sha256 or ""
        run.load = (run.load[0], load_average())
        if v2["n_items"] != count:
            raise BenchError(f"{backend}: v2 froze {v2['n_items']} items, not {count}")
    return run


# --- report --------------------------------------------------------------------------------------


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def report(runs: list[Run], count: int) -> list[str]:
    lines = [
        f"Setup (not timed into the figures): {count:,} labeled items, one answer each",
        *setup_table([run.setup for run in runs]),
        "",
    ]
    for run in runs:
        s = run.setup
        size = f"{s.size_mib:,.0f} MiB" if s.size_mib is not None else "?"
        lines.append(
            f"{s.backend}: "
            + ", ".join(f"{n:,} {name}" for name, n in s.rows.items())
            + f"; database {size} before the first freeze"
        )
    rows = []
    for run in runs:
        for leg in run.legs:
            rows.append(
                [
                    run.setup.backend,
                    leg.name,
                    f"{leg.seconds:.2f}",
                    "-" if leg.first_byte_s is None else f"{leg.first_byte_s:.2f}",
                    "-" if leg.bytes is None else f"{leg.bytes / 2**20:.1f}",
                    "-" if not leg.rows else f"{leg.rows:,}",
                    "-" if not leg.rows else f"{leg.rows / leg.seconds:,.0f}",
                    mib(leg.start_mib),
                    mib(leg.peak_mib),
                    "-" if leg.sha256 is None else leg.sha256[:12],
                ]
            )
    lines += [
        "",
        *table(
            [
                "database",
                "request",
                "s",
                "1st byte s",
                "MiB",
                "rows",
                "rows/s",
                "RSS before",
                "peak RSS",
                "sha256",
            ],
            rows,
            text_columns=2,
        ),
        "RSS before / peak RSS: the server's VmRSS when the leg started and its VmHWM during "
        "the leg (MiB)",
        f"1-minute load average before-after the timed legs on {os.cpu_count()} CPUs: "
        + ", ".join(f"{r.setup.backend} {r.load[0]:.1f}-{r.load[1]:.1f}" for r in runs),
        "",
    ]
    for run in runs:
        d = run.diff
        lines.append(
            f"{run.setup.backend}: diff v2 against v1: added {d['added']:,}, removed "
            f"{d['removed']:,}, relabeled {d['relabeled']:,}, text_changed {d['text_changed']:,}, "
            f"unchanged {d['unchanged']:,}; {len(d['items'])} items on the page "
            f"(relabeled through HTTP: {run.relabeled:,})"
        )
    lines.append("")
    for run in runs:
        backend = run.setup.backend
        for leg in run.legs:
            if leg.sha256 is None:
                continue
            ok = leg.peak_mib is not None and leg.peak_mib * 2**20 < TARGET_MIB * 1e6
            lines.append(
                f"{'PASS' if ok else 'FAIL'}: {backend}: {leg.name}: peak RSS "
                f"{mib(leg.peak_mib)} MiB (target < {TARGET_MIB} MB)"
            )
        for file_format, (first, second) in run.repeats.items():
            lines.append(
                f"{'PASS' if first == second else 'FAIL'}: {backend}: repeat {file_format} export "
                f"byte-identical ({first[:12]} / {second[:12]})"
            )
        original = run.repeats["jsonl"][0]
        lines.append(
            f"{'PASS' if run.v1_again == original else 'FAIL'}: {backend}: v1 jsonl unchanged "
            f"after relabeling and freezing v2 ({original[:12]} / {run.v1_again[:12]})"
        )
        d = run.diff
        right = (d["relabeled"], d["added"], d["removed"], d["text_changed"], d["unchanged"]) == (
            run.relabeled,
            0,
            0,
            0,
            count - run.relabeled,
        )
        lines.append(
            f"{'PASS' if right else 'FAIL'}: {backend}: diff counts: relabeled "
            f"{d['relabeled']:,} of {run.relabeled:,} relabeled, unchanged {d['unchanged']:,}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    add_backends_option(parser)
    args = parser.parse_args()
    if args.rows < RELABEL_EVERY:
        parser.error(f"--rows must be at least {RELABEL_EVERY}")
    path = find_debian_data()
    if path is None:
        return 1
    sources = load_sources(path)
    labels = sorted({s.label for s in sources})
    postgres_url = os.environ.get("LABELWISE_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    backends = [b for b in BACKENDS if b in args.only]
    digest = source_digest()
    runs, status = on_each_database(
        backends,
        postgres_url,
        f"labelwise_bench_export_{os.getpid()}",
        lambda database: run_backend(database, sources, labels, args.rows),
    )
    versions = [f"SQLite {sqlite3.sqlite_version}"]
    if any(run.setup.backend == "postgres" for run in runs):
        versions.append(f"PostgreSQL {postgres_version(postgres_url)}")
    print(
        f"code {code_version()}, app sources sha256 {digest}, {machine()}, "
        f"Python {sys.version.split()[0]}, {', '.join(versions)}, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    if runs:
        print("\n".join(report(runs, args.rows)))
    return status


if __name__ == "__main__":
    sys.exit(main())
