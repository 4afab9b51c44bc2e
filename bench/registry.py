"""Model registry benchmark: training, scoring beside raw predict_proba, the pool-scoring job, and
API latency while a model trains.

Four sections (--only picks some), for each --algorithm, in one run on one machine:

* train: app.registry.training.train() on --labels Debian descriptions (features fit, 5-fold
  cross-validation, final fit), then the skops artifact: dump and load time, size.
* score: the pool is the 10,330 Debian texts repeated to --pool rows. A 1M-row TF-IDF matrix
  with character n-grams would take ~8 GB, so the unique texts are featurized ONCE (timed
  and reported on its own: a per-text cost that raw predict_proba does not pay) and the pool
  is that matrix repeated, the last repetition truncated. RAW is classifier.predict_proba on
  every repetition; REGISTRY is the scoring job's own path over the very same rows in chunks
  of --chunk: probabilities_from_features + summarize, and prediction_rows (the dict rows the
  job upserts) in a column of its own. The two alternate over --rounds rounds, so machine noise
  hits both; the fastest round of each is reported. Chunk matrices are zero-copy views of
  the base matrix, built outside the clock. Targets: 1M rows in < 60 s, within 1.5x of raw.
* e2e: a real server (`labelwise serve`, a subprocess) on a fresh SQLite database (and on
  PostgreSQL with --postgres-url): --e2e-pool unique items ingested over HTTP, --e2e-labels of
  them annotated with their true labels, a training job with activate=true, and its
  follow-up score_pool job timed from the job row (started_at to finished_at): DB read,
  featurization, prediction, uncertainty and upsert, chunk by chunk.
* api: a real server on a fresh SQLite database with --labels annotated items. Sequential
  GET /v1/projects/{id} latencies while idle (before and after) and while a training job runs
  in the server's embedded job runner (a child process of the server).

It is a benchmark, not a test: the exit status is 0 whether the targets are met or not.

    .venv/bin/python bench/registry.py [--algorithm tfidf_logreg|hashing_sgd|all]
        [--pool N] [--labels N] [--chunk N] [--e2e-pool N] [--only train,score,e2e,api]
"""

import argparse
import gc
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import scipy.sparse as sp
from common import (
    DEBIAN_DATA,
    BenchError,
    Server,
    Source,
    api_client,
    code_version,
    expect,
    load_sources,
    percentile,
    postgres_database,
    progress,
    running_server,
    service_env,
    table,
)
from common import machine as common_machine
from threadpoolctl import threadpool_info

from app.main import tune_garbage_collector
from app.migrations import upgrade
from app.ml.uncertainty import summarize
from app.registry.algorithms import get_algorithm
from app.registry.store import dump_pipeline, load_pipeline
from app.registry.training import featurize, probabilities_from_features, train
from app.services.predictions import prediction_rows

ALGORITHMS = ("tfidf_logreg", "hashing_sgd")
SECTIONS = ("train", "score", "e2e", "api")
ADMIN_KEY = "lw_bench_registry_admin_key_0123456789abcdef"
TARGET_SECONDS = 60.0
TARGET_RATIO = 1.5
TARGET_POOL = 1_000_000
INGEST_BATCH = 10_000  # the server's max_items_per_request
ANNOTATE_BATCH = 2_000
JOB_TIMEOUT_S = 3_600.0
POLL_S = 0.5
REQUEST_TIMEOUT_S = 900.0


# --- data ----------------------------------------------------------------------------------


def sample(rows: list[Source], count: int) -> list[Source]:
    """`count` rows (all of them if count exceeds), in a fixed shuffled order."""
    order = np.random.default_rng(0).permutation(len(rows))
    return [rows[i] for i in order[: min(count, len(rows))]]


def unique_items(rows: list[Source], count: int) -> tuple[list[dict[str, Any]], list[str]]:
    """`count` items cycled from the rows; " #<position>" keeps every text unique (the file
    has only 9,069 distinct texts after normalization), and a number token unique to one
    item is dropped by min_df=2, so it does not help the model."""
    items, labels = [], []
    for position in range(count):
        row = rows[position % len(rows)]
        items.append({"external_id": f"{row.id}-{position}", "text": f"{row.text} #{position}"})
        labels.append(row.label)
    return items, labels


# --- 1. training ---------------------------------------------------------------------------


@dataclass(slots=True)
class TrainResult:
    algorithm: str
    labels: int
    seconds: float
    features_seconds: float
    accuracy: float
    macro_f1: float
    dump_seconds: float
    load_seconds: float
    artifact_bytes: int
    pipeline: Any = field(repr=False)
    classes: list[str] = field(repr=False)


def run_train(name: str, rows: list[Source], count: int) -> TrainResult:
    algorithm = get_algorithm(name)
    params = algorithm.resolve_params({})
    chosen = sample(rows, count)
    texts, labels = [r.text for r in chosen], [r.label for r in chosen]
    gc.collect()
    started = time.perf_counter()
    algorithm.pipeline(params).named_steps["features"].fit_transform(texts)
    features_seconds = time.perf_counter() - started
    progress(f"{name}: features fit on {len(texts)} texts in {features_seconds:.2f} s")
    started = time.perf_counter()
    trained = train(algorithm, params, texts, labels)
    seconds = time.perf_counter() - started
    progress(f"{name}: train() on {len(texts)} labels in {seconds:.2f} s")
    started = time.perf_counter()
    content = dump_pipeline(trained.pipeline)
    dump_seconds = time.perf_counter() - started
    started = time.perf_counter()
    loaded = load_pipeline(content)
    load_seconds = time.perf_counter() - started
    probe = texts[:500]
    expected = probabilities_from_features(
        trained.pipeline, featurize(trained.pipeline, probe), len(trained.labels)
    )
    got = probabilities_from_features(loaded, featurize(loaded, probe), len(trained.labels))
    if not np.allclose(expected, got):
        raise BenchError(f"{name}: the loaded artifact predicts differently from the original")
    return TrainResult(
        algorithm=name,
        labels=len(texts),
        seconds=seconds,
        features_seconds=features_seconds,
        accuracy=float(trained.metrics["accuracy"]),
        macro_f1=float(trained.metrics["macro_f1"]),
        dump_seconds=dump_seconds,
        load_seconds=load_seconds,
        artifact_bytes=len(content),
        pipeline=loaded,  # the job scores with the pipeline it loads from the artifact
        classes=trained.labels,
    )


# --- 2. scoring throughput -----------------------------------------------------------------


@dataclass(slots=True)
class ScoreResult:
    algorithm: str
    pool: int
    chunk: int
    unique_texts: int
    featurize_seconds: float
    raw: list[float] = field(default_factory=list)
    proba: list[float] = field(default_factory=list)
    summarize: list[float] = field(default_factory=list)
    rows: list[float] = field(default_factory=list)

    @property
    def registry(self) -> list[float]:
        return [p + s for p, s in zip(self.proba, self.summarize, strict=True)]

    @property
    def job_path(self) -> list[float]:
        """What _score_chunk runs after featurizing: probabilities, then prediction_rows
        (which calls summarize itself)."""
        return [p + r for p, r in zip(self.proba, self.rows, strict=True)]

    def scale(self, seconds: float) -> float:
        """Seconds for TARGET_POOL rows at the rate measured over self.pool rows."""
        return seconds * TARGET_POOL / self.pool


def row_view(matrix: sp.csr_matrix, start: int, stop: int) -> sp.csr_matrix:
    """Rows [start, stop) as a CSR matrix sharing the data and indices arrays (no copy)."""
    low, high = matrix.indptr[start], matrix.indptr[stop]
    return sp.csr_matrix(
        (
            matrix.data[low:high],
            matrix.indices[low:high],
            matrix.indptr[start : stop + 1] - low,
        ),
        shape=(stop - start, matrix.shape[1]),
        copy=False,
    )


def pool_rows(matrix: sp.csr_matrix, start: int, stop: int) -> sp.csr_matrix:
    """Rows [start, stop) of the pool, i.e. of `matrix` repeated end to end."""
    n = matrix.shape[0]
    pieces = []
    position = start
    while position < stop:
        offset = position % n
        take = min(n - offset, stop - position)
        pieces.append(row_view(matrix, offset, offset + take))
        position += take
    return pieces[0] if len(pieces) == 1 else sp.vstack(pieces, format="csr")


def time_raw(classifier: Any, matrix: sp.csr_matrix, pool: int) -> float:
    n = matrix.shape[0]
    elapsed = 0.0
    for repetition in range(math.ceil(pool / n)):
        rows = min(n, pool - repetition * n)
        block = matrix if rows == n else row_view(matrix, 0, rows)
        started = time.perf_counter()
        classifier.predict_proba(block)
        elapsed += time.perf_counter() - started
    return elapsed


def time_registry(
    trained: TrainResult, matrix: sp.csr_matrix, pool: int, chunk: int, *, with_rows: bool
) -> tuple[float, float, float]:
    pipeline, labels = trained.pipeline, trained.classes
    proba = summary = rows = 0.0
    for start in range(0, pool, chunk):
        stop = min(start + chunk, pool)
        block = pool_rows(matrix, start, stop)
        item_ids = list(range(start + 1, stop + 1))
        t0 = time.perf_counter()
        probabilities = probabilities_from_features(pipeline, block, len(labels))
        t1 = time.perf_counter()
        summarize(probabilities)
        t2 = time.perf_counter()
        proba += t1 - t0
        summary += t2 - t1
        if with_rows:
            prediction_rows(
                project_id=1,
                item_ids=item_ids,
                probabilities=probabilities,
                labels=labels,
                model_version="registry:1",
                source="registry",
            )
            rows += time.perf_counter() - t2
    return proba, summary, rows


def run_score(
    trained: TrainResult, rows: list[Source], pool: int, chunk: int, rounds: int, with_rows: bool
) -> ScoreResult:
    texts = [r.text for r in rows]
    featurize_times = []
    matrix = None
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        matrix = featurize(trained.pipeline, texts)
        featurize_times.append(time.perf_counter() - started)
    matrix = sp.csr_matrix(matrix)
    result = ScoreResult(
        algorithm=trained.algorithm,
        pool=pool,
        chunk=chunk,
        unique_texts=len(texts),
        featurize_seconds=min(featurize_times),
    )
    progress(
        f"{trained.algorithm}: featurized {len(texts)} texts in {result.featurize_seconds:.2f} s "
        f"({matrix.shape[1]} features, {matrix.nnz / matrix.shape[0]:.0f} non-zeros per row)"
    )
    classifier = trained.pipeline.named_steps["classifier"]
    # The job runs in the server process, which tunes the collector this way at start-up.
    gc.collect()
    tune_garbage_collector()
    for round_number in range(rounds):
        legs = ["raw", "registry"] if round_number % 2 == 0 else ["registry", "raw"]
        for leg in legs:
            if leg == "raw":
                result.raw.append(time_raw(classifier, matrix, pool))
            else:
                proba, summary, dict_rows = time_registry(
                    trained, matrix, pool, chunk, with_rows=with_rows
                )
                result.proba.append(proba)
                result.summarize.append(summary)
                result.rows.append(dict_rows)
        progress(
            f"{trained.algorithm}: round {round_number + 1}: raw {result.raw[-1]:.2f} s, "
            f"registry {result.registry[-1]:.2f} s, prediction_rows {result.rows[-1]:.2f} s"
        )
    return result


# --- the server ----------------------------------------------------------------------------


@contextmanager
def running_registry_server(database_url: str, workdir: Path, chunk: int) -> Iterator[Server]:
    """A migrated database and a server on it with a bootstrap admin key."""
    upgrade(database_url)
    env = service_env(
        database_url,
        workdir,
        bootstrap_admin_key=ADMIN_KEY,
        job_runner="inprocess",
        scoring_chunk_size=str(chunk),
    )
    with running_server(env, workdir / "server.log") as server:
        yield server


def new_project(client: httpx.Client, name: str, labels: list[str]) -> int:
    body = expect(
        client.post("/v1/projects", json={"name": name, "labels": labels, "phase": "production"}),
        201,
        "create project",
    )
    project_id: int = body["id"]
    return project_id


def ingest(client: httpx.Client, project_id: int, items: list[dict[str, Any]]) -> list[int]:
    ids: list[int] = []
    for start in range(0, len(items), INGEST_BATCH):
        batch = items[start : start + INGEST_BATCH]
        report = expect(
            client.post(f"/v1/projects/{project_id}/items", json=batch), 200, "ingest items"
        )
        if report["created"] != len(batch):
            raise BenchError(f"ingest: {len(batch)} sent, {report['created']} created")
        ids.extend(result["id"] for result in report["results"])
    return ids


def annotate(client: httpx.Client, project_id: int, pairs: list[tuple[int, str]]) -> None:
    for start in range(0, len(pairs), ANNOTATE_BATCH):
        batch = [
            {"item_id": i, "label": label} for i, label in pairs[start : start + ANNOTATE_BATCH]
        ]
        report = expect(
            client.post(f"/v1/projects/{project_id}/annotations", json=batch),
            200,
            "annotate",
        )
        if report["failed"]:
            raise BenchError(f"annotate: {report['failed']} of {len(batch)} failed")


def start_training(client: httpx.Client, project_id: int, algorithm: str, activate: bool) -> int:
    job = expect(
        client.post(
            f"/v1/projects/{project_id}/models",
            json={"algorithm": algorithm, "activate": activate},
        ),
        202,
        "start training",
    )
    job_id: int = job["id"]
    return job_id


def get_job(client: httpx.Client, job_id: int) -> dict[str, Any]:
    job: dict[str, Any] = expect(client.get(f"/v1/jobs/{job_id}"), 200, f"job {job_id}")
    return job


def wait_job(client: httpx.Client, job_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = get_job(client, job_id)
        if job["status"] == "succeeded":
            return job
        if job["status"] in ("failed", "cancelled"):
            raise BenchError(f"job {job_id} ({job['kind']}) {job['status']}: {job['error']}")
        time.sleep(POLL_S)
    raise BenchError(f"job {job_id} did not finish within {JOB_TIMEOUT_S:.0f} s")


def job_seconds(job: dict[str, Any]) -> float:
    started = datetime.fromisoformat(job["started_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    return (finished - started).total_seconds()


# --- 3. the pool-scoring job end to end ----------------------------------------------------


@dataclass(slots=True)
class E2EResult:
    database: str
    algorithm: str
    items: int
    labeled: int
    ingest_seconds: float
    train_seconds: float
    scored: int
    score_seconds: float

    @property
    def rate(self) -> float:
        return self.scored / self.score_seconds


def e2e_leg(
    database: str,
    database_url: str,
    workdir: Path,
    algorithm: str,
    rows: list[Source],
    count: int,
    labeled: int,
    chunk: int,
) -> E2EResult:
    items, labels = unique_items(rows, count)
    labeled = min(labeled, count // 2)
    chosen = sorted({position * count // labeled for position in range(labeled)})
    with (
        running_registry_server(database_url, workdir, chunk) as server,
        api_client(server, ADMIN_KEY, REQUEST_TIMEOUT_S) as client,
    ):
        project_id = new_project(client, f"bench-e2e-{algorithm}", sorted(set(labels)))
        started = time.perf_counter()
        ids = ingest(client, project_id, items)
        ingest_seconds = time.perf_counter() - started
        annotate(client, project_id, [(ids[p], labels[p]) for p in chosen])
        progress(
            f"{database} {algorithm}: {count} items ingested in {ingest_seconds:.1f} s, "
            f"{len(chosen)} annotated; training"
        )
        train_job = wait_job(client, start_training(client, project_id, algorithm, True))
        scoring_id = train_job["result"]["scoring_job_id"]
        if scoring_id is None:
            raise BenchError("the training job started no scoring job")
        score_job = wait_job(client, scoring_id)
    result = E2EResult(
        database=database,
        algorithm=algorithm,
        items=count,
        labeled=len(chosen),
        ingest_seconds=ingest_seconds,
        train_seconds=job_seconds(train_job),
        scored=int(score_job["result"]["scored"]),
        score_seconds=job_seconds(score_job),
    )
    progress(
        f"{database} {algorithm}: score_pool scored {result.scored} items in "
        f"{result.score_seconds:.1f} s ({result.rate:,.0f} items/s)"
    )
    return result


def run_e2e(args: argparse.Namespace, algorithm: str, rows: list[Source]) -> list[E2EResult]:
    results = []
    leg = (algorithm, rows, args.e2e_pool, args.e2e_labels, args.chunk)
    with tempfile.TemporaryDirectory(prefix="labelwise-bench-") as tmp:
        results.append(
            e2e_leg("sqlite", f"sqlite:///{Path(tmp) / 'labelwise.db'}", Path(tmp), *leg)
        )
    if args.postgres_url:
        name = f"labelwise_bench_registry_{os.getpid()}"
        with (
            tempfile.TemporaryDirectory(prefix="labelwise-bench-") as tmp,
            postgres_database(args.postgres_url, name, "postgresql: skipped, unreachable") as url,
        ):
            if url is not None:
                results.append(e2e_leg("postgresql", url, Path(tmp), *leg))
    return results


# --- 4. API latency during training --------------------------------------------------------


@dataclass(slots=True)
class ApiResult:
    algorithm: str
    labels: int
    idle: list[float]
    busy: list[float]
    train_seconds: float


def latencies(
    client: httpx.Client, path: str, interval: float, *, count: int = 0, job_id: int = 0
) -> list[float]:
    """Sequential GETs, `interval` apart: `count` of them, or until job `job_id` finishes."""
    samples: list[float] = []
    polled = 0.0
    while (count and len(samples) < count) or job_id:
        if job_id and time.monotonic() - polled >= 1.0:
            if get_job(client, job_id)["status"] not in ("queued", "running"):
                break
            polled = time.monotonic()
        started = time.perf_counter()
        response = client.get(path)
        samples.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise BenchError(f"GET {path}: HTTP {response.status_code}")
        time.sleep(interval)
    return samples


def run_api(
    algorithm: str, rows: list[Source], count: int, requests: int, interval: float, chunk: int
) -> ApiResult:
    chosen = sample(rows, count)
    items, labels = unique_items(chosen, len(chosen))
    with (
        tempfile.TemporaryDirectory(prefix="labelwise-bench-") as tmp,
        running_registry_server(
            f"sqlite:///{Path(tmp) / 'labelwise.db'}", Path(tmp), chunk
        ) as server,
        api_client(server, ADMIN_KEY, REQUEST_TIMEOUT_S) as client,
    ):
        project_id = new_project(client, f"bench-api-{algorithm}", sorted(set(labels)))
        ids = ingest(client, project_id, items)
        annotate(client, project_id, list(zip(ids, labels, strict=True)))
        path = f"/v1/projects/{project_id}"
        latencies(client, path, 0.0, count=20)  # warm-up
        idle = latencies(client, path, interval, count=requests // 2)
        job_id = start_training(client, project_id, algorithm, False)
        progress(f"api {algorithm}: {len(ids)} labeled items; training job {job_id} started")
        busy = latencies(client, path, interval, job_id=job_id)
        job = wait_job(client, job_id)
        idle += latencies(client, path, interval, count=requests - requests // 2)
    result = ApiResult(algorithm, len(ids), idle, busy, job_seconds(job))
    progress(
        f"api {algorithm}: p50 idle {percentile(idle, 50) * 1e3:.1f} ms, "
        f"during training {percentile(busy, 50) * 1e3:.1f} ms ({len(busy)} requests)"
    )
    return result


# --- report --------------------------------------------------------------------------------


def report_train(results: list[TrainResult]) -> list[str]:
    return [
        "1. Training: train() = features fit + 5-fold CV + final fit; skops artifact",
        *table(
            [
                "algorithm",
                "labels",
                "train s",
                "features fit s",
                "CV accuracy",
                "CV macro-F1",
                "dump s",
                "load s",
                "artifact",
            ],
            [
                [
                    r.algorithm,
                    f"{r.labels:,}",
                    f"{r.seconds:.1f}",
                    f"{r.features_seconds:.1f}",
                    f"{r.accuracy:.3f}",
                    f"{r.macro_f1:.3f}",
                    f"{r.dump_seconds:.2f}",
                    f"{r.load_seconds:.2f}",
                    f"{r.artifact_bytes / 2**20:.1f} MiB",
                ]
                for r in results
            ],
        ),
    ]


def report_score(results: list[ScoreResult], rounds: int) -> list[str]:
    lines = [
        f"2. Scoring from the feature matrix: fastest of {rounds} alternating rounds "
        "(seconds for the whole pool)",
    ]
    rows = []
    for r in results:
        raw = min(r.raw)
        feat_rate = r.unique_texts / r.featurize_seconds
        legs = [
            ("featurize (unique texts, per text)", r.unique_texts, r.featurize_seconds, None),
            ("raw predict_proba", r.pool, raw, raw),
            ("registry probabilities", r.pool, min(r.proba), raw),
            ("registry probabilities + summarize", r.pool, min(r.registry), raw),
            ("prediction_rows (incl. summarize)", r.pool, min(r.rows), None),
            ("job path: probabilities + prediction_rows", r.pool, min(r.job_path), raw),
        ]
        for name, count, seconds, base in legs:
            if name.startswith("prediction_rows") and not any(r.rows):
                continue
            rows.append(
                [
                    r.algorithm,
                    name,
                    f"{count:,}",
                    f"{seconds:.2f}",
                    f"{count / seconds:,.0f}",
                    f"{seconds / base:.2f}x" if base else "-",
                ]
            )
        projected = TARGET_POOL / feat_rate + r.scale(min(r.job_path))
        rows.append(
            [
                r.algorithm,
                "projected 1M: featurize + job path",
                f"{TARGET_POOL:,}",
                f"{projected:.0f}",
                f"{TARGET_POOL / projected:,.0f}",
                "-",
            ]
        )
    lines += table(
        ["algorithm", "step", "rows", "seconds", "rows/s", "vs raw"], rows, text_columns=2
    )
    lines.append("")
    for r in results:
        ratios = ", ".join(f"{g / w:.2f}" for g, w in zip(r.registry, r.raw, strict=True))
        lines.append(f"{r.algorithm}: registry/raw per round: {ratios}")
        registry_1m = r.scale(min(r.registry))
        job_1m = r.scale(min(r.job_path))
        ratio = min(r.registry) / min(r.raw)
        scaled = "" if r.pool == TARGET_POOL else f", scaled from {r.pool:,} rows"
        lines += [
            f"{verdict(registry_1m < TARGET_SECONDS)}: {r.algorithm}: the registry path scores "
            f"1M rows in {registry_1m:.1f} s{scaled} (target < {TARGET_SECONDS:.0f} s)",
            f"{verdict(ratio <= TARGET_RATIO)}: {r.algorithm}: registry/raw = {ratio:.2f}x "
            f"(target <= {TARGET_RATIO}x)",
            f"note: {r.algorithm}: with prediction_rows 1M rows take {job_1m:.1f} s "
            f"({min(r.job_path) / min(r.raw):.2f}x raw); featurizing 1M texts at "
            f"{r.unique_texts / r.featurize_seconds:,.0f} texts/s adds "
            f"{TARGET_POOL * r.featurize_seconds / r.unique_texts:.0f} s",
        ]
    return lines


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report_e2e(results: list[E2EResult]) -> list[str]:
    return [
        "3. Pool-scoring job end to end (job row started_at..finished_at: DB read + featurize "
        "+ predict + uncertainty + upsert)",
        *table(
            [
                "database",
                "algorithm",
                "items",
                "labeled",
                "ingest s",
                "train job s",
                "scored",
                "score job s",
                "items/s",
                "1M at this rate",
            ],
            [
                [
                    r.database,
                    r.algorithm,
                    f"{r.items:,}",
                    f"{r.labeled:,}",
                    f"{r.ingest_seconds:.1f}",
                    f"{r.train_seconds:.1f}",
                    f"{r.scored:,}",
                    f"{r.score_seconds:.1f}",
                    f"{r.rate:,.0f}",
                    f"{TARGET_POOL / r.rate:.0f} s",
                ]
                for r in results
            ],
            text_columns=2,
        ),
    ]


def report_api(results: list[ApiResult]) -> list[str]:
    rows = []
    for r in results:
        for state, values in (("idle", r.idle), ("training", r.busy)):
            rows.append(
                [
                    r.algorithm,
                    state,
                    f"{len(values)}",
                    f"{percentile(values, 50) * 1e3:.1f}",
                    f"{percentile(values, 95) * 1e3:.1f}",
                    f"{percentile(values, 99) * 1e3:.1f}",
                    f"{max(values) * 1e3:.1f}",
                    f"{r.train_seconds:.1f}" if state == "training" else "-",
                ]
            )
        rows.append(
            [
                r.algorithm,
                "training/idle",
                "",
                f"{percentile(r.busy, 50) / percentile(r.idle, 50):.1f}x",
                f"{percentile(r.busy, 95) / percentile(r.idle, 95):.1f}x",
                f"{percentile(r.busy, 99) / percentile(r.idle, 99):.1f}x",
                "",
                "",
            ]
        )
    return [
        "4. GET /v1/projects/{id} latency, sequential requests (ms)",
        *table(
            ["algorithm", "state", "requests", "p50", "p95", "p99", "max", "train job s"],
            rows,
            text_columns=2,
        ),
    ]


def machine() -> str:
    pools = threadpool_info()
    blas = ", ".join(sorted({f"{i['internal_api']} {i['num_threads']} threads" for i in pools}))
    return f"{common_machine()}, {blas or 'no BLAS/OpenMP pools'}"


def parse_sections(value: str) -> set[str]:
    chosen = {part.strip() for part in value.split(",") if part.strip()}
    unknown = chosen - set(SECTIONS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SECTIONS)} (comma-separated)")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--algorithm", choices=[*ALGORITHMS, "all"], default="tfidf_logreg", help="or all"
    )
    parser.add_argument("--pool", type=int, default=1_000_000, help="rows scored in section 2")
    parser.add_argument("--labels", type=int, default=10_000, help="training labels (1 and 4)")
    parser.add_argument("--chunk", type=int, default=5_000, help="scoring chunk (2 and 3)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds in section 2")
    parser.add_argument(
        "--no-rows", action="store_true", help="section 2 without the prediction_rows column"
    )
    parser.add_argument("--e2e-pool", type=int, default=100_000, help="items; 0 skips section 3")
    parser.add_argument("--e2e-labels", type=int, default=2_000, help="annotated in section 3")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("LABELWISE_BENCH_POSTGRES_URL"),
        help="also run section 3 on PostgreSQL: a loopback server where the script may "
        "CREATE and DROP DATABASE (postgresql+psycopg://postgres@127.0.0.1:5432/test)",
    )
    parser.add_argument("--api-requests", type=int, default=200, help="idle requests in 4")
    parser.add_argument(
        "--api-interval", type=float, default=0.1, help="seconds between requests in 4"
    )
    parser.add_argument(
        "--only",
        type=parse_sections,
        default=set(SECTIONS),
        metavar="SECTIONS",
        help=f"comma-separated, from {','.join(SECTIONS)}",
    )
    args = parser.parse_args(argv)
    if min(args.pool, args.labels, args.chunk, args.rounds, args.api_requests) < 1:
        parser.error("--pool, --labels, --chunk, --rounds and --api-requests must be positive")
    if args.e2e_pool < 0 or 0 < args.e2e_pool < 1_000 or args.e2e_labels < 100:
        parser.error("--e2e-pool must be 0 (skip) or at least 1000; --e2e-labels at least 100")
    if not DEBIAN_DATA.is_file():
        print(
            f"no data at {DEBIAN_DATA}: this benchmark needs the Debian descriptions "
            "(shared/data/debian-dev.jsonl.gz next to the repository)",
            file=sys.stderr,
        )
        return 2
    rows = load_sources(DEBIAN_DATA)
    algorithms = list(ALGORITHMS) if args.algorithm == "all" else [args.algorithm]
    sections = args.only
    if args.e2e_pool == 0:
        sections = sections - {"e2e"}
    print(f"{len(rows)} rows from {DEBIAN_DATA}; sections {sorted(sections)}", file=sys.stderr)

    # A SIGTERM unwinds like Ctrl-C, so the finally blocks stop servers and drop databases.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    trained: list[TrainResult] = []
    scored: list[ScoreResult] = []
    e2e: list[E2EResult] = []
    api: list[ApiResult] = []
    status = 0
    try:
        for name in algorithms:
            if sections & {"train", "score"}:
                trained.append(run_train(name, rows, args.labels))
            if "score" in sections:
                scored.append(
                    run_score(
                        trained[-1], rows, args.pool, args.chunk, args.rounds, not args.no_rows
                    )
                )
            if "e2e" in sections:
                e2e += run_e2e(args, name, rows)
            if "api" in sections:
                api.append(
                    run_api(
                        name, rows, args.labels, args.api_requests, args.api_interval, args.chunk
                    )
                )
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        status = 1
    out = [
        f"code {code_version()}, {machine()}, Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d')}",
        f"pool {args.pool:,}, chunk {args.chunk:,}, labels {args.labels:,}, "
        f"e2e pool {args.e2e_pool:,}",
    ]
    for section in (
        report_train(trained) if trained else [],
        report_score(scored, args.rounds) if scored else [],
        report_e2e(e2e) if e2e else [],
        report_api(api) if api else [],
    ):
        if section:
            out += ["", *section]
    print("\n".join(out))
    return status


if __name__ == "__main__":
    sys.exit(main())
