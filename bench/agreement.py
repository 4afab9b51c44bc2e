"""Agreement benchmark: GET .../agreement and .../consensus on 100,000 items x 5 annotators.

GET /v1/projects/{id}/agreement, and GET .../consensus (majority, Dawid-Skene) on the same
answers.

The target (the issue): the agreement report for 100,000 items x 5 annotators in under 2 s
through HTTP, on SQLite and PostgreSQL. Every timed agreement request must finish in < 2 s.

Setup (not timed into the figures; its duration is reported), per database: a fresh migrated
database (a SQLite file in a temporary directory; a throwaway database CREATEd on the loopback
PostgreSQL server at --postgres-url and DROPped afterwards), a real `labelwise serve`
subprocess on it, and over HTTP the project: the 15 Debian sections as labels,
agreement_threshold 0.6, phase production, annotators_per_item --annotators. Then, straight
into the tables with SQL (COPY on PostgreSQL, executemany in chunks on SQLite), what
--annotators people answering every item would have left behind:

* --items items: the Debian descriptions (../shared/data/debian-dev.jsonl.gz, or
  LABELWISE_DEBIAN_DATA) cycled with a " [copy k <row id>]" suffix, so every text is unique
  after normalization; content_hash from app.services.items.content_hash; source manual. The
  row's section is the item's true label, so the labels follow the Debian distribution;
* --annotators current human annotations per item by "ann-1", "ann-2", ...: each answer is
  an abstention (abstain true, label NULL) with probability --abstain, otherwise the true
  label with the annotator's accuracy (--accuracies, cycled; by default 0.9, 0.85, 0.8, 0.75
  and 0.5) and else a label drawn uniformly from the 14 others;
* each item's status, resolved_label, resolved_by and consensus_quality as the service
  leaves them: app.services.item_status.derive() on its answers (a strict majority is
  labeled by consensus; a tie, or abstentions leaving too few labels, needs review).

On PostgreSQL the sequences are moved past the explicit ids and VACUUM ANALYZE runs after
the load; SQLite is checkpointed and left without ANALYZE, as the service never runs it.

Measurement: httpx against the server with the admin key, client-side wall time of each GET
(the body is read; JSON parsing is outside the clock):

* agreement: one untimed warm-up request (its time is shown as "first"), then --requests
  timed requests: p50 and max. The report is computed on every request;
* consensus?method=majority&limit=1000 and ?method=dawid_skene&limit=1000: the first request
  is uncached (the service caches a computation per process until the answers change), then
  --requests cached repeats: p50 and max.

For sanity the report shows n_items, krippendorff_alpha (beside the alpha of the simulated
answers computed in this process), each annotator's agreement_with_others, majority quality
and Dawid-Skene accuracy beside the simulated accuracy, and how often the first page's
consensus labels equal the true labels. It is a benchmark, not a test: the exit status is 0
whether the target is met or not.

    .venv/bin/python bench/agreement.py [--items N] [--annotators N] [--requests N]
        [--accuracies 0.9,0.85,0.8,0.75,0.5] [--abstain 0.03]
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--only sqlite,postgres] [--no-code-version]
"""

import argparse
import gzip
import hashlib
import json
import math
import os
import shlex
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
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
    code_version,
    machine,
    running_server,
    service_env,
    throwaway_database,
)

from app.db import build_engine
from app.migrations import upgrade
from app.ml.agreement import Votes, krippendorff_alpha_nominal, label_counts
from app.models.base import UTCDateTime, utcnow
from app.services.item_status import derive
from app.services.items import content_hash
from app.settings import Settings

DEFAULT_DATA = REPO.parent / "shared" / "data" / "debian-dev.jsonl.gz"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_OUT = Path("/tmp/bench_agreement.md")
DEFAULT_ACCURACIES = (0.9, 0.85, 0.8, 0.75, 0.5)
ADMIN_KEY = "lw_bench_agreement_admin_key_0123456789abcdef"
BACKENDS = ("sqlite", "postgres")
TARGET_S = 2.0
AGREEMENT_THRESHOLD = 0.6
PAGE_LIMIT = 1000
LOAD_CHUNK = 20_000
SEED = 20_260_102
REQUEST_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class Source:
    id: str
    text: str
    label: str


# --- data ----------------------------------------------------------------------------------


def load_sources(path: Path) -> list[Source]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    if not rows:
        raise BenchError(f"{path} has no rows")
    return [Source(r["id"], r["text"], r["label"]) for r in rows]


@dataclass(slots=True)
class Answers:
    """Who answered what, drawn once so both databases get the same answers.

    `label[i, a]` is the label code annotator a gave item i (position i, id i + 1), or -1 for
    an abstention."""

    truth: np.ndarray  # (items,) true label code
    label: np.ndarray  # (items, annotators)
    accuracies: list[float]
    n_labels: int

    @classmethod
    def draw(
        cls,
        sources: list[Source],
        labels: list[str],
        items: int,
        accuracies: list[float],
        abstain: float,
    ) -> "Answers":
        rng = np.random.default_rng(SEED)
        code = {label: i for i, label in enumerate(labels)}
        source_truth = np.array([code[s.label] for s in sources], dtype=np.int64)
        truth = source_truth[np.arange(items) % len(sources)]
        k, n = len(labels), len(accuracies)
        correct = rng.random((items, n)) < np.array(accuracies)
        # A wrong answer: uniform over the k - 1 other labels.
        wrong = (truth[:, None] + rng.integers(1, k, size=(items, n))) % k
        label = np.where(correct, truth[:, None], wrong)
        label[rng.random((items, n)) < abstain] = -1
        return cls(truth, label.astype(np.int64), list(accuracies), k)

    def votes(self) -> Votes:
        """The non-abstaining answers as Votes (items in id order, annotators by position:
        the service codes them by name, which changes no statistic over the items)."""
        items, annotators = np.nonzero(self.label >= 0)
        return Votes(
            item=items.astype(np.int64),
            annotator=annotators.astype(np.int64),
            label=self.label[items, annotators],
            n_items=self.label.shape[0],
            n_annotators=self.label.shape[1],
            n_labels=self.n_labels,
        )

    def observed_accuracy(self) -> np.ndarray:
        """Per annotator, the share of its labels (abstentions aside) equal to the truth."""
        given = self.label >= 0
        right = (self.label == self.truth[:, None]) & given
        return right.sum(axis=0) / np.maximum(given.sum(axis=0), 1)


def annotator_names(count: int) -> list[str]:
    return [f"ann-{i}" for i in range(1, count + 1)]


# --- loading -------------------------------------------------------------------------------

ITEM_COLUMNS = (
    "id, project_id, external_id, text, content_hash, data, metadata, source, status, "
    "resolved_label, resolved_by, consensus_quality, created_at, updated_at"
)
ANNOTATION_COLUMNS = (
    "id, project_id, item_id, annotator, label, abstain, source, duration_ms, is_current, "
    "created_at"
)
TABLES = {"item": ITEM_COLUMNS, "annotation": ANNOTATION_COLUMNS}


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
    loader: Loader,
    project_id: int,
    sources: list[Source],
    labels: list[str],
    answers: Answers,
    created: datetime,
    statuses: Counter[str],
) -> Iterator[tuple[Any, ...]]:
    created_at = loader.time(created)
    updated_at = loader.time(created + timedelta(days=1))
    required = answers.label.shape[1]
    for position, given in enumerate(answers.label.tolist()):
        k, index = divmod(position, len(sources))
        source = sources[index]
        text = f"{source.text} [copy {k} {source.id}]"
        resolution = derive(
            [(None, True) if code < 0 else (labels[code], False) for code in given],
            annotators_per_item=required,
        )
        statuses[str(resolution.status)] += 1
        yield (
            position + 1,
            project_id,
            f"{source.id}-{k}",
            text,
            content_hash(text),
            "{}",
            "{}",
            "manual",
            str(resolution.status),
            resolution.label,
            resolution.resolved_by,
            resolution.quality,
            created_at,
            updated_at,
        )


def annotation_rows(
    loader: Loader, project_id: int, labels: list[str], answers: Answers, created: datetime
) -> Iterator[tuple[Any, ...]]:
    names = annotator_names(answers.label.shape[1])
    rng = np.random.default_rng(SEED + 1)
    items, annotators = answers.label.shape
    # Answered over the day after the items arrived, annotator by annotator within an item.
    offsets = np.sort(rng.integers(0, 86_400, size=items)).tolist()
    durations = rng.integers(2_000, 30_000, size=(items, annotators)).tolist()
    annotation_id = 0
    for position, given in enumerate(answers.label.tolist()):
        answered_at = loader.time(created + timedelta(seconds=offsets[position]))
        for annotator, code in enumerate(given):
            annotation_id += 1
            yield (
                annotation_id,
                project_id,
                position + 1,
                names[annotator],
                None if code < 0 else labels[code],
                code < 0,
                "human",
                durations[position][annotator],
                True,
                answered_at,
            )


# --- the database and the server -----------------------------------------------------------


@dataclass(slots=True)
class Setup:
    backend: str
    steps: list[tuple[str, float]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    size_mib: float | None = None
    server_rss_mib: float | None = None

    @property
    def total(self) -> float:
        return sum(seconds for _, seconds in self.steps)


@contextmanager
def postgres_database(admin_url: str, name: str) -> Iterator[str | None]:
    """A throwaway database on the loopback server, or None if the server is unreachable."""
    admin = admin_engine(admin_url)
    try:
        try:
            with admin.connect():
                pass
        except sa.exc.OperationalError as error:
            reason = str(error.orig).strip().splitlines()[0]
            print(f"postgres: skipped, the server is unreachable: {reason}", file=sys.stderr)
            yield None
            return
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
    answers: Answers,
) -> None:
    engine = build_engine(Settings(database_url=database_url, data_dir=workdir))
    try:
        loader = Loader(engine)
        created = utcnow() - timedelta(days=30)
        items, annotators = answers.label.shape
        setup.rows["item"] = timed(setup, f"load {items:,} items")(
            lambda: loader.load(
                "item",
                item_rows(loader, project_id, sources, labels, answers, created, setup.statuses),
            )
        )
        setup.rows["annotation"] = timed(setup, f"load {items * annotators:,} annotations")(
            lambda: loader.load(
                "annotation", annotation_rows(loader, project_id, labels, answers, created)
            )
        )
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

            def checkpoint() -> None:
                with engine.connect() as connection:
                    connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

            timed(setup, "WAL checkpoint")(checkpoint)
            setup.size_mib = Path(engine.url.database or "").stat().st_size / 2**20
    finally:
        engine.dispose()


# --- measuring -----------------------------------------------------------------------------


@dataclass(slots=True)
class Timing:
    backend: str
    request: str
    first: float  # the warm-up (agreement) or the uncached request (consensus)
    seconds: list[float]  # the timed (agreement) or cached (consensus) requests
    body_kib: float
    body: dict[str, Any] = field(repr=False, default_factory=dict)  # the last response


def get_timed(client: httpx.Client, path: str, params: dict[str, Any]) -> tuple[float, bytes]:
    started = time.perf_counter()
    response = client.get(path, params=params)
    elapsed = time.perf_counter() - started
    expect(response, 200, f"GET {path}")
    return elapsed, response.content


def measure(
    backend: str,
    client: httpx.Client,
    name: str,
    path: str,
    params: dict[str, Any],
    requests: int,
) -> Timing:
    first, content = get_timed(client, path, params)
    seconds = []
    for _ in range(requests):
        elapsed, content = get_timed(client, path, params)
        seconds.append(elapsed)
    timing = Timing(backend, name, first, seconds, len(content) / 1024, json.loads(content))
    progress(
        f"{backend}: {name}: first {ms(first)} ms, then p50 {ms(percentile(seconds, 50))} ms, "
        f"max {ms(max(seconds))} ms over {len(seconds)}"
    )
    return timing


@dataclass(slots=True)
class Run:
    setup: Setup
    timings: list[Timing]
    load: tuple[float, float] = (math.nan, math.nan)  # 1-minute load average before, after


def run_backend(
    backend: str,
    database_url: str,
    workdir: Path,
    args: argparse.Namespace,
    sources: list[Source],
    labels: list[str],
    answers: Answers,
) -> Run:
    setup = Setup(backend)
    timed(setup, "migrate")(lambda: upgrade(database_url))
    env = service_env(database_url, workdir, bootstrap_admin_key=ADMIN_KEY)
    started = time.perf_counter()
    with running_server(env, workdir / "server.log") as server:
        setup.steps.append(("start the server", time.perf_counter() - started))
        with httpx.Client(
            base_url=server.url,
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            timeout=REQUEST_TIMEOUT_S,
        ) as client:
            project = timed(setup, "HTTP: create the project")(
                lambda: expect(
                    client.post(
                        "/v1/projects",
                        json={
                            "name": "bench-agreement",
                            "labels": labels,
                            "agreement_threshold": AGREEMENT_THRESHOLD,
                            "phase": "production",
                            "annotators_per_item": args.annotators,
                        },
                    ),
                    201,
                    "create project",
                )
            )
            project_id = int(project["id"])
            populate(setup, database_url, workdir, project_id, sources, labels, answers)
            progress(
                f"{backend}: setup {setup.total:.0f} s, "
                + ", ".join(f"{count:,} {table}" for table, count in setup.rows.items())
            )
            load_before = load_average()
            timings = run_requests(backend, server, client, project_id, args.requests)
            load_after = load_average()
        setup.server_rss_mib = server.peak_rss_mib()
    return Run(setup, timings, (load_before, load_after))


def run_requests(
    backend: str, server: Server, client: httpx.Client, project_id: int, requests: int
) -> list[Timing]:
    server.reset_peak_rss()
    base = f"/v1/projects/{project_id}"
    timings = [measure(backend, client, "agreement", f"{base}/agreement", {}, requests)]
    for method in ("majority", "dawid_skene"):
        timings.append(
            measure(
                backend,
                client,
                f"consensus {method}",
                f"{base}/consensus",
                {"method": method, "limit": PAGE_LIMIT},
                requests,
            )
        )
    return timings


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


def figure(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(runs: list[Run], answers: Answers, labels: list[str]) -> list[str]:
    items, annotators = answers.label.shape
    lines = [
        f"Setup (not timed into the figures): {items:,} items x {annotators} annotators",
        *table(
            ["database", "step", "seconds"],
            [
                [run.setup.backend, step, f"{seconds:.1f}"]
                for run in runs
                for step, seconds in [*run.setup.steps, ("total", run.setup.total)]
            ],
            text_columns=2,
        ),
        "",
    ]
    for run in runs:
        s = run.setup
        size = f"{s.size_mib:,.0f} MiB" if s.size_mib is not None else "?"
        rss = f"{s.server_rss_mib:,.0f} MiB" if s.server_rss_mib is not None else "?"
        statuses = ", ".join(f"{count:,} {status}" for status, count in sorted(s.statuses.items()))
        lines.append(
            f"{s.backend}: "
            + ", ".join(f"{count:,} {table}" for table, count in s.rows.items())
            + f" (items: {statuses}); database {size}; server peak RSS while measured {rss}"
        )
    rows = [
        [
            t.backend,
            t.request,
            "warm-up" if t.request == "agreement" else "uncached",
            ms(t.first),
            f"{len(t.seconds)}",
            ms(percentile(t.seconds, 50)),
            ms(max(t.seconds)),
            f"{t.body_kib:,.0f}",
        ]
        for run in runs
        for t in run.timings
    ]
    lines += [
        "",
        "Client-side latency (ms): agreement = GET .../agreement; consensus = GET .../consensus"
        f"?method=...&limit={PAGE_LIMIT}",
        *table(
            ["database", "request", "first is", "first", "then", "p50", "max", "body KiB"],
            rows,
            text_columns=3,
        ),
        "then: timed requests after the first (agreement: computed every time; consensus: "
        "served from the per-process cache)",
        "1-minute load average before-after the requests on "
        f"{os.cpu_count()} CPUs: "
        + ", ".join(f"{run.setup.backend} {run.load[0]:.1f}-{run.load[1]:.1f}" for run in runs),
        "",
    ]
    lines += sanity(runs, answers, labels)
    lines.append("")
    for run in runs:
        t = run.timings[0]
        p50, worst = percentile(t.seconds, 50), max(t.seconds)
        ok = worst < TARGET_S
        lines.append(
            f"{'PASS' if ok else 'FAIL'}: {run.setup.backend}: agreement report for "
            f"{items:,} items x {annotators} annotators: p50 {p50:.2f} s, max {worst:.2f} s "
            f"over {len(t.seconds)} requests (target < {TARGET_S:.0f} s)"
        )
    return lines


def sanity(runs: list[Run], answers: Answers, labels: list[str]) -> list[str]:
    """What the service answered, beside what the simulation says it should."""
    votes = answers.votes()
    expected_alpha = krippendorff_alpha_nominal(label_counts(votes))
    names = annotator_names(answers.label.shape[1])
    observed = answers.observed_accuracy()
    lines = []
    for run in runs:
        by_request = {t.request: t.body for t in run.timings}
        agreement = by_request["agreement"]
        ci = agreement.get("confidence_interval") or {}
        lines.append(
            f"{run.setup.backend}: n_items {agreement['n_items']:,} (simulated "
            f"{answers.label.shape[0]:,}), n_labels {agreement['n_labels']:,} (simulated "
            f"{len(votes.item):,}), krippendorff_alpha {figure(agreement['krippendorff_alpha'], 4)}"
            f" [{figure(ci.get('low'), 4)}, {figure(ci.get('high'), 4)}] (simulated "
            f"{figure(expected_alpha, 4)}), fleiss_kappa {figure(agreement['fleiss_kappa'], 4)}, "
            f"abstain_rate {figure(agreement['abstain_rate'], 4)}, band "
            f"{agreement['interpretation']['band']}, warnings "
            f"{[w['code'] for w in agreement['warnings']] or 'none'}"
        )
        per_annotator = {a["annotator"]: a for a in agreement["per_annotator"]}
        quality = {
            method: {a["annotator"]: a["quality"] for a in by_request[method]["annotators"]}
            for method in ("consensus majority", "consensus dawid_skene")
        }
        rows = []
        for code, name in enumerate(names):
            mine = per_annotator.get(name, {})
            rows.append(
                [
                    run.setup.backend,
                    name,
                    f"{answers.accuracies[code]:.2f}",
                    f"{observed[code]:.3f}",
                    f"{mine.get('n_labels', 0):,}",
                    f"{mine.get('n_abstained', 0):,}",
                    figure(mine.get("agreement_with_others")),
                    figure(quality["consensus majority"].get(name)),
                    figure(quality["consensus dawid_skene"].get(name)),
                ]
            )
        lines += [
            "",
            *table(
                [
                    "database",
                    "annotator",
                    "accuracy",
                    "simulated",
                    "labels",
                    "abstained",
                    "agreement_with_others",
                    "majority quality",
                    "dawid_skene accuracy",
                ],
                rows,
                text_columns=2,
            ),
        ]
        pages = []
        for method in ("consensus majority", "consensus dawid_skene"):
            page = by_request[method]
            chosen = [(e["item_id"], e["label"]) for e in page["items"]]
            right = sum(labels[answers.truth[i - 1]] == label for i, label in chosen)
            undecided = sum(label is None for _, label in chosen)
            extra = (
                f", {page['iterations']} iterations, converged {page['converged']}"
                if method.endswith("dawid_skene")
                else ""
            )
            pages.append(
                f"{method.split()[1]} {right}/{len(chosen)} right, {undecided} undecided{extra}"
            )
        lines.append(
            f"{run.setup.backend}: first page of consensus labels vs the true labels: "
            + "; ".join(pages)
        )
    lines.append(
        "accuracy: simulated probability of a right label; simulated: the share right in the "
        "drawn answers; dawid_skene accuracy: the service's estimate"
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


def parse_accuracies(value: str) -> list[float]:
    try:
        chosen = [float(part) for part in value.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    if not chosen or not all(0.0 <= a <= 1.0 for a in chosen):
        raise argparse.ArgumentTypeError("comma-separated probabilities in [0, 1]")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=100_000, help="items, all answered")
    parser.add_argument("--annotators", type=int, default=5, help="answers per item (2..100)")
    parser.add_argument(
        "--accuracies",
        type=parse_accuracies,
        default=list(DEFAULT_ACCURACIES),
        metavar="P,P,...",
        help="each annotator's chance of the true label, cycled over the annotators",
    )
    parser.add_argument("--abstain", type=float, default=0.03, help="share of abstentions")
    parser.add_argument("--requests", type=int, default=7, help="timed requests per endpoint")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("LABELWISE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a loopback server where the benchmark may CREATE and DROP a database",
    )
    parser.add_argument(
        "--only",
        type=parse_backends,
        default=set(BACKENDS),
        metavar="BACKENDS",
        help="comma-separated, from sqlite,postgres",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown report")
    parser.add_argument(
        "--no-code-version",
        action="store_true",
        help="do not run `git describe` for the code version",
    )
    args = parser.parse_args(argv)
    if min(args.items, args.requests) < 1:
        parser.error("--items and --requests must be positive")
    if not 2 <= args.annotators <= 100:
        parser.error("--annotators must be in 2..100 (the project's annotators_per_item)")
    if not 0.0 <= args.abstain < 1.0:
        parser.error("--abstain must be in [0, 1)")
    path = Path(os.environ.get("LABELWISE_DEBIAN_DATA") or DEFAULT_DATA)
    if not path.is_file():
        print(f"no data at {path}; set LABELWISE_DEBIAN_DATA", file=sys.stderr)
        return 2
    sources = load_sources(path)
    labels = sorted({s.label for s in sources})
    accuracies = [args.accuracies[i % len(args.accuracies)] for i in range(args.annotators)]
    answers = Answers.draw(sources, labels, args.items, accuracies, args.abstain)
    backends = [b for b in BACKENDS if b in args.only]
    print(
        f"{len(sources)} rows, {len(labels)} labels from {path}; {args.items:,} items x "
        f"{args.annotators} annotators (accuracies {accuracies}); {', '.join(backends)}",
        file=sys.stderr,
    )

    # A SIGTERM unwinds like Ctrl-C, so the finally blocks stop the server and drop databases.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    version = "not asked (--no-code-version)" if args.no_code_version else code_version()
    digest = source_digest()
    runs: list[Run] = []
    status = 0
    try:
        for backend in backends:
            with tempfile.TemporaryDirectory(prefix="labelwise-bench-") as tmp:
                workdir = Path(tmp)
                if backend == "sqlite":
                    url = f"sqlite:///{workdir / 'labelwise.db'}"
                    runs.append(run_backend(backend, url, workdir, args, sources, labels, answers))
                    continue
                name = f"labelwise_bench_agreement_{os.getpid()}"
                with postgres_database(args.postgres_url, name) as pg_url:
                    if pg_url is not None:
                        runs.append(
                            run_backend(backend, pg_url, workdir, args, sources, labels, answers)
                        )
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        status = 1
    versions = [f"SQLite {sqlite3.sqlite_version}"]
    if any(run.setup.backend == "postgres" for run in runs):
        versions.append(f"PostgreSQL {postgres_version(args.postgres_url)}")
    header = [
        f"code {version}, app sources sha256 {digest}, {machine()}, "
        f"Python {sys.version.split()[0]}, {', '.join(versions)}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        f"{args.items:,} items x {args.annotators} annotators, accuracies "
        f"{', '.join(f'{a:g}' for a in accuracies)}, abstain {args.abstain:g}, "
        f"{args.requests} timed requests per endpoint",
    ]
    lines = [*header, "", *report(runs, answers, labels)] if runs else header
    print("\n".join(lines))
    command = shlex.join([".venv/bin/python", "bench/agreement.py", *sys.argv[1:]])
    args.out.write_text(
        "# bench/agreement.py\n\n"
        f"Command (from the repository root): `{command}`\n\n"
        f"Machine: {machine()}\n\n```\n" + "\n".join(lines) + "\n```\n"
    )
    print(f"wrote {args.out}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
