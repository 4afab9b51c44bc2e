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
import json
import math
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from common import (
    BACKENDS,
    ITEM_HEAD_COLUMNS,
    LOAD_CHUNK,
    BenchError,
    BulkLoader,
    Database,
    Server,
    Setup,
    Source,
    add_backends_option,
    api_client,
    bulk_loader,
    expect,
    expect_batch,
    find_debian_data,
    item_heads,
    load_average,
    load_sources,
    machine,
    migrated_server,
    ms,
    on_each_database,
    percentile,
    postgres_version,
    progress,
    setup_table,
    source_digest,
    table,
    timed,
    write_report,
)

from app.models.base import utcnow
from app.services.predictions import prediction_rows

DEFAULT_OUT = Path("/tmp/bench_batches.md")
ADMIN_KEY = "lw_bench_batches_admin_key_0123456789abcdef"
MODEL_VERSION = "bench-ext"
TARGET_P50_MS = 100.0
TARGET_P99_MS = 300.0
LABELED_SHARE = 0.02
IN_PROGRESS_SHARE = 0.003
PRIOR_ANNOTATORS = 20
SKIPS_PER_ANNOTATOR = 50
HISTORY_BATCH = 100
ALPHA_BASE = 0.3
ALPHA_TRUE = 2.0
SEED = 20_260_101
THREADS = 4
REQUEST_TIMEOUT_S = 120.0


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
class PoolSetup(Setup):
    """The setup, and the app sources the server started from."""

    code: str = ""  # source_digest() when the server started


# --- data ----------------------------------------------------------------------------------


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

ITEM_COLUMNS = f"{ITEM_HEAD_COLUMNS}, status, resolved_label, resolved_by, created_at, updated_at"
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


def item_rows(
    loader: BulkLoader, project_id: int, sources: list[Source], plan: PoolPlan, when: datetime
) -> Iterator[tuple[Any, ...]]:
    stamp = loader.time(when)
    status_names = ("unlabeled", "labeled", "in_progress")
    for position, (source, head) in enumerate(item_heads(sources, plan.size, project_id)):
        status = int(plan.status[position])
        yield (
            *head,
            status_names[status],
            source.label if status == 1 else None,
            "consensus" if status == 1 else None,
            stamp,
            stamp,
        )


def prediction_table_rows(
    loader: BulkLoader,
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
    loader: BulkLoader,
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


def populate(
    setup: PoolSetup,
    database: Database,
    project_id: int,
    sources: list[Source],
    labels: list[str],
    plan: PoolPlan,
) -> None:
    with bulk_loader(database, TABLES) as loader:
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
            timed(setup, "setval + VACUUM ANALYZE")(loader.finish)
        else:
            loader.finish()  # the WAL checkpoint, not a setup step of its own
        setup.size_mib = loader.size_mib()


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
        batch = expect_batch(response, f"{self.variant.name}: POST batches")
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
        if batch["id"] is None:
            return  # nothing was handed out, so nothing was stored to release
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
    database: Database, args: argparse.Namespace, sources: list[Source], labels: list[str]
) -> tuple[PoolSetup, list[Result]]:
    backend = database.backend
    setup = PoolSetup(backend)
    annotators = [f"bench-{i:02d}" for i in range(1, args.annotators + 1)]
    plan = PoolPlan.draw(args.pool, annotators)
    results: list[Result] = []
    setup.code = source_digest()
    with migrated_server(setup, database, ADMIN_KEY) as server:
        with api_client(server, ADMIN_KEY, REQUEST_TIMEOUT_S) as admin:

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
        populate(setup, database, project_id, sources, labels, plan)
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


def report(setups: list[PoolSetup], results: list[Result], size: int, pool: int) -> list[str]:
    lines = [
        f"Setup (not timed into the figures): pool {pool:,} items",
        *setup_table(setups),
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
    add_backends_option(parser)
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
    path = find_debian_data()
    if path is None:
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
    done, status = on_each_database(
        backends,
        args.postgres_url,
        f"labelwise_bench_{os.getpid()}",
        lambda database: run_backend(database, args, sources, labels),
    )
    setups = [setup for setup, _ in done]
    results = [result for _, found in done for result in found]
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
    write_report(args.out, "bench/batches.py", lines)
    return status


if __name__ == "__main__":
    sys.exit(main())
