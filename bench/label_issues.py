"""Label-issue report benchmark: POST .../label-issues on 10,000 and 100,000 labeled items,
beside cleanlab + cross-validation called directly on the same arrays in the same run.

The target (the issue): the report for 10,000 labeled items in under 60 s, within 1.3x of
calling cleanlab + cross-validation directly on the same arrays in the same run.

Data, drawn once per size in this process (seeded) and used by both sides:

* the Debian descriptions (../shared/data/debian-dev.jsonl.gz, or LABELWISE_DEBIAN_DATA;
  10,330 rows, 15 sections), deduplicated by the service's normalized text (content_hash):
  9,069 distinct texts. A size takes these first, in file order, with their section as the
  label;
* past 9,069 (so 931 of the 10,000 items and 90,931 of the 100,000), synthetic items: the
  first half (by words) of one description joined to the second half of ANOTHER description
  of the same section, of similar length (within --pair-window places of it in the section's
  texts sorted by word count), each half capped at 100 words; a text already taken is drawn
  again. No suffix-only copies: a " [copy k]" item would be a near-duplicate of its nine
  siblings, which would distort both the model and the duplicate finder. Two synthetic items
  sharing one half have a word Jaccard similarity near 1/3, far below the 0.8 threshold;
* --flip (10%) of the items, chosen at random, get a wrong given label: another section,
  drawn in proportion to the sections' frequencies (confusion that follows the label
  distribution; uniform noise would give 'shells', 35 of 10,330 rows, more wrong items
  than right ones). These are the label issues the report should find: the share of flipped
  items among the k worst suspected mislabels (k = the number flipped; the service's in its
  rank order, the direct call's by label quality) is reported for the service and for the
  direct call, with the suspected mislabels' precision and recall against the flipped items
  and how many items only one of the two sides suspects.

Setup (not timed into the figures; its duration is reported), per size and database: a fresh
migrated database (a SQLite file in a temporary directory; a throwaway database CREATEd on the
loopback PostgreSQL server at --postgres-url and DROPped afterwards), a real `labelwise serve`
subprocess on it, and over HTTP a project with the 15 sections as labels, annotators_per_item
1, phase production. Then, straight into the tables with SQL (COPY on PostgreSQL, executemany
in chunks on SQLite): the items in the order above (ids 1..N) with status labeled,
resolved_label = the given label, resolved_by consensus, and one current human annotation
each by "ann-1" with that label, as a project with one annotator per item leaves them. A
second, small project (100 items) is loaded the same way and one report job is run on it
first, untimed (its time is shown): the embedded runner spawns its job process on the first
job and imports scikit-learn and cleanlab there, which a running server has done long before.

Measurement, --rounds rounds per size and database, the two sides adjacent and alternating
in order (direct first in even-numbered runs, the service first in odd ones):

* SERVICE: httpx wall time from POST /v1/projects/{id}/label-issues {"algorithm": ...}
  (everything else the defaults: near_duplicate_threshold 0.8, outlier_share 0.01,
  send_to_review true) to the GET /v1/jobs/{id} that shows succeeded, polled every 0.2 s.
  The job's phases come from those polls (the job writes its progress at each step; the
  first poll at or past a step dates it, so each boundary is late by up to 0.2 s): queued
  (created_at..started_at), read (the training set, texts, reviews, active version: up to
  progress 0.05), features + 5-fold CV (to 0.8), judge (cleanlab, noise matrix, outliers,
  near-duplicate groups: to 0.9), store (the report, its snapshot and one row per issue, one
  transaction: to 0.95), flag (suspected mislabels sent to review in chunks of 1,000, then
  the report marked complete: to finished_at); and the report's own "seconds" field (the
  job's clock inside run_report). Then GET
  .../label-issues/{report_id}?limit=100, with and without issue_type=label: the first
  request and the median of 3 more.
* DIRECT, in this process: the same texts and given labels in the same order (item id order,
  labels with fewer than 5 items left out as the service does): the algorithm's features step
  (algorithm.pipeline(params), fit once on all texts), its classifier cross-validated over
  StratifiedKFold(5, shuffle=True, random_state=FOLD_SEED: the service's folds) with plain
  scikit-learn calls (clone, fit, predict_proba), then
  cleanlab.filter.find_label_issues(labels, pred_probs, n_jobs=1) and
  cleanlab.rank.get_label_quality_scores. Timed whole and by part.
* The ratio SERVICE / DIRECT per size and database (best round of each).
* For the reading of the ratio, timed in this process after the direct call on its
  probabilities and not counted in either side: what the report job computes beyond cleanlab
  (app.ml.label_issues noise_matrix and outlier_scores, app.ml.duplicates
  near_duplicate_groups on the same texts), and the service's cleanlab wrapper.

It is a benchmark, not a test: the exit status is 0 whether the target is met or not (1 when
the run itself fails, 2 when the data is missing).

    .venv/bin/python bench/label_issues.py [--sizes 10000,100000]
        [--algorithm tfidf_logreg|hashing_sgd] [--flip 0.1] [--rounds 1]
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--only sqlite,postgres] [--out /tmp/bench_label_issues.md] [--no-code-version]
    .venv/bin/python bench/label_issues.py --sizes 2000 --only sqlite    # a quick look
"""

import argparse
import gc
import json
import math
import os
import signal
import sqlite3
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa
from cleanlab.filter import find_label_issues as cleanlab_find_label_issues
from cleanlab.rank import get_label_quality_scores
from common import (
    BACKENDS,
    LABELED_ITEM_TABLES,
    BenchError,
    BulkLoader,
    Database,
    Setup,
    Source,
    add_backends_option,
    api_client,
    bulk_loader,
    code_version,
    expect,
    find_debian_data,
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
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_info

from app.ml import duplicates
from app.ml import label_issues as ml_label_issues
from app.models.base import utcnow
from app.registry.algorithms import ALGORITHMS, get_algorithm
from app.registry.training import FOLD_SEED, MIN_PER_LABEL, N_FOLDS
from app.services.items import content_hash

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_OUT = Path("/tmp/bench_label_issues.md")
DEFAULT_SIZES = (10_000, 100_000)
ADMIN_KEY = "lw_bench_label_issues_admin_key_0123456789abcdef"
TARGET_S = 60.0
TARGET_RATIO = 1.3
TARGET_SIZE = 10_000
SEED = 20_260_106
HALF_CAP = 100  # words per half of a synthetic text
WARM_UP_ITEMS = 100
POLL_S = 0.2
PAGE_LIMIT = 100
PAGE_REPEATS = 3
JOB_TIMEOUT_S = 4 * 3_600.0
REQUEST_TIMEOUT_S = 300.0
# The job's progress after each step (app/tasks/label_issues.py run_report).
STEPS = (("read", 0.05), ("features + CV", 0.8), ("judge", 0.9), ("store", 0.95))
CV_PARTS = ("features fit", f"{N_FOLDS}-fold CV")


# --- data ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Dataset:
    """The items of one size, in id order (item i has id i + 1)."""

    external_ids: list[str]
    texts: list[str]
    truth: list[str]  # the Debian section (the source's, for a synthetic item)
    given: list[str]  # the label loaded as the human answer: the truth, or a flipped one
    flipped: np.ndarray  # (n,) bool
    n_original: int
    seconds: float = 0.0

    @property
    def size(self) -> int:
        return len(self.texts)


def distinct_sources(sources: list[Source]) -> list[Source]:
    """The sources with a text not seen before (the service's normalization), in file order."""
    seen: set[str] = set()
    kept = []
    for source in sources:
        digest = content_hash(source.text)
        if source.text.strip() and digest not in seen:
            seen.add(digest)
            kept.append(source)
    return kept


def synthetic_texts(
    originals: list[Source], count: int, taken: set[str], window: int, rng: np.random.Generator
) -> Iterator[tuple[str, str]]:
    """`count` (text, label) pairs: the first half of one description and the second half of
    another of the same label and similar length (see the module docstring), each distinct
    from `taken` (content hashes, updated)."""
    words = [source.text.split() for source in originals]
    first = [" ".join(w[: len(w) // 2][:HALF_CAP]) for w in words]
    second = [" ".join(w[len(w) // 2 :][:HALF_CAP]) for w in words]
    by_label: dict[str, list[int]] = {}
    for index, source in enumerate(originals):
        by_label.setdefault(source.label, []).append(index)
    names = sorted(by_label)
    members = [sorted(by_label[name], key=lambda i: (len(words[i]), i)) for name in names]
    weights = np.array([len(m) for m in members], dtype=np.float64)
    weights /= weights.sum()
    made = drawn = 0
    while made < count:
        if drawn > 20 * count + 10_000:
            raise BenchError(
                f"only {made:,} of {count:,} distinct synthetic texts after {drawn:,} draws: "
                "widen --pair-window"
            )
        batch = max(1_000, 2 * (count - made))
        label_codes = rng.choice(len(names), size=batch, p=weights)
        anchors = rng.random(batch)
        offsets = rng.integers(1, window + 1, size=batch) * rng.choice((-1, 1), size=batch)
        for code, anchor, offset in zip(
            label_codes.tolist(), anchors.tolist(), offsets.tolist(), strict=True
        ):
            drawn += 1
            ranked = members[code]
            a = int(anchor * len(ranked))
            b = min(max(a + offset, 0), len(ranked) - 1)
            if b == a:
                b = a - offset if 0 <= a - offset < len(ranked) else (a + 1) % len(ranked)
            text = f"{first[ranked[a]]} {second[ranked[b]]}"
            digest = content_hash(text)
            if digest in taken:
                continue
            taken.add(digest)
            yield text, names[code]
            made += 1
            if made == count:
                return


def build_dataset(sources: list[Source], size: int, flip: float, window: int) -> Dataset:
    started = time.perf_counter()
    originals = distinct_sources(sources)
    chosen = originals[:size]
    external_ids = [source.id for source in chosen]
    texts = [source.text for source in chosen]
    truth = [source.label for source in chosen]
    rng = np.random.default_rng(SEED + size)
    taken = {content_hash(text) for text in texts}
    for k, (text, label) in enumerate(
        synthetic_texts(originals, size - len(chosen), taken, window, rng)
    ):
        external_ids.append(f"syn-{k + 1}")
        texts.append(text)
        truth.append(label)
    # Flip: a random --flip share of the items, to another label drawn by label frequency.
    names = sorted(set(truth))
    code = {name: k for k, name in enumerate(names)}
    true_codes = np.array([code[label] for label in truth], dtype=np.int64)
    frequency = np.bincount(true_codes, minlength=len(names)).astype(np.float64)
    flipped = np.zeros(size, dtype=bool)
    flipped[rng.choice(size, size=round(flip * size), replace=False)] = True
    given_codes = true_codes.copy()
    for position in np.flatnonzero(flipped).tolist():
        weights = frequency.copy()
        weights[true_codes[position]] = 0.0
        given_codes[position] = rng.choice(len(names), p=weights / weights.sum())
    given = [names[k] for k in given_codes.tolist()]
    return Dataset(
        external_ids,
        texts,
        truth,
        given,
        flipped,
        len(chosen),
        seconds=time.perf_counter() - started,
    )


def judged_positions(given: list[str]) -> np.ndarray:
    """The positions the service judges: labels with fewer than MIN_PER_LABEL items are left
    out of its training set (app.services.model_versions.build_training_set)."""
    counts = Counter(given)
    return np.array(
        [k for k, label in enumerate(given) if counts[label] >= MIN_PER_LABEL], dtype=np.int64
    )


def warm_up_dataset(sources: list[Source]) -> Dataset:
    chosen = distinct_sources(sources)[:WARM_UP_ITEMS]
    labels = [source.label for source in chosen]
    return Dataset(
        [source.id for source in chosen],
        [source.text for source in chosen],
        labels,
        labels,
        np.zeros(len(chosen), dtype=bool),
        len(chosen),
    )


# --- loading -------------------------------------------------------------------------------

TABLES = LABELED_ITEM_TABLES


def item_rows(
    loader: BulkLoader, project_id: int, data: Dataset, first_id: int, created: datetime
) -> Iterator[tuple[Any, ...]]:
    created_at = loader.time(created)
    updated_at = loader.time(created + timedelta(days=1))
    for k, (external_id, text, label) in enumerate(
        zip(data.external_ids, data.texts, data.given, strict=True)
    ):
        yield (
            first_id + k,
            project_id,
            external_id,
            text,
            content_hash(text),
            "{}",
            "{}",
            "manual",
            "labeled",
            label,
            "consensus",
            1.0,
            created_at,
            updated_at,
        )


def annotation_rows(
    loader: BulkLoader, project_id: int, data: Dataset, first_id: int, created: datetime
) -> Iterator[tuple[Any, ...]]:
    answered_at = loader.time(created + timedelta(hours=12))
    for k, label in enumerate(data.given):
        yield (
            first_id + k,
            project_id,
            first_id + k,
            "ann-1",
            label,
            False,
            "human",
            5_000,
            True,
            answered_at,
        )


def populate(setup: Setup, database: Database, projects: list[tuple[int, Dataset]]) -> None:
    """Each project's items and annotations, ids following on from one project to the next."""
    with bulk_loader(database, TABLES) as loader:
        created = utcnow() - timedelta(days=30)
        total = sum(data.size for _, data in projects)
        first_ids = np.cumsum([1] + [data.size for _, data in projects[:-1]]).tolist()

        def load(table_name: str, rows: Callable[..., Iterator[tuple[Any, ...]]]) -> int:
            return sum(
                loader.load(table_name, rows(loader, project_id, data, first_id, created))
                for (project_id, data), first_id in zip(projects, first_ids, strict=True)
            )

        setup.rows["item"] = timed(setup, f"load {total:,} items")(lambda: load("item", item_rows))
        setup.rows["annotation"] = timed(setup, f"load {total:,} annotations")(
            lambda: load("annotation", annotation_rows)
        )
        finish = "setval + VACUUM ANALYZE" if loader.postgres else "WAL checkpoint"
        timed(setup, finish)(loader.finish)
        setup.size_mib = loader.size_mib()


# --- the direct call -----------------------------------------------------------------------


@dataclass(slots=True)
class Direct:
    parts: dict[str, float]  # features fit, cross-validation, find_label_issues, quality scores
    seconds: float
    is_issue: np.ndarray
    quality: np.ndarray
    codes: np.ndarray
    oof: np.ndarray = field(repr=False)
    load: tuple[float, float] = (math.nan, math.nan)


def run_direct(
    algorithm_name: str, overrides: dict[str, Any], texts: list[str], given: list[str]
) -> Direct:
    """Features fit once, 5-fold cross-validation of the classifier, cleanlab: timed."""
    gc.collect()
    load_before = load_average()
    algorithm = get_algorithm(algorithm_name)
    params = algorithm.resolve_params(overrides)
    parts: dict[str, float] = {}
    started = lap = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal lap
        now = time.perf_counter()
        parts[name] = now - lap
        lap = now

    classes = sorted(set(given))
    index = {label: k for k, label in enumerate(classes)}
    codes = np.fromiter((index[label] for label in given), dtype=np.int64, count=len(given))
    pipeline = algorithm.pipeline(params)
    features, classifier = pipeline.named_steps["features"], pipeline.named_steps["classifier"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        matrix = features.fit_transform(texts)
        mark("features fit")
        oof = np.zeros((len(codes), len(classes)), dtype=np.float64)
        folds = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=FOLD_SEED)
        for train_rows, test_rows in folds.split(np.zeros(len(codes)), codes):
            fitted = clone(classifier).fit(matrix[train_rows], codes[train_rows])
            oof[test_rows] = fitted.predict_proba(matrix[test_rows])
        mark(f"{N_FOLDS}-fold CV")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="May not flag all label issues in class")
        is_issue = cleanlab_find_label_issues(codes, oof, n_jobs=1)
    mark("find_label_issues")
    quality = get_label_quality_scores(codes, oof)
    mark("label quality")
    seconds = time.perf_counter() - started
    del matrix
    return Direct(
        parts,
        seconds,
        np.asarray(is_issue, dtype=bool),
        np.asarray(quality, dtype=np.float64),
        codes,
        oof,
        (load_before, load_average()),
    )


@dataclass(slots=True)
class Extras:
    """What the report job computes beyond cleanlab, timed here on the direct probabilities."""

    seconds: dict[str, float]
    duplicate_groups: int
    duplicate_items: int
    wrapper_issues: int


def run_extras(direct: Direct, texts: list[str]) -> Extras:
    seconds: dict[str, float] = {}

    def clock(name: str, work: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = work()
        seconds[name] = time.perf_counter() - started
        return value

    found = clock(
        "service cleanlab wrapper",
        lambda: ml_label_issues.find_label_issues(direct.codes, direct.oof),
    )
    clock("noise matrix", lambda: ml_label_issues.noise_matrix(direct.codes, direct.oof))
    clock("outlier scores", lambda: ml_label_issues.outlier_scores(direct.codes, direct.oof))
    groups = clock(
        "near-duplicate groups",
        lambda: duplicates.near_duplicate_groups(texts, threshold=0.8),
    )
    return Extras(
        seconds,
        len(groups),
        int(sum(group.members.size for group in groups)),
        int(found.is_issue.sum()),
    )


# --- the service ---------------------------------------------------------------------------


@dataclass(slots=True)
class Service:
    seconds: float  # POST .. the poll that saw succeeded
    job: dict[str, Any]
    phases: dict[str, float]
    report_seconds: float
    polls: int
    load: tuple[float, float] = (math.nan, math.nan)


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run_service(
    client: httpx.Client, project_id: int, algorithm: str, overrides: dict[str, Any], what: str
) -> Service:
    """POST the report, poll the job every POLL_S until it ends; its phases from the polls."""
    load_before = load_average()
    seen: dict[str, float] = {}  # step -> wall clock of the first poll at or past it
    started = time.perf_counter()
    job = expect(
        client.post(
            f"/v1/projects/{project_id}/label-issues",
            json={"algorithm": algorithm, "params": overrides},
        ),
        202,
        f"{what}: POST label-issues",
    )
    polls = 0
    deadline = started + JOB_TIMEOUT_S
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        if time.perf_counter() > deadline:
            raise BenchError(f"{what}: the job did not end within {JOB_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
        job = expect(client.get(f"/v1/jobs/{job['id']}"), 200, f"{what}: GET job")
        polls += 1
        now = time.time()
        for step, fraction in STEPS:
            if step not in seen and job["progress"] >= fraction - 1e-9:
                seen[step] = now
    seconds = time.perf_counter() - started
    if job["status"] != "succeeded":
        raise BenchError(f"{what}: the job {job['status']}: {job.get('error')}")
    created, begun, ended = (
        parse_time(job[key]) for key in ("created_at", "started_at", "finished_at")
    )
    phases = {"queued": begun - created}
    previous = begun
    for step, _ in STEPS:
        at = min(seen.get(step, ended), ended)
        phases[step] = max(at - previous, 0.0)
        previous = max(previous, at)
    phases["flag"] = max(ended - previous, 0.0)
    phases["job run"] = ended - begun
    # The POST before the job row existed, and the last poll's lag after it finished.
    phases["http + poll"] = max(seconds - (ended - created), 0.0)
    report = expect(
        client.get(
            f"/v1/projects/{project_id}/label-issues/{job['result']['report_id']}",
            params={"limit": 1},
        ),
        200,
        f"{what}: GET report",
    )
    return Service(
        seconds,
        job,
        phases,
        float(report["seconds"]),
        polls,
        (load_before, load_average()),
    )


@dataclass(slots=True)
class Page:
    request: str
    first: float
    then: list[float]
    items: int


def time_pages(client: httpx.Client, project_id: int, report_id: int) -> list[Page]:
    pages = []
    path = f"/v1/projects/{project_id}/label-issues/{report_id}"
    variants: tuple[tuple[str, dict[str, str | int]], ...] = (
        (f"?limit={PAGE_LIMIT}", {"limit": PAGE_LIMIT}),
        (f"?limit={PAGE_LIMIT}&issue_type=label", {"limit": PAGE_LIMIT, "issue_type": "label"}),
    )
    for name, params in variants:
        seconds = []
        body: dict[str, Any] = {}
        for _ in range(1 + PAGE_REPEATS):
            started = time.perf_counter()
            response = client.get(path, params=params)
            seconds.append(time.perf_counter() - started)
            body = expect(response, 200, f"GET report {name}")
        pages.append(Page(name, seconds[0], seconds[1:], len(body["items"])))
    return pages


def service_label_issues(database: Database, report_id: int) -> np.ndarray:
    """The item ids of a report's suspected mislabels, worst first (its rank order), read
    from the table after the timing."""
    engine = sa.create_engine(database.url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT item_id FROM label_issue_item "
                    "WHERE report_id = :report AND is_label_issue ORDER BY rank"
                ),
                {"report": report_id},
            ).all()
    finally:
        engine.dispose()
    return np.array([row[0] for row in rows], dtype=np.int64)


# --- one size on one database --------------------------------------------------------------


@dataclass(slots=True)
class Quality:
    """How well the suspected mislabels find the flipped items."""

    k: int  # flipped items among the judged ones
    top_k_flipped: float  # share of flipped items among the k worst suspected mislabels
    flagged: int
    precision: float
    recall: float


def quality_of(flipped: np.ndarray, judged_flipped: int, issues: np.ndarray) -> Quality:
    """flipped: per item position; issues: the suspected mislabels' positions, worst first."""
    k = judged_flipped
    hits = flipped[issues]
    top = hits[:k]
    return Quality(
        k,
        float(top.mean()) if top.size else math.nan,
        int(issues.size),
        float(hits.mean()) if hits.size else math.nan,
        int(hits.sum()) / k if k else math.nan,
    )


@dataclass(slots=True)
class Round:
    first: str  # "direct" or "service": which side ran first
    service: Service
    direct: Direct


@dataclass(slots=True)
class Run:
    size: int
    setup: Setup
    warm_up_s: float
    rounds: list[Round]
    extras: Extras
    pages: list[Page]
    service_quality: Quality
    direct_quality: Quality
    same_flags: int  # items flagged by exactly one of the two sides
    judged: int

    @property
    def backend(self) -> str:
        return self.setup.backend

    @property
    def service_s(self) -> float:
        return min(r.service.seconds for r in self.rounds)

    @property
    def direct_s(self) -> float:
        return min(r.direct.seconds for r in self.rounds)

    @property
    def best_service(self) -> Service:
        return min((r.service for r in self.rounds), key=lambda s: s.seconds)

    @property
    def best_direct(self) -> Direct:
        return min((r.direct for r in self.rounds), key=lambda d: d.seconds)

    @property
    def service_beyond_cv(self) -> float:
        """The best service run's wall time outside its features + CV phase."""
        return self.best_service.seconds - self.best_service.phases["features + CV"]

    @property
    def direct_beyond_cv(self) -> float:
        """The best direct call's time outside features fit + CV (cleanlab)."""
        direct = self.best_direct
        return direct.seconds - sum(v for k, v in direct.parts.items() if k in CV_PARTS)

    @property
    def equalised_ratio(self) -> float:
        """The ratio had both sides' features + CV taken the direct call's time: what the
        service adds, without the machine's noise on the cross-validation."""
        return (self.direct_s + self.service_beyond_cv - self.direct_beyond_cv) / self.direct_s


def create_project(client: httpx.Client, name: str, labels: list[str]) -> int:
    project = expect(
        client.post(
            "/v1/projects",
            json={"name": name, "labels": labels, "annotators_per_item": 1, "phase": "production"},
        ),
        201,
        "create project",
    )
    return int(project["id"])


def run_size(
    database: Database,
    args: argparse.Namespace,
    data: Dataset,
    warm_up: Dataset,
    labels: list[str],
    run_index: list[int],
) -> Run:
    backend = database.backend
    what = f"{backend} {data.size:,}"
    setup = Setup(backend)
    setup.steps.append(("draw the data (once per size)", data.seconds))
    judged = judged_positions(data.given)
    texts = [data.texts[k] for k in judged.tolist()]
    given = [data.given[k] for k in judged.tolist()]
    with migrated_server(setup, database, ADMIN_KEY) as server:
        with api_client(server, ADMIN_KEY, REQUEST_TIMEOUT_S) as client:
            project_id, warm_up_id = timed(setup, "HTTP: create the two projects")(
                lambda: (
                    create_project(client, "bench-label-issues", labels),
                    create_project(client, "bench-label-issues-warm-up", labels),
                )
            )
            populate(setup, database, [(project_id, data), (warm_up_id, warm_up)])
            warm = timed(setup, f"warm-up report job ({WARM_UP_ITEMS} items, other project)")(
                lambda: run_service(
                    client, warm_up_id, args.algorithm, args.params, f"{what} warm-up"
                )
            )
            rounds = []
            for _ in range(args.rounds):
                direct_first = run_index[0] % 2 == 0
                run_index[0] += 1
                service: Service | None = None
                direct: Direct | None = None
                for side in ("direct", "service") if direct_first else ("service", "direct"):
                    if side == "direct":
                        direct = run_direct(args.algorithm, args.params, texts, given)
                        progress(
                            f"{what}: direct {direct.seconds:.1f} s ("
                            + ", ".join(f"{k} {v:.1f}" for k, v in direct.parts.items())
                            + ")"
                        )
                    else:
                        server.reset_peak_rss()
                        service = run_service(client, project_id, args.algorithm, args.params, what)
                        progress(
                            f"{what}: service {service.seconds:.1f} s ("
                            + ", ".join(f"{k} {v:.1f}" for k, v in service.phases.items())
                            + f"), report.seconds {service.report_seconds:.1f}"
                        )
                assert service is not None and direct is not None
                rounds.append(Round("direct" if direct_first else "service", service, direct))
            last = rounds[-1]
            report_id = int(last.service.job["result"]["report_id"])
            pages = time_pages(client, project_id, report_id)
        setup.server_rss_mib = server.peak_rss_mib()
    extras = run_extras(last.direct, texts)
    progress(
        f"{what}: extras in process: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in extras.seconds.items())
    )
    # Quality, by item position (item id - 1): the service's suspected mislabels in its rank
    # order, the direct call's by label quality (ties by position, as the service ranks).
    n_items = int(last.service.job["result"]["n_items"])
    if n_items != judged.size:
        raise BenchError(f"{what}: the report judged {n_items:,} items, expected {judged.size:,}")
    judged_flipped = int(data.flipped[judged].sum())
    service_issues = service_label_issues(database, report_id) - 1
    direct = last.direct
    flagged = np.flatnonzero(direct.is_issue)
    direct_issues = judged[flagged[np.lexsort((flagged, direct.quality[flagged]))]]
    service_quality = quality_of(data.flipped, judged_flipped, service_issues)
    direct_quality = quality_of(data.flipped, judged_flipped, direct_issues)
    differ = len(set(service_issues.tolist()) ^ set(direct_issues.tolist()))
    return Run(
        data.size,
        setup,
        warm.seconds,
        rounds,
        extras,
        pages,
        service_quality,
        direct_quality,
        differ,
        int(judged.size),
    )


# --- report --------------------------------------------------------------------------------


def seconds(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def share(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def report(runs: list[Run], datasets: dict[int, Dataset], args: argparse.Namespace) -> list[str]:
    lines = []
    for size, data in datasets.items():
        lines.append(
            f"{size:,} items: {data.n_original:,} distinct Debian descriptions + "
            f"{size - data.n_original:,} synthetic half+half texts; {int(data.flipped.sum()):,} "
            f"labels flipped ({args.flip:.0%}); labels given: "
            + ", ".join(f"{label} {count:,}" for label, count in Counter(data.given).most_common())
        )
    lines += ["", "Setup (not timed into the figures):", *setup_table([r.setup for r in runs]), ""]
    for run in runs:
        s = run.setup
        db_size = f"{s.size_mib:,.0f} MiB" if s.size_mib is not None else "?"
        rss = f"{s.server_rss_mib:,.0f} MiB" if s.server_rss_mib is not None else "?"
        lines.append(
            f"{run.backend} {run.size:,}: database {db_size}; server peak RSS (API process, "
            f"not the job process) {rss}; warm-up job {run.warm_up_s:.1f} s"
        )

    rows = []
    for run in runs:
        result = run.best_service.job["result"]
        counts = result["counts"]
        rows.append(
            [
                f"{run.size:,}",
                run.backend,
                args.algorithm,
                f"{run.judged:,}",
                seconds(run.service_s),
                seconds(run.direct_s),
                f"{run.service_s / run.direct_s:.2f}x",
                f"{run.service_beyond_cv:.1f}/{run.direct_beyond_cv:.1f}",
                f"{run.equalised_ratio:.3f}x",
                f"{counts.get('label', 0):,}",
                f"{int(run.best_direct.is_issue.sum()):,}",
                f"{result['n_issues']:,}",
                f"{result['sent_to_review']:,}",
                share(run.service_quality.top_k_flipped),
                share(run.direct_quality.top_k_flipped),
            ]
        )
    lines += [
        "",
        "SERVICE = POST .../label-issues to the job seen succeeded (HTTP, polled every "
        f"{POLL_S} s); DIRECT = features fit + {N_FOLDS}-fold CV + cleanlab find_label_issues "
        "+ get_label_quality_scores in this process, same arrays (best of "
        f"{args.rounds} round{'s' if args.rounds > 1 else ''} each)",
        *table(
            [
                "items",
                "database",
                "algorithm",
                "judged",
                "service s",
                "direct s",
                "ratio",
                "beyond CV s",
                "CV equalised",
                "label issues",
                "direct issues",
                "all issues",
                "sent to review",
                "flipped@k service",
                "flipped@k direct",
            ],
            rows,
            text_columns=3,
        ),
        "beyond CV s: service wall minus its features + CV phase / direct minus features fit "
        "+ CV (cleanlab); CV equalised: (direct + service beyond CV - direct beyond CV) / "
        "direct, the ratio without the machine's noise on the cross-validation",
        "label issues: the service's suspected mislabels; all issues: also near-duplicates and "
        "outliers; flipped@k: share of flipped items among the k worst suspected mislabels (k = "
        "flipped)",
    ]
    if args.rounds > 1:
        lines.append(
            "per round (first side, service s / direct s): "
            + "; ".join(
                f"{run.backend} {run.size:,}: "
                + ", ".join(
                    f"{r.first} first {r.service.seconds:.1f}/{r.direct.seconds:.1f}"
                    for r in run.rounds
                )
                for run in runs
            )
        )

    phase_names = ["http + poll", "queued", *(step for step, _ in STEPS), "flag"]
    lines += [
        "",
        "Where the service's time goes (s; the job's phases from the progress it writes, each "
        f"boundary dated by the first poll past it, so late by up to {POLL_S} s)",
        *table(
            ["items", "database", *phase_names, "job run", "report.seconds", "wall"],
            [
                [
                    f"{run.size:,}",
                    run.backend,
                    *(seconds(run.best_service.phases[p]) for p in phase_names),
                    seconds(run.best_service.phases["job run"]),
                    seconds(run.best_service.report_seconds),
                    seconds(run.service_s),
                ]
                for run in runs
            ],
            text_columns=2,
        ),
        "read: training set, texts, reviews (to progress 0.05); features + CV: fit once + "
        f"{N_FOLDS} folds (to 0.8); judge: cleanlab, noise matrix, outliers, near-duplicates (to "
        "0.9); store: report + snapshot + one row per issue (to 0.95); flag: suspected "
        "mislabels to review, report completed; report.seconds: the report's own field",
        "",
        "The direct call by part (s), and what the job computes beyond it, timed in this process "
        "on the same probabilities and texts (counted in neither side)",
    ]
    direct_parts = list(runs[0].best_direct.parts) if runs else []
    extra_parts = list(runs[0].extras.seconds) if runs else []
    lines += [
        *table(
            ["items", "database", *direct_parts, "direct", *extra_parts, "dup groups/items"],
            [
                [
                    f"{run.size:,}",
                    run.backend,
                    *(seconds(run.best_direct.parts[p]) for p in direct_parts),
                    seconds(run.direct_s),
                    *(seconds(run.extras.seconds[p]) for p in extra_parts),
                    f"{run.extras.duplicate_groups:,}/{run.extras.duplicate_items:,}",
                ]
                for run in runs
            ],
            text_columns=2,
        ),
        "",
        "GET .../label-issues/{report_id} (ms): the first request, then the median of "
        f"{PAGE_REPEATS} more",
        *table(
            ["items", "database", "request", "first", "then p50", "items"],
            [
                [
                    f"{run.size:,}",
                    run.backend,
                    page.request,
                    ms(page.first),
                    ms(percentile(page.then, 50)),
                    f"{page.items}",
                ]
                for run in runs
                for page in run.pages
            ],
            text_columns=3,
        ),
        "",
    ]
    for run in runs:
        sq, dq = run.service_quality, run.direct_quality
        lines.append(
            f"{run.backend} {run.size:,}: {sq.k:,} flipped among {run.judged:,} judged; "
            f"service flags {sq.flagged:,} (precision {share(sq.precision)}, recall "
            f"{share(sq.recall)}), direct {dq.flagged:,} (precision {share(dq.precision)}, "
            f"recall {share(dq.recall)}); {run.same_flags:,} items flagged by one side only; "
            f"probabilities_source {run.best_service.job['result']['probabilities_source']}"
        )
    lines.append(
        "1-minute load average before-after each side (service; direct) on "
        f"{os.cpu_count()} CPUs: "
        + ", ".join(
            f"{run.backend} {run.size:,} {r.service.load[0]:.1f}-{r.service.load[1]:.1f}; "
            f"{r.direct.load[0]:.1f}-{r.direct.load[1]:.1f}"
            for run in runs
            for r in run.rounds
        )
    )
    lines.append("")
    for run in runs:
        ratio = run.service_s / run.direct_s
        if run.size <= TARGET_SIZE:
            ok = run.service_s < TARGET_S
            lines.append(
                f"{'PASS' if ok else 'FAIL'}: {run.backend}: report for {run.size:,} items in "
                f"{run.service_s:.1f} s (target < {TARGET_S:.0f} s for {TARGET_SIZE:,} items)"
            )
        else:
            lines.append(
                f"note: {run.backend}: report for {run.size:,} items in {run.service_s:.1f} s "
                f"(the {TARGET_S:.0f} s target is for {TARGET_SIZE:,} items)"
            )
        lines.append(
            f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'}: {run.backend}: {run.size:,} items: "
            f"service/direct = {ratio:.2f}x ({run.service_s:.1f} s / {run.direct_s:.1f} s; "
            f"target <= {TARGET_RATIO}x)"
        )
    return lines


def parse_sizes(value: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in value.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    if not sizes or min(sizes) < 2 * WARM_UP_ITEMS:
        raise argparse.ArgumentTypeError(f"comma-separated sizes of at least {2 * WARM_UP_ITEMS}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=list(DEFAULT_SIZES),
        metavar="N,N,...",
        help="labeled items per report (default 10000,100000)",
    )
    parser.add_argument(
        "--algorithm",
        choices=[name for name, a in ALGORITHMS.items() if a.input == "text"],
        default="tfidf_logreg",
        help="the model cross-validated on both sides (the service default: tfidf_logreg)",
    )
    parser.add_argument(
        "--params",
        type=json.loads,
        default={},
        help="algorithm params on both sides, as JSON (e.g. '{\"max_features\": 20000}')",
    )
    parser.add_argument("--flip", type=float, default=0.1, help="share of labels flipped")
    parser.add_argument(
        "--pair-window",
        type=int,
        default=30,
        help="a synthetic text's second half comes from a description at most this many "
        "places away in its section's texts sorted by length",
    )
    parser.add_argument("--rounds", type=int, default=1, help="service + direct pairs per run")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("LABELWISE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a loopback server where the benchmark may CREATE and DROP a database",
    )
    add_backends_option(parser)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown report")
    parser.add_argument(
        "--no-code-version",
        action="store_true",
        help="do not run `git describe` for the code version",
    )
    args = parser.parse_args(argv)
    if not 0.0 < args.flip < 0.5:
        parser.error("--flip must be in (0, 0.5)")
    if args.rounds < 1 or args.pair_window < 1:
        parser.error("--rounds and --pair-window must be positive")
    path = find_debian_data()
    if path is None:
        return 2
    sources = load_sources(path)
    labels = sorted({s.label for s in sources})
    backends = [b for b in BACKENDS if b in args.only]
    print(
        f"{len(sources)} rows, {len(labels)} labels from {path}; sizes "
        f"{', '.join(f'{s:,}' for s in args.sizes)}; {args.algorithm}; {', '.join(backends)}",
        file=sys.stderr,
    )

    # A SIGTERM unwinds like Ctrl-C, so the finally blocks stop the server and drop databases.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    version = "not asked (--no-code-version)" if args.no_code_version else code_version()
    digest = source_digest()
    warm_up = warm_up_dataset(sources)
    datasets: dict[int, Dataset] = {}
    runs: list[Run] = []
    status = 0
    run_index = [0]
    for size in args.sizes:
        data = build_dataset(sources, size, args.flip, args.pair_window)
        datasets[size] = data
        progress(
            f"{size:,} items drawn in {data.seconds:.1f} s: {data.n_original:,} originals, "
            f"{size - data.n_original:,} synthetic, {int(data.flipped.sum()):,} flipped"
        )
        done, status = on_each_database(
            backends,
            args.postgres_url,
            f"labelwise_bench_label_issues_{os.getpid()}",
            partial(
                run_size,
                args=args,
                data=data,
                warm_up=warm_up,
                labels=labels,
                run_index=run_index,
            ),
        )
        runs += done
        if status:
            break
    versions = [f"SQLite {sqlite3.sqlite_version}"]
    if any(run.backend == "postgres" for run in runs):
        versions.append(f"PostgreSQL {postgres_version(args.postgres_url)}")
    header = [
        f"code {version}, app sources sha256 {digest}, {machine()}, "
        f"Python {sys.version.split()[0]}, {', '.join(versions)}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        f"sizes {', '.join(f'{s:,}' for s in args.sizes)}, algorithm {args.algorithm} "
        f"({json.dumps(args.params) if args.params else 'defaults'}), flip {args.flip:g}, "
        f"{args.rounds} round(s), poll every {POLL_S} s; "
        "thread pools (this process; the job process has the same environment): "
        + ", ".join(f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info()),
    ]
    lines = [*header, "", *report(runs, datasets, args)] if runs else header
    print("\n".join(lines))
    write_report(args.out, "bench/label_issues.py", lines)
    return status


if __name__ == "__main__":
    sys.exit(main())
