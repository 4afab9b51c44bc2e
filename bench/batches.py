"""Batch selection benchmark: POST /v1/projects/{id}/batches latency on a large scored pool.

The target (the issue): with a trained model and stored scores, a batch of 100 from a
1,000,000-item pool in p50 < 100 ms and p99 < 300 ms through HTTP, on SQLite and PostgreSQL.

Setup (not timed into the figures; its duration is reported), per database: a fresh migrated
database (a SQLite file in a temporary directory; with --postgres-url, a throwaway database
CREATEd on that loopback server and DROPped afterwards), a real `labelwise serve` subprocess
on it, and over HTTP the project (the 15 Debian sections, annotators_per_item=2 so that items
can be in progress) and --annotators annotator keys. Then, straight into the tables with SQL
(COPY on PostgreSQL, executemany in chunks on SQLite), what ingest, a score_pool job and a
while of annotation work would have left behind:

* --pool items: the Debian descriptions (../shared/data/debian-dev.jsonl.gz) cycled with a
  " [copy k <row id>]" suffix, so every text is unique after normalization; content_hash from
  app.services.items.content_hash; source manual, data {} and metadata {};
* one prediction per item for model_version "bench-ext" (source "external"): probabilities
  from a Dirichlet-like draw (gamma variates, alpha 0.3 per section plus 2.0 on the row's
  true section), rows built by app.services.predictions.prediction_rows, so confidence,
  margin, entropy and the rounded probability map are what the service itself stores. Every
  item has one: the pool was scored before the work below was done;
* prior work, spread uniformly over the ids: 2% of the pool labeled (two agreeing human
  annotations each by "prior-NN" annotators, status labeled, resolved by consensus) and 0.3%
  in progress (one human annotation, and a live lease held by a second prior annotator, so
  human answers + live leases already fill annotators_per_item: the in-progress step of
  every batch scans them all and none is eligible for the benchmark annotators). Each
  annotation has its answered lease in batches of 100 (history); each benchmark annotator
  skipped 50 random unlabeled items an hour ago (inside the skip cooldown).

On PostgreSQL the sequences are moved past the explicit ids and VACUUM ANALYZE runs after
the load (autovacuum would analyze such a table soon anyway); SQLite is left without
ANALYZE, as the service never runs it.

Measurement: httpx against the server, client-side wall time of each POST (the JSON body is
read; parsing is outside the clock). Every variant first sends --warmup untimed requests.
Annotators rotate request by request. Variants:

* margin, diverse_margin, random: model_version "bench-ext", each batch released with DELETE
  after it is timed, so every request sees the same pool (the DELETE is timed as "release");
* cold_start: no model_version and no active model, so the service falls back to a diverse
  cold start (hashed-text k-center over a uniform sample);
* margin x4 threads: the margin variant from 4 client threads at once, each with its own
  annotators; throughput in batches/s;
* margin accumulating: no DELETE, so the leases pile up (--requests batches of --size) and
  later requests must skip ever more leased low-margin items.

The margin sequential variant is the one the target is about. It is a benchmark, not a test:
the exit status is 0 whether the targets are met or not.

    .venv/bin/python bench/batches.py [--pool N] [--size N] [--requests N]
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--only sqlite,postgres]
"""

import argparse
import gzip
import hashlib
import json
import math
import os
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa
from common import (
    REPO,
    BenchError,
    Server,
    admin_engine,
    machine,
    running_server,
    service_env,
    throwaway_database,
)

from app.db import build_engine
from app.migrations import upgrade
from app.models.base import UTCDateTime, utcnow
from app.services.items import content_hash
from app.services.predictions import prediction_rows
from app.settings import Settings

DEFAULT_DATA = REPO.parent / "shared" / "data" / "debian-dev.jsonl.gz"
DEFAULT_OUT = Path("/tmp/bench_batches.md")
ADMIN_KEY = "lw_bench_batches_admin_key_0123456789abcdef"
MODEL_VERSION = "bench-ext"
BACKENDS = ("sqlite", "postgres")
TARGET_P50_MS = 100.0
TARGET_P99_MS = 300.0
LABELED_SHARE = 0.02
IN_PROGRESS_SHARE = 0.003
PRIOR_ANNOTATORS = 20
SKIPS_PER_ANNOTATOR = 50
LOAD_CHUNK = 20_000
HISTORY_BATCH = 100
ALPHA_BASE = 0.3
ALPHA_TRUE = 2.0
SEED = 20_260_101
THREADS = 4
REQUEST_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Source:
    id: str
    text: str
    label: str


@dataclass(slots=True)
class Variant:
    name: str
    strategy: str | None
    model_version: str | None
    requests: int
    release: bool = True
    threads: int = 1
    expected: str | None = None  # the strategy the service must report


@dataclass(slots=True)
class Result:
    backend: str
    variant: str
    seconds: list[float]
    releases: list[float] = field(default_factory=list)
    wall: float = 0.0
    threads: int = 1
    short: int = 0  # batches with fewer items than asked for
    explore: list[float] = field(default_factory=list)  # share of exploration items per batch
    sizes: list[int] = field(default_factory=list)  # items per batch
    load: tuple[float, float] = (math.nan, math.nan)  # 1-minute load average before, after


@dataclass(slots=True)
class Setup:
    backend: str
    steps: list[tuple[str, float]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    size_mib: float | None = None
    server_rss_mib: float | None = None
    code: str = ""  # source_digest() when the server started

    @property
    def total(self) -> float:
        return sum(seconds for _, seconds in self.steps)


# --- data ----------------------------------------------------------------------------------


def load_sources(path: Path) -> list[Source]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    if not rows:
        raise BenchError(f"{path} has no rows")
    return [Source(r["id"], r["text"], r["label"]) for r in rows]


@dataclass(slots=True)
class PoolPlan:
    """Who did what to which item, drawn once so both databases get the same pool."""

    size: int
    labeled: np.ndarray  # item positions (0-based; item id = position + 1)
    in_progress: np.ndarray
    skipped: dict[str, np.ndarray]  # benchmark annotator -> positions it skipped
    status: np.ndarray  # per position: 0 unlabeled, 1 labeled, 2 in progress

    @classmethod
    def draw(cls, size: int, annotators: list[str]) -> "PoolPlan":
        rng = np.random.default_rng(SEED)
        order = rng.permutation(size)
        n_labeled = round(size * LABELED_SHARE)
        n_progress = round(size * IN_PROGRESS_SHARE)
        labeled = np.sort(order[:n_labeled])
        in_progress = np.sort(order[n_labeled : n_labeled + n_progress])
        rest = order[n_labeled + n_progress :]
        skipped = {
            name: np.sort(rng.choice(rest, size=min(SKIPS_PER_ANNOTATOR, len(rest)), replace=False))
            for name in annotators
        }
        status = np.zeros(size, dtype=np.int8)
        status[labeled] = 1
        status[in_progress] = 2
        return cls(size, labeled, in_progress, skipped, status)


# --- loading -------------------------------------------------------------------------------

ITEM_COLUMNS = (
    "id, project_id, external_id, text, content_hash, data, metadata, source, status, "
    "resolved_label, resolved_by, created_at, updated_at"
)
PREDICTION_COLUMNS = (
    "id, project_id, item_id, model_version, source, label, confidence, margin, entropy, "
    "probabilities, created_at"
)
ANNOTATION_COLUMNS = (
    "id, project_id, item_id, annotator, label, abstain, source, is_current, created_at"
)
BATCH_COLUMNS = (
    "id, project_id, annotator, queue, requested_strategy, strategy, model_version, size, "
    "lease_expires_at, created_at, released_at"
)
LEASE_COLUMNS = (
    "id, batch_id, project_id, item_id, annotator, position, score, is_random, "
    "predicted_label, confidence, expires_at, released_at, outcome"
)
TABLES = {
    "item": ITEM_COLUMNS,
    "prediction": PREDICTION_COLUMNS,
    "batch": BATCH_COLUMNS,
    "lease": LEASE_COLUMNS,
    "annotation": ANNOTATION_COLUMNS,
}


class Loader:
    """Bulk rows into one table: COPY on PostgreSQL, executemany per chunk on SQLite.

    Rows are tuples in the table's column order, with JSON already serialized (json.dumps,
    as SQLAlchemy's JSON type does) and timestamps passed through `self.time`.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        processor = UTCDateTime().bind_processor(engine.dialect)
        self._time: Callable[[datetime], Any] = processor or (lambda value: value)

    def time(self, value: datetime | None) -> Any:
        return None if value is None else self._time(value)

    def load(self, table: str, rows: Iterable[tuple[Any, ...]]) -> int:
        columns = TABLES[table]
        count = 0
        if self.postgres:
            with self.engine.begin() as connection:
                driver = connection.connection.driver_connection
                assert driver is not None
                with (
                    driver.cursor() as cursor,
                    cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
                ):
                    for row in rows:
                        copy.write_row(row)
                        count += 1
            return count
        marks = ", ".join("?" * (columns.count(",") + 1))
        statement = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
        chunk: list[tuple[Any, ...]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= LOAD_CHUNK:
                count += self._insert(statement, chunk)
                chunk = []
        if chunk:
            count += self._insert(statement, chunk)
        return count

    def _insert(self, statement: str, rows: list[tuple[Any, ...]]) -> int:
        with self.engine.begin() as connection:
            connection.exec_driver_sql(statement, rows)
        return len(rows)


def item_rows(
    loader: Loader, project_id: int, sources: list[Source], plan: PoolPlan, when: datetime
) -> Iterator[tuple[Any, ...]]:
    stamp = loader.time(when)
    status_names = ("unlabeled", "labeled", "in_progress")
    for position in range(plan.size):
        k, index = divmod(position, len(sources))
        source = sources[index]
        text = f"{source.text} [copy {k} {source.id}]"
        status = int(plan.status[position])
        yield (
            position + 1,
            project_id,
            f"{source.id}-{k}",
            text,
            content_hash(text),
            "{}",
            "{}",
            "manual",
            status_names[status],
            source.label if status == 1 else None,
            "consensus" if status == 1 else None,
            stamp,
            stamp,
        )


def prediction_table_rows(
    loader: Loader,
    project_id: int,
    sources: list[Source],
    labels: list[str],
    size: int,
    when: datetime,
) -> Iterator[tuple[Any, ...]]:
    rng = np.random.default_rng(SEED + 1)
    column = {label: i for i, label in enumerate(labels)}
    truth = np.array([column[s.label] for s in sources])
    stamp = loader.time(when)
    for start in range(0, size, LOAD_CHUNK):
        stop = min(start + LOAD_CHUNK, size)
        alpha = np.full((stop - start, len(labels)), ALPHA_BASE)
        alpha[np.arange(stop - start), truth[np.arange(start, stop) % len(sources)]] += ALPHA_TRUE
        draws = rng.gamma(alpha)
        probabilities = draws / draws.sum(axis=1, keepdims=True)
        ids = list(range(start + 1, stop + 1))
        for row in prediction_rows(
            project_id=project_id,
            item_ids=ids,
            probabilities=probabilities,
            labels=labels,
            model_version=MODEL_VERSION,
            source="external",
        ):
            yield (
                row["item_id"],
                project_id,
                row["item_id"],
                row["model_version"],
                row["source"],
                row["label"],
                row["confidence"],
                row["margin"],
                row["entropy"],
                json.dumps(row["probabilities"]),
                stamp,
            )


@dataclass(slots=True)
class History:
    batches: list[tuple[Any, ...]] = field(default_factory=list)
    leases: list[tuple[Any, ...]] = field(default_factory=list)
    annotations: list[tuple[Any, ...]] = field(default_factory=list)


def work_history(
    loader: Loader,
    project_id: int,
    sources: list[Source],
    plan: PoolPlan,
    now: datetime,
) -> History:
    """Annotations of the labeled and in-progress items, their leases and batches, the live
    leases of the second annotators of in-progress items, and the benchmark annotators' skips."""
    rng = np.random.default_rng(SEED + 2)
    history = History()
    past = now - timedelta(days=3)
    answered_at = loader.time(past + timedelta(minutes=10))
    prior = [f"prior-{i:02d}" for i in range(1, PRIOR_ANNOTATORS + 1)]
    # (annotator, item position) pairs: answered ones and live ones.
    answered: dict[str, list[int]] = {name: [] for name in prior}
    live: dict[str, list[int]] = {name: [] for name in prior}
    for position in plan.labeled.tolist():
        first, second = rng.choice(PRIOR_ANNOTATORS, size=2, replace=False).tolist()
        answered[prior[first]].append(position)
        answered[prior[second]].append(position)
    for position in plan.in_progress.tolist():
        first, second = rng.choice(PRIOR_ANNOTATORS, size=2, replace=False).tolist()
        answered[prior[first]].append(position)
        live[prior[second]].append(position)

    def add_batches(
        annotator: str,
        positions: list[int],
        *,
        created: datetime,
        expires: datetime,
        released: datetime | None,
        outcome: str | None,
        batch_released: datetime | None = None,
    ) -> None:
        for start in range(0, len(positions), HISTORY_BATCH):
            chunk = positions[start : start + HISTORY_BATCH]
            batch_id = len(history.batches) + 1
            history.batches.append(
                (
                    batch_id,
                    project_id,
                    annotator,
                    "label",
                    None,
                    "margin",
                    MODEL_VERSION,
                    HISTORY_BATCH,
                    loader.time(expires),
                    loader.time(created),
                    loader.time(batch_released),
                )
            )
            for offset, position in enumerate(chunk):
                history.leases.append(
                    (
                        len(history.leases) + 1,
                        batch_id,
                        project_id,
                        position + 1,
                        annotator,
                        offset,
                        None,
                        False,
                        None,
                        None,
                        loader.time(expires),
                        loader.time(released),
                        outcome,
                    )
                )

    for name in prior:
        add_batches(
            name,
            answered[name],
            created=past,
            expires=past + timedelta(minutes=30),
            released=past + timedelta(minutes=10),
            outcome="answered",
        )
        for position in answered[name]:
            history.annotations.append(
                (
                    len(history.annotations) + 1,
                    project_id,
                    position + 1,
                    name,
                    sources[position % len(sources)].label,
                    False,
                    "human",
                    True,
                    answered_at,
                )
            )
    for name in prior:
        # The second annotator of each in-progress item is on it right now.
        add_batches(
            name,
            live[name],
            created=now - timedelta(minutes=5),
            expires=now + timedelta(days=1),
            released=None,
            outcome=None,
        )
    for name, positions in plan.skipped.items():
        skipped_at = now - timedelta(hours=1)
        add_batches(
            name,
            positions.tolist(),
            created=skipped_at - timedelta(minutes=5),
            expires=skipped_at + timedelta(minutes=25),
            released=skipped_at,
            outcome="skipped",
            batch_released=skipped_at,
        )
    return history


# --- the database and the server -----------------------------------------------------------


@contextmanager
def postgres_database(admin_url: str, name: str) -> Iterator[str]:
    """A throwaway database on the loopback server; yield its URL; always DROP it."""
    admin = admin_engine(admin_url)
    try:
        with throwaway_database(admin, name) as url:
            yield url
    finally:
        admin.dispose()


def expect(response: httpx.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        raise BenchError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
    return response.json() if response.content else None


def timed(setup: Setup, step: str) -> Callable[[Callable[[], Any]], Any]:
    def run(work: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = work()
        setup.steps.append((step, time.perf_counter() - started))
        progress(f"{setup.backend}: {step} in {setup.steps[-1][1]:.1f} s")
        return value

    return run


def populate(
    setup: Setup,
    database_url: str,
    workdir: Path,
    project_id: int,
    sources: list[Source],
    labels: list[str],
    plan: PoolPlan,
) -> None:
    engine = build_engine(Settings(database_url=database_url, data_dir=workdir))
    try:
        loader = Loader(engine)
        now = utcnow()
        created = now - timedelta(days=30)
        setup.rows["item"] = timed(setup, f"load {plan.size:,} items")(
            lambda: loader.load("item", item_rows(loader, project_id, sources, plan, created))
        )
        setup.rows["prediction"] = timed(setup, f"load {plan.size:,} predictions")(
            lambda: loader.load(
                "prediction",
                prediction_table_rows(loader, project_id, sources, labels, plan.size, created),
            )
        )

        def load_history() -> None:
            history = work_history(loader, project_id, sources, plan, now)
            setup.rows["batch"] = loader.load("batch", history.batches)
            setup.rows["lease"] = loader.load("lease", history.leases)
            setup.rows["annotation"] = loader.load("annotation", history.annotations)

        timed(setup, "load prior work (annotations, batches, leases)")(load_history)
        if loader.postgres:

            def finish_postgres() -> None:
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                    for table in TABLES:
                        connection.exec_driver_sql(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT max(id) FROM {table}))"
                        )
                    connection.exec_driver_sql("VACUUM ANALYZE")

            timed(setup, "setval + VACUUM ANALYZE")(finish_postgres)
            with engine.connect() as connection:
                size = connection.exec_driver_sql("SELECT pg_database_size(current_database())")
                setup.size_mib = size.scalar_one() / 2**20
        else:
            path = Path(engine.url.database or "")
            with engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            setup.size_mib = path.stat().st_size / 2**20
    finally:
        engine.dispose()


# --- measuring -----------------------------------------------------------------------------


def batch_body(variant: Variant, size: int) -> dict[str, Any]:
    body: dict[str, Any] = {"size": size}
    if variant.strategy is not None:
        body["strategy"] = variant.strategy
    if variant.model_version is not None:
        body["model_version"] = variant.model_version
    return body


@dataclass(slots=True)
class Sampler:
    """One client's sequential requests: POST a batch (timed), then DELETE it unless kept."""

    client: httpx.Client
    project_id: int
    variant: Variant
    size: int
    keys: list[tuple[str, str]]  # (annotator, secret), rotated request by request
    kept: list[tuple[str, int]] = field(default_factory=list)  # (secret, batch id)
    seconds: list[float] = field(default_factory=list)
    releases: list[float] = field(default_factory=list)
    explore: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    short: int = 0
    turn: int = 0

    def one(self, *, record: bool) -> None:
        _, secret = self.keys[self.turn % len(self.keys)]
        self.turn += 1
        headers = {"authorization": f"Bearer {secret}"}
        path = f"/v1/projects/{self.project_id}/batches"
        body = batch_body(self.variant, self.size)
        started = time.perf_counter()
        response = self.client.post(path, json=body, headers=headers)
        elapsed = time.perf_counter() - started
        batch = expect(response, 201, f"{self.variant.name}: POST batches")
        if self.variant.expected and batch["strategy"] != self.variant.expected:
            raise BenchError(
                f"{self.variant.name}: the service used {batch['strategy']!r}, "
                f"not {self.variant.expected!r}"
            )
        if record:
            self.seconds.append(elapsed)
            self.short += len(batch["items"]) < self.size
            self.sizes.append(len(batch["items"]))
            marked = sum(entry["exploration"] for entry in batch["items"])
            self.explore.append(marked / max(len(batch["items"]), 1))
        if not self.variant.release:
            self.kept.append((secret, batch["id"]))
            return
        started = time.perf_counter()
        response = self.client.delete(f"{path}/{batch['id']}", headers=headers)
        elapsed = time.perf_counter() - started
        expect(response, 204, f"{self.variant.name}: DELETE batch")
        if record:
            self.releases.append(elapsed)

    def release_kept(self) -> None:
        path = f"/v1/projects/{self.project_id}/batches"
        for secret, batch_id in self.kept:
            response = self.client.delete(
                f"{path}/{batch_id}", headers={"authorization": f"Bearer {secret}"}
            )
            expect(response, 204, "DELETE kept batch")
        self.kept.clear()


def run_variant(
    backend: str,
    server: Server,
    project_id: int,
    keys: list[tuple[str, str]],
    variant: Variant,
    size: int,
    warmup: int,
) -> Result:
    groups = [keys[i :: variant.threads] for i in range(variant.threads)]
    clients = [httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_S) for _ in groups]
    samplers = [
        Sampler(client, project_id, variant, size, group)
        for client, group in zip(clients, groups, strict=True)
    ]
    try:
        for sampler in samplers:
            for _ in range(warmup):
                sampler.one(record=False)
            sampler.release_kept()  # warm-up batches never stay leased
        shares = [
            variant.requests // variant.threads + (i < variant.requests % variant.threads)
            for i in range(variant.threads)
        ]
        errors: list[BaseException] = []
        gate = threading.Barrier(variant.threads)

        def work(sampler: Sampler, count: int) -> None:
            try:
                gate.wait()
                for _ in range(count):
                    sampler.one(record=True)
            except BaseException as error:  # reported by the main thread
                errors.append(error)

        load_before = load_average()
        threads = [
            threading.Thread(target=work, args=(sampler, count), daemon=True)
            for sampler, count in zip(samplers, shares, strict=True)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        if errors:
            raise errors[0]
        for sampler in samplers:
            sampler.release_kept()
    finally:
        for client in clients:
            client.close()
    result = Result(
        backend=backend,
        variant=variant.name,
        seconds=[s for sampler in samplers for s in sampler.seconds],
        releases=[s for sampler in samplers for s in sampler.releases],
        wall=wall,
        threads=variant.threads,
        short=sum(sampler.short for sampler in samplers),
        explore=[e for sampler in samplers for e in sampler.explore],
        sizes=[n for sampler in samplers for n in sampler.sizes],
        load=(load_before, load_average()),
    )
    progress(
        f"{backend}: {variant.name}: p50 {ms(percentile(result.seconds, 50))} ms, "
        f"p99 {ms(percentile(result.seconds, 99))} ms over {len(result.seconds)} requests"
    )
    return result


def variants(requests: int) -> list[Variant]:
    few = max(20, requests // 4)
    return [
        Variant("margin", "margin", MODEL_VERSION, requests, expected="margin"),
        Variant("diverse_margin", "diverse_margin", MODEL_VERSION, few, expected="diverse_margin"),
        Variant("random", "random", MODEL_VERSION, few, expected="random"),
        Variant("cold_start", None, None, few, expected="cold_start"),
        Variant(
            f"margin x{THREADS} threads",
            "margin",
            MODEL_VERSION,
            requests,
            threads=THREADS,
            expected="margin",
        ),
        # Last: its leases change the pool (they are released when it ends).
        Variant(
            "margin accumulating",
            "margin",
            MODEL_VERSION,
            requests,
            release=False,
            expected="margin",
        ),
    ]


def run_backend(
    backend: str,
    database_url: str,
    workdir: Path,
    args: argparse.Namespace,
    sources: list[Source],
    labels: list[str],
) -> tuple[Setup, list[Result]]:
    setup = Setup(backend)
    annotators = [f"bench-{i:02d}" for i in range(1, args.annotators + 1)]
    plan = PoolPlan.draw(args.pool, annotators)
    timed(setup, "migrate")(lambda: upgrade(database_url))
    env = service_env(database_url, workdir, bootstrap_admin_key=ADMIN_KEY)
    results: list[Result] = []
    started = time.perf_counter()
    setup.code = source_digest()
    with running_server(env, workdir / "server.log") as server:
        setup.steps.append(("start the server", time.perf_counter() - started))
        with httpx.Client(
            base_url=server.url,
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            timeout=REQUEST_TIMEOUT_S,
        ) as admin:

            def http_setup() -> tuple[int, list[tuple[str, str]]]:
                project = expect(
                    admin.post(
                        "/v1/projects",
                        json={
                            "name": "bench-batches",
                            "labels": labels,
                            "annotators_per_item": 2,
                        },
                    ),
                    201,
                    "create project",
                )
                keys = []
                for name in annotators:
                    created = expect(
                        admin.post("/v1/api-keys", json={"name": name, "role": "annotator"}),
                        201,
                        f"create key {name}",
                    )
                    keys.append((name, created["key"]))
                return int(project["id"]), keys

            project_id, keys = timed(setup, "HTTP: project and annotator keys")(http_setup)
        populate(setup, database_url, workdir, project_id, sources, labels, plan)
        progress(
            f"{backend}: setup {setup.total:.0f} s, "
            + ", ".join(f"{count:,} {table}" for table, count in setup.rows.items())
        )
        for variant in variants(args.requests):
            results.append(
                run_variant(backend, server, project_id, keys, variant, args.size, args.warmup)
            )
        setup.server_rss_mib = server.peak_rss_mib()
    return setup, results


# --- report --------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def table(header: list[str], rows: list[list[str]], *, text_columns: int = 1) -> list[str]:
    """Aligned columns: the first `text_columns` to the left, the figures to the right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def cells(values: list[str]) -> str:
        return "  ".join(
            v.ljust(w) if i < text_columns else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    line = cells(header)
    return [line, "-" * len(line), *(cells(row) for row in rows)]


def report(setups: list[Setup], results: list[Result], size: int, pool: int) -> list[str]:
    lines = [
        f"Setup (not timed into the figures): pool {pool:,} items",
        *table(
            ["database", "step", "seconds"],
            [
                [s.backend, step, f"{seconds:.1f}"]
                for s in setups
                for step, seconds in [*s.steps, ("total", s.total)]
            ],
            text_columns=2,
        ),
        "",
    ]
    for s in setups:
        size_text = f"{s.size_mib:,.0f} MiB" if s.size_mib is not None else "?"
        rss = f"{s.server_rss_mib:,.0f} MiB" if s.server_rss_mib is not None else "?"
        lines.append(
            f"{s.backend}: "
            + ", ".join(f"{count:,} {table}" for table, count in s.rows.items())
            + f"; database {size_text}; server peak RSS {rss}; app sources {s.code} at start"
        )
    rows = []
    for r in results:
        rate = f"{len(r.seconds) / r.wall:.1f}" if r.wall else "-"
        rows.append(
            [
                r.backend,
                r.variant,
                f"{len(r.seconds)}",
                ms(percentile(r.seconds, 50)),
                ms(percentile(r.seconds, 95)),
                ms(percentile(r.seconds, 99)),
                ms(max(r.seconds)) if r.seconds else "-",
                rate,
                ms(percentile(r.releases, 50)) if r.releases else "-",
                f"{100 * float(np.mean(r.explore)):.0f}%" if r.explore else "-",
                f"{r.short} (min {min(r.sizes)})" if r.short else "0",
                f"{r.load[0]:.1f}-{r.load[1]:.1f}",
            ]
        )
    lines += [
        "",
        f"POST /v1/projects/{{id}}/batches, size {size}: client-side latency (ms)",
        *table(
            [
                "database",
                "variant",
                "requests",
                "p50",
                "p95",
                "p99",
                "max",
                "batches/s",
                "DELETE p50",
                "explore",
                "short",
                "load",
            ],
            rows,
            text_columns=2,
        ),
        "explore: mean share of items marked exploration; short: batches with fewer than "
        f"{size} items (the smallest); load: 1-minute load average before-after the variant "
        f"on {os.cpu_count()} CPUs",
        "",
    ]
    for r in results:
        if r.variant != "margin":
            continue
        p50, p99 = percentile(r.seconds, 50) * 1e3, percentile(r.seconds, 99) * 1e3
        ok = p50 < TARGET_P50_MS and p99 < TARGET_P99_MS
        lines.append(
            f"{'PASS' if ok else 'FAIL'}: {r.backend}: margin batch of {size} from "
            f"{pool:,} items: p50 {p50:.1f} ms (target < {TARGET_P50_MS:.0f}), "
            f"p99 {p99:.1f} ms (target < {TARGET_P99_MS:.0f})"
        )
    return lines


def load_average() -> float:
    """The 1-minute load average: other work on the machine shows in the figures."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return math.nan


def source_digest() -> str:
    """A fingerprint of the service code measured (app/**/*.py), without asking git."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "app").rglob("*.py")):
        digest.update(path.relative_to(REPO).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def postgres_version(url: str) -> str:
    engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            return str(connection.exec_driver_sql("SHOW server_version").scalar_one())
    except sa.exc.OperationalError:
        return "unreachable"
    finally:
        engine.dispose()


def parse_backends(value: str) -> set[str]:
    aliases = {"postgresql": "postgres"}
    chosen = {aliases.get(p.strip(), p.strip()) for p in value.split(",") if p.strip()}
    if not chosen or chosen - set(BACKENDS):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(BACKENDS)} (comma-separated)")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pool", type=int, default=1_000_000, help="items in the pool")
    parser.add_argument("--size", type=int, default=100, help="items per batch")
    parser.add_argument("--requests", type=int, default=200, help="timed margin requests")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per client")
    parser.add_argument("--annotators", type=int, default=8, help="annotator keys to rotate")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("LABELWISE_BENCH_POSTGRES_URL"),
        help="a loopback server where the benchmark may CREATE and DROP a database "
        "(postgresql+psycopg://postgres@127.0.0.1:5432/test); without it, SQLite only",
    )
    parser.add_argument(
        "--only",
        type=parse_backends,
        default=set(BACKENDS),
        metavar="BACKENDS",
        help="comma-separated, from sqlite,postgres",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown report")
    args = parser.parse_args(argv)
    if min(args.pool, args.size, args.requests, args.annotators) < 1 or args.warmup < 0:
        parser.error("--pool, --size, --requests and --annotators must be positive")
    if args.annotators < THREADS:
        parser.error(f"--annotators must be at least {THREADS} (one per client thread)")
    if args.pool < 10 * args.size * (args.requests + args.warmup):
        print(
            "warning: the accumulating variant may drain a pool this small",
            file=sys.stderr,
        )
    path = Path(os.environ.get("LABELWISE_DEBIAN_DATA") or DEFAULT_DATA)
    if not path.is_file():
        print(f"no data at {path}; set LABELWISE_DEBIAN_DATA", file=sys.stderr)
        return 2
    sources = load_sources(path)
    labels = sorted({s.label for s in sources})
    backends = [b for b in BACKENDS if b in args.only]
    if "postgres" in backends and not args.postgres_url:
        print("postgres: skipped, no --postgres-url", file=sys.stderr)
        backends.remove("postgres")
    print(
        f"{len(sources)} rows from {path}; pool {args.pool:,}; {', '.join(backends)}",
        file=sys.stderr,
    )

    # A SIGTERM unwinds like Ctrl-C, so the finally blocks stop the server and drop databases.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    setups: list[Setup] = []
    results: list[Result] = []
    status = 0
    try:
        for backend in backends:
            with tempfile.TemporaryDirectory(prefix="labelwise-bench-") as tmp:
                if backend == "sqlite":
                    url = f"sqlite:///{Path(tmp) / 'labelwise.db'}"
                    setup, found = run_backend(backend, url, Path(tmp), args, sources, labels)
                else:
                    name = f"labelwise_bench_{os.getpid()}"
                    with postgres_database(args.postgres_url, name) as url:
                        setup, found = run_backend(backend, url, Path(tmp), args, sources, labels)
            setups.append(setup)
            results += found
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        status = 1
    versions = [f"SQLite {sqlite3.sqlite_version}"]
    if "postgres" in backends:
        versions.append(f"PostgreSQL {postgres_version(args.postgres_url)}")
    header = [
        f"app sources sha256 {source_digest()}, {machine()}, Python {sys.version.split()[0]}, "
        f"{', '.join(versions)}, {time.strftime('%Y-%m-%d %H:%M')}",
        f"pool {args.pool:,}, batch size {args.size}, {args.requests} margin requests, "
        f"{args.annotators} annotators, {args.warmup} warm-up requests per client",
    ]
    lines = [*header, "", *report(setups, results, args.size, args.pool)] if results else header
    print("\n".join(lines))
    command = " ".join([".venv/bin/python", "bench/batches.py", *sys.argv[1:]])
    args.out.write_text(
        "# bench/batches.py\n\n"
        f"Command (from the repository root): `{command}`\n\n"
        f"Machine: {machine()}\n\n```\n" + "\n".join(lines) + "\n```\n"
    )
    print(f"wrote {args.out}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
