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
import json
import math
import os
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from common import (
    BACKENDS,
    LABELED_ITEM_TABLES,
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

from app.ml.agreement import Votes, krippendorff_alpha_nominal, label_counts
from app.models.base import utcnow
from app.services.item_status import derive

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_OUT = Path("/tmp/bench_agreement.md")
DEFAULT_ACCURACIES = (0.9, 0.85, 0.8, 0.75, 0.5)
ADMIN_KEY = "lw_bench_agreement_admin_key_0123456789abcdef"
TARGET_S = 2.0
AGREEMENT_THRESHOLD = 0.6
PAGE_LIMIT = 1000
SEED = 20_260_102
REQUEST_TIMEOUT_S = 300.0


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
        accuracy: np.ndarray = right.sum(axis=0) / np.maximum(given.sum(axis=0), 1)
        return accuracy


def annotator_names(count: int) -> list[str]:
    return [f"ann-{i}" for i in range(1, count + 1)]


# --- loading -------------------------------------------------------------------------------

TABLES = LABELED_ITEM_TABLES


def item_rows(
    loader: BulkLoader,
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
    heads = item_heads(sources, len(answers.label), project_id)
    for given, (_, head) in zip(answers.label.tolist(), heads, strict=True):
        resolution = derive(
            [(None, True) if code < 0 else (labels[code], False) for code in given],
            annotators_per_item=required,
        )
        statuses[str(resolution.status)] += 1
        yield (
            *head,
            str(resolution.status),
            resolution.label,
            resolution.resolved_by,
            resolution.quality,
            created_at,
            updated_at,
        )


def annotation_rows(
    loader: BulkLoader, project_id: int, labels: list[str], answers: Answers, created: datetime
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
class AgreementSetup(Setup):
    """The setup, and the statuses the loaded items were given."""

    statuses: Counter[str] = field(default_factory=Counter)


def populate(
    setup: AgreementSetup,
    database: Database,
    project_id: int,
    sources: list[Source],
    labels: list[str],
    answers: Answers,
) -> None:
    with bulk_loader(database, TABLES) as loader:
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
        finish = "setval + VACUUM ANALYZE" if loader.postgres else "WAL checkpoint"
        timed(setup, finish)(loader.finish)
        setup.size_mib = loader.size_mib()


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
    setup: AgreementSetup
    timings: list[Timing]
    load: tuple[float, float] = (math.nan, math.nan)  # 1-minute load average before, after


def run_backend(
    database: Database,
    args: argparse.Namespace,
    sources: list[Source],
    labels: list[str],
    answers: Answers,
) -> Run:
    backend = database.backend
    setup = AgreementSetup(backend)
    with migrated_server(setup, database, ADMIN_KEY) as server:
        with api_client(server, ADMIN_KEY, REQUEST_TIMEOUT_S) as client:
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
            populate(setup, database, project_id, sources, labels, answers)
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


def figure(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(runs: list[Run], answers: Answers, labels: list[str]) -> list[str]:
    items, annotators = answers.label.shape
    lines = [
        f"Setup (not timed into the figures): {items:,} items x {annotators} annotators",
        *setup_table([run.setup for run in runs]),
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
    add_backends_option(parser)
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
    path = find_debian_data()
    if path is None:
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
    runs, status = on_each_database(
        backends,
        args.postgres_url,
        f"labelwise_bench_agreement_{os.getpid()}",
        lambda database: run_backend(database, args, sources, labels, answers),
    )
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
    write_report(args.out, "bench/agreement.py", lines)
    return status


if __name__ == "__main__":
    sys.exit(main())
