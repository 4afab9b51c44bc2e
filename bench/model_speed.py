"""Default-model benchmark (issue 23, part 4): the new default `hashed_tfidf_sgd` against the
old default `tfidf_logreg`, side by side in ONE run, on this machine.

The protocol below was written (and committed) before any of its results were seen.

Sections (--only picks some); in every section the two algorithms run in the same process
run, adjacent, in alternating order (old first in round 1, new first in round 2, ...):

* accuracy: app.registry.training.train() (the service's own function: features fitted once,
  StratifiedKFold(5, shuffle=True, random_state=FOLD_SEED=0), out-of-fold metrics) with each
  algorithm's registered default params on the FULL dev data (../shared/data/
  debian-dev.jsonl.gz, all 10,330 rows, texts and labels as given; labels with fewer than
  MIN_PER_LABEL=5 rows would be left out as the service does; the count is printed).
  Reported: out-of-fold accuracy and macro-F1. Guard: new accuracy >= old accuracy - 0.010
  (absolute). The new default's params were picked on this same data (there is no other
  labeled data here): a small grid, said so in docs/models.md.
* train: train() on 10,000 labels (a fixed shuffled sample, numpy seed 0, of the dev rows),
  wall clock of the whole call (features fit + 5-fold CV + final fit), --rounds rounds
  (default 3), the MEDIAN reported. Target: new < 10 s.
* issues: the label-issue report job on 10,000 labeled items through a real server
  (bench/label_issues.py's dataset, bulk load and service leg: 9,069 distinct Debian texts +
  931 synthetic, 10% of labels flipped, no active version, so the job cross-validates),
  POST .../label-issues {"algorithm": A} to the job's succeeded poll (httpx wall clock), one
  untimed warm-up report on a small project first. SQLite; --rounds rounds, the MEDIAN.
  Target: new < 20 s.
* score: the score_pool job over --pool (default 1,000,000) unlabeled items on SQLite AND
  PostgreSQL. The database is built by bulk inserts (not timed): item texts are dev texts
  drawn at random (seed 0) with " #<n>" appended so no two are equal; 2,000 further items of
  the same project carry human labels (annotations), so a real training job trains the
  version. A real `labelwise serve` (embedded job runner) trains each algorithm on those
  labels with activate=false (untimed), then POST .../models/{v}/activate starts score_pool;
  its time is the job row's started_at..finished_at (read, featurize, predict, store).
  The OLD default takes ~320 s per 1M, so by default it scores a separate project holding the
  first --old-pool (default 200,000) texts of the same sequence and its time is projected
  linearly to --pool (say so in the table; --old-pool equal to --pool measures it in full).
  One round. Target: new < 60 s for 1,000,000 items on each database.
  (Added after the first runs, when the machine was too loaded for a 1M run before the
  deadline: a smaller --pool is projected linearly to 1,000,000 as well, and says so.)
* cycle: a 100,000-item project with 2,000 labeled items and an active version of the
  algorithm (trained and activated, untimed); then POST .../models {"algorithm": A,
  "activate": true} and wait until the follow-up score_pool job has succeeded. Time: httpx
  wall clock from the POST to the poll that sees the scoring job succeeded (polled every
  0.2 s), plus the two jobs' own durations. SQLite and PostgreSQL; one round each.
  Target: new < 15 s.

It is a benchmark, not a test: the exit status is 0 whether or not the targets are met.

    .venv/bin/python bench/model_speed.py [--only accuracy,train,issues,score,cycle]
        [--pool N] [--old-pool N] [--rounds N] [--postgres-url URL]
"""

import argparse
import os
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from common import (
    BACKENDS,
    ITEM_HEAD_COLUMNS,
    LABELED_ITEM_TABLES,
    BenchError,
    Database,
    Setup,
    Source,
    api_client,
    bulk_loader,
    code_version,
    expect,
    find_debian_data,
    fresh_database,
    load_average,
    load_sources,
    machine,
    migrated_server,
    progress,
    table,
    write_report,
)
from label_issues import (
    build_dataset,
    create_project,
    populate,
    run_service,
    warm_up_dataset,
)

from app.registry.algorithms import DEFAULT_ALGORITHM, get_algorithm
from app.registry.training import MIN_PER_LABEL, train
from app.services.items import content_hash

OLD, NEW = "tfidf_logreg", DEFAULT_ALGORITHM
SECTIONS = ("accuracy", "train", "issues", "score", "cycle")
ADMIN_KEY = "lw_bench_model_speed_admin_key_0123456789abcdef"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_OUT = Path("/tmp/bench_model_speed.md")
TRAIN_LABELS = 10_000
ISSUE_ITEMS = 10_000
POOL_LABELS = 2_000
CYCLE_POOL = 100_000
JOB_TIMEOUT_S = 3_600.0
POLL_S = 0.2
TARGET_POOL = 1_000_000
TARGETS = {"train": 10.0, "issues": 20.0, "score": 60.0, "cycle": 15.0}


NEW_ONLY: list[bool] = [False]  # --new-only


def orders(rounds: int) -> Iterator[tuple[str, ...]]:
    """(old, new) in round 1, (new, old) in round 2, ...; (new,) with --new-only."""
    for k in range(rounds):
        if NEW_ONLY[0]:
            yield (NEW,)
        else:
            yield (OLD, NEW) if k % 2 == 0 else (NEW, OLD)


# --- accuracy and training -------------------------------------------------------------------


@dataclass(slots=True)
class Fit:
    algorithm: str
    seconds: float
    accuracy: float
    macro_f1: float


def fit(name: str, texts: list[str], labels: list[str]) -> Fit:
    algorithm = get_algorithm(name)
    trained = train(algorithm, algorithm.resolve_params({}), texts, labels)
    return Fit(
        name, trained.seconds, float(trained.metrics["accuracy"]), trained.metrics["macro_f1"]
    )


def run_accuracy(sources: list[Source]) -> list[Fit]:
    counts = Counter(s.label for s in sources)
    kept = [s for s in sources if counts[s.label] >= MIN_PER_LABEL]
    progress(f"accuracy: {len(kept):,} of {len(sources):,} rows, {len(counts)} labels")
    fits = []
    for name in (OLD, NEW):
        fits.append(fit(name, [s.text for s in kept], [s.label for s in kept]))
        progress(f"accuracy: {name}: {fits[-1]}")
    return fits


def run_train(sources: list[Source], rounds: int) -> dict[str, list[float]]:
    order = np.random.default_rng(0).permutation(len(sources))[:TRAIN_LABELS]
    texts = [sources[i].text for i in order]
    labels = [sources[i].label for i in order]
    seconds: dict[str, list[float]] = {OLD: [], NEW: []}
    for pair in orders(rounds):
        for name in pair:
            started = time.perf_counter()
            fit(name, texts, labels)
            seconds[name].append(time.perf_counter() - started)
            progress(f"train: {name}: {seconds[name][-1]:.1f} s (load {load_average():.1f})")
    return seconds


# --- the label-issue report ------------------------------------------------------------------


def run_issues(sources: list[Source], rounds: int) -> dict[str, list[float]]:
    labels = sorted({s.label for s in sources})
    data = build_dataset(sources, ISSUE_ITEMS, 0.1, 30)
    warm = warm_up_dataset(sources)
    seconds: dict[str, list[float]] = {OLD: [], NEW: []}
    setup = Setup("sqlite")
    with (
        fresh_database("sqlite", None, "unused") as database,
        migrated_server(setup, database, ADMIN_KEY) as server,  # type: ignore[arg-type]
        api_client(server, ADMIN_KEY, JOB_TIMEOUT_S) as client,
    ):
        assert database is not None
        project_id = create_project(client, "bench-model-speed-issues", labels)
        warm_id = create_project(client, "bench-model-speed-warm-up", labels)
        populate(setup, database, [(project_id, data), (warm_id, warm)])
        run_service(client, warm_id, NEW, {}, "warm-up")
        for pair in orders(rounds):
            for name in pair:
                service = run_service(client, project_id, name, {}, f"issues {name}")
                seconds[name].append(service.seconds)
                progress(f"issues: {name}: {service.seconds:.1f} s (load {load_average():.1f})")
    return seconds


# --- the scoring job and the retrain cycle ---------------------------------------------------


@dataclass(slots=True)
class Pool:
    """Texts drawn from the dev data (seed 0), each made unique by " #<n>", and the labeled
    items' texts and labels (the dev rows in a shuffled order)."""

    texts: list[str]
    labeled: list[Source]


def draw_pool(sources: list[Source], size: int) -> Pool:
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(sources), size=size)
    texts = [f"{sources[k].text} #{n}" for n, k in enumerate(picks.tolist())]
    order = rng.permutation(len(sources))[:POOL_LABELS]
    labeled = [
        Source(f"l{n}", f"{sources[k].text} ~{n}", sources[k].label)
        for n, k in enumerate(order.tolist())
    ]
    return Pool(texts, labeled)


def load_project(database: Database, project_id: int, pool: Pool, size: int, first_id: int) -> int:
    """The first `size` pool texts unlabeled, then the labeled items with one current human
    annotation each; returns the next free item id."""
    created = datetime.now(UTC) - timedelta(days=1)
    unlabeled = f"{ITEM_HEAD_COLUMNS}, status, created_at, updated_at"
    with bulk_loader(database, {"item": unlabeled}) as loader:
        at = loader.time(created)
        loader.load(
            "item",
            (
                (
                    first_id + n,
                    project_id,
                    f"p{n}",
                    text,
                    content_hash(text),
                    "{}",
                    "{}",
                    "manual",
                    "unlabeled",
                    at,
                    at,
                )
                for n, text in enumerate(pool.texts[:size])
            ),
        )
    first_labeled = first_id + size
    with bulk_loader(database, LABELED_ITEM_TABLES) as loader:
        at = loader.time(created)
        loader.load(
            "item",
            (
                (
                    first_labeled + n,
                    project_id,
                    s.id,
                    s.text,
                    content_hash(s.text),
                    "{}",
                    "{}",
                    "manual",
                    "labeled",
                    s.label,
                    "consensus",
                    1.0,
                    at,
                    at,
                )
                for n, s in enumerate(pool.labeled)
            ),
        )
        loader.load(
            "annotation",
            (
                (
                    first_labeled + n,
                    project_id,
                    first_labeled + n,
                    "ann-1",
                    s.label,
                    False,
                    "human",
                    5_000,
                    True,
                    at,
                )
                for n, s in enumerate(pool.labeled)
            ),
        )
        loader.finish()
    return first_labeled + len(pool.labeled)


def wait_job(client: httpx.Client, job_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job: dict[str, Any] = expect(client.get(f"/v1/jobs/{job_id}"), 200, f"job {job_id}")
        if job["status"] == "succeeded":
            return job
        if job["status"] in ("failed", "cancelled"):
            raise BenchError(f"job {job_id} ({job['kind']}) {job['status']}: {job['error']}")
        time.sleep(POLL_S)
    raise BenchError(f"job {job_id} did not finish within {JOB_TIMEOUT_S:.0f} s")


def job_seconds(job: dict[str, Any]) -> float:
    started = datetime.fromisoformat(job["started_at"])
    return (datetime.fromisoformat(job["finished_at"]) - started).total_seconds()


def train_job(client: httpx.Client, project_id: int, name: str, activate: bool) -> dict[str, Any]:
    body = {"algorithm": name, "activate": activate}
    job = expect(client.post(f"/v1/projects/{project_id}/models", json=body), 202, "train")
    return wait_job(client, int(job["id"]))


@dataclass(slots=True)
class Scoring:
    backend: str
    algorithm: str
    items: int
    scored: int
    seconds: float
    projected: float  # to TARGET_POOL items, linearly (= seconds when items == TARGET_POOL)
    load: float


@dataclass(slots=True)
class Cycle:
    backend: str
    algorithm: str
    wall: float
    train: float
    score: float
    scored: int
    load: float


@dataclass(slots=True)
class Served:
    scorings: list[Scoring] = field(default_factory=list)
    cycles: list[Cycle] = field(default_factory=list)


def run_served(
    database: Database, sources: list[Source], args: argparse.Namespace, sections: set[str]
) -> Served:
    backend = database.backend
    labels = sorted({s.label for s in sources})
    pool = draw_pool(sources, max(args.pool, CYCLE_POOL))
    served = Served()
    setup = Setup(backend)
    sizes = {OLD: args.old_pool, NEW: args.pool}
    old_first = backend == "sqlite"
    algorithms: tuple[str, ...] = (OLD, NEW) if old_first else (NEW, OLD)
    if NEW_ONLY[0]:
        algorithms = (NEW,)
    with (
        migrated_server(setup, database, ADMIN_KEY) as server,
        api_client(server, ADMIN_KEY, JOB_TIMEOUT_S) as client,
    ):
        next_id = 1
        projects: dict[tuple[str, str], int] = {}
        for section in ("score", "cycle"):
            if section not in sections:
                continue
            for name in algorithms:
                size = sizes[name] if section == "score" else CYCLE_POOL
                project_id = create_project(client, f"bench-{section}-{name}", labels)
                started = time.perf_counter()
                next_id = load_project(database, project_id, pool, size, next_id)
                progress(
                    f"{backend}: {size:,} + {POOL_LABELS:,} items loaded ({section}, {name}) "
                    f"in {time.perf_counter() - started:.1f} s"
                )
                projects[(section, name)] = project_id
        if "score" in sections:
            for name in algorithms:
                project_id = projects[("score", name)]
                train_job(client, project_id, name, activate=False)
                response = expect(
                    client.post(f"/v1/projects/{project_id}/models/1/activate"), 200, "activate"
                )
                job = wait_job(client, int(response["scoring_job"]["id"]))
                seconds = job_seconds(job)
                scored = int(job["result"]["scored"])
                served.scorings.append(
                    Scoring(
                        backend,
                        name,
                        sizes[name],
                        scored,
                        seconds,
                        seconds * TARGET_POOL / max(scored, 1),
                        load_average(),
                    )
                )
                progress(f"{backend} score {name}: {scored:,} items in {seconds:.1f} s")
        if "cycle" in sections:
            for name in algorithms:
                project_id = projects[("cycle", name)]
                first = train_job(client, project_id, name, activate=True)
                wait_job(client, int(first["result"]["scoring_job_id"]))
                started = time.perf_counter()
                trained = train_job(client, project_id, name, activate=True)
                scoring = wait_job(client, int(trained["result"]["scoring_job_id"]))
                wall = time.perf_counter() - started
                served.cycles.append(
                    Cycle(
                        backend,
                        name,
                        wall,
                        job_seconds(trained),
                        job_seconds(scoring),
                        int(scoring["result"]["scored"]),
                        load_average(),
                    )
                )
                progress(f"{backend} cycle {name}: {wall:.1f} s")
    return served


# --- the report ------------------------------------------------------------------------------


def verdict(value: float, target: float) -> str:
    return f"{'met' if value < target else 'NOT met'} (< {target:g} s)"


def report(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lines: list[str] = []
    if "accuracy" in results:
        fits: list[Fit] = results["accuracy"]
        lines += [
            "accuracy: train() 5-fold CV on the full dev data, registered default params",
            *table(
                ["algorithm", "accuracy", "macro-F1", "train s"],
                [
                    [f.algorithm, f"{f.accuracy:.4f}", f"{f.macro_f1:.4f}", f"{f.seconds:.1f}"]
                    for f in fits
                ],
            ),
        ]
        drop = fits[0].accuracy - fits[1].accuracy
        lines += [
            f"guard (new >= old - 0.010): {'met' if drop <= 0.010 else 'NOT met'} "
            f"(new - old = {-drop:+.4f})",
            "",
        ]
    for section, title in (
        ("train", f"train + 5-fold CV on {TRAIN_LABELS:,} labels (s)"),
        ("issues", f"label-issue report on {ISSUE_ITEMS:,} items, SQLite (s)"),
    ):
        if section not in results:
            continue
        seconds: dict[str, list[float]] = results[section]
        rows = [
            [name, ", ".join(f"{s:.1f}" for s in values), f"{statistics.median(values):.1f}"]
            for name, values in seconds.items()
            if values
        ]
        new = statistics.median(seconds[NEW])
        lines += [
            title,
            *table(["algorithm", "rounds", "median"], rows),
            (f"old/new {statistics.median(seconds[OLD]) / new:.1f}x; " if seconds[OLD] else "")
            + "target "
            + verdict(new, TARGETS[section]),
            "",
        ]
    scorings = [s for served in results.get("served", []) for s in served.scorings]
    if scorings:
        lines += [
            f"score_pool job (job row started_at..finished_at), projected to {TARGET_POOL:,}",
            *table(
                [
                    "database",
                    "algorithm",
                    "items",
                    "scored",
                    "job s",
                    "items/s",
                    f"{TARGET_POOL:,} s",
                    "load",
                ],
                [
                    [
                        s.backend,
                        s.algorithm,
                        f"{s.items:,}",
                        f"{s.scored:,}",
                        f"{s.seconds:.1f}",
                        f"{s.scored / s.seconds:,.0f}",
                        f"{s.projected:.0f}" + (" (projected)" if s.scored != TARGET_POOL else ""),
                        f"{s.load:.1f}",
                    ]
                    for s in scorings
                ],
                text_columns=2,
            ),
        ]
        for s in scorings:
            if s.algorithm == NEW:
                lines.append(f"{s.backend}: target {verdict(s.projected, TARGETS['score'])}")
        lines.append("")
    cycles = [c for served in results.get("served", []) for c in served.cycles]
    if cycles:
        lines += [
            f"retrain -> activate -> rescore, {CYCLE_POOL:,} items, {POOL_LABELS:,} labels",
            *table(
                ["database", "algorithm", "wall s", "train job s", "score job s", "scored", "load"],
                [
                    [
                        c.backend,
                        c.algorithm,
                        f"{c.wall:.1f}",
                        f"{c.train:.1f}",
                        f"{c.score:.1f}",
                        f"{c.scored:,}",
                        f"{c.load:.1f}",
                    ]
                    for c in cycles
                ],
                text_columns=2,
            ),
        ]
        for c in cycles:
            if c.algorithm == NEW:
                lines.append(f"{c.backend}: target {verdict(c.wall, TARGETS['cycle'])}")
    return lines


def parse_sections(value: str) -> set[str]:
    chosen = {p.strip() for p in value.split(",") if p.strip()}
    if not chosen or chosen - set(SECTIONS):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SECTIONS)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", type=parse_sections, default=set(SECTIONS))
    parser.add_argument("--pool", type=int, default=1_000_000)
    parser.add_argument("--old-pool", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("LABELWISE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
    )
    parser.add_argument(
        "--new-only",
        action="store_true",
        help="measure only the new default (the old one's figures then come from another run)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    NEW_ONLY[0] = args.new_only
    args.old_pool = min(args.old_pool, args.pool)
    path = find_debian_data()
    if path is None:
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    sources = load_sources(path)
    results: dict[str, Any] = {}
    try:
        if "accuracy" in args.only:
            results["accuracy"] = run_accuracy(sources)
        if "train" in args.only:
            results["train"] = run_train(sources, args.rounds)
        if "issues" in args.only:
            results["issues"] = run_issues(sources, args.rounds)
        served = args.only & {"score", "cycle"}
        if served:
            results["served"] = []
            for backend in [b for b in BACKENDS if b in args.backends.split(",")]:
                with fresh_database(
                    backend, args.postgres_url, f"labelwise_bench_model_speed_{os.getpid()}"
                ) as database:
                    if database is None:
                        progress(f"{backend}: unreachable, skipped")
                        continue
                    results["served"].append(run_served(database, sources, args, served))
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    header = [
        f"code {code_version()}, {machine()}, Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, load average at the end {load_average():.1f}",
        f"old {OLD}, new {NEW}; pool {args.pool:,} (old default: {args.old_pool:,}), "
        f"{args.rounds} rounds",
        "",
    ]
    lines = header + report(results, args)
    print("\n".join(lines))
    write_report(args.out, "bench/model_speed.py", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
