"""Active-learning replay benchmark: does margin sampling reach random's accuracy at 1,600
labels with at most 60% as many labels on the Debian descriptions?

Method, in one run on one machine:

* A real server (`labelwise serve`, a subprocess) on a fresh SQLite database in a temporary
  directory, with a bootstrap admin key and the embedded job runner.
* A project whose labels are the 15 Debian sections of the data, annotators_per_item 1.
* Every row of the data (default ../shared/data/debian-dev.jsonl.gz, or LABELWISE_DEBIAN_DATA)
  ingested over HTTP with external_id = the row id. The file holds only 9,069 distinct texts
  after normalization, so the server reports the other rows as duplicates of an earlier item;
  they are counted (with how many carry another label than their item) and not annotated.
* The answers are simulated from the labels: every created item gets its row's label as one
  annotation over HTTP (the admin key's annotator), so with annotators_per_item 1 each item
  becomes human-resolved and usable for training.
* One simulation job (POST /v1/projects/{id}/active-learning/simulations) replays those labels
  k-fold (--folds): per fold, every strategy starts from the same stratified seed set of
  --seed-size labels and adds --batch-size labels per round, refitting the project's model
  (tfidf_logreg defaults, with --params overrides; no version is trained) until --budget
  labels, each fit scored on the held-out fold. The curves are averaged over the folds. The
  job finds random's accuracy at --at-labels and, per strategy, the fewest labels whose
  accuracy reaches it.

Reported: the curves (labels -> mean accuracy per strategy), the labels each strategy needs
and their share of --at-labels, the job's wall time (started_at..finished_at from the job row,
and the client's view with queueing), ingest and annotation time, and the job's summary.
The target from the issue: margin needs <= 60% of 1,600 labels (<= 960). The same report,
with the command and the machine, and a compact curve table for docs/benchmarks.md, goes to
--out as markdown. It is a benchmark, not a test: the exit status is 0 whether the target is
met or not (1 when the run itself fails, 2 when the data is missing).

    .venv/bin/python bench/active_learning.py [--folds 3]
        [--strategies random,margin,diverse_margin,least_confidence,entropy]
        [--seed-size 100] [--batch-size 100] [--budget 2000] [--at-labels 1600]
        [--out /tmp/bench_al.md]
"""

import argparse
import importlib
import json
import shlex
import signal
import sys
import tempfile
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from common import (
    BenchError,
    Server,
    Source,
    api_client,
    code_version,
    debian_data,
    expect,
    load_sources,
    progress,
    running_server,
    service_env,
    table,
)
from common import machine as common_machine
from threadpoolctl import threadpool_info

from app.migrations import upgrade

STRATEGIES = ("random", "margin", "diverse_margin", "least_confidence", "entropy")
BASELINE = "random"
TARGET_STRATEGY = "margin"
TARGET_SHARE = 0.6
ADMIN_KEY = "lw_bench_active_learning_admin_key_0123456789abcdef"
INGEST_BATCH = 5_000  # under the server's max_items_per_request (10,000)
ANNOTATE_BATCH = 2_000
REQUEST_TIMEOUT_S = 900.0
JOB_TIMEOUT_S = 4 * 3_600.0
POLL_S = 2.0
HEARTBEAT_S = 60.0  # print a progress line at least this often while the job runs


@dataclass(slots=True)
class Run:
    rows: int
    labels: list[str]
    created: int = 0
    duplicates: int = 0
    conflicting_duplicates: int = 0
    annotated: int = 0
    ingest_seconds: float = 0.0
    annotate_seconds: float = 0.0
    job_id: int = 0
    job_seconds: float = 0.0  # started_at..finished_at
    client_seconds: float = 0.0  # POST to the poll that saw it finished
    queued_seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)


# --- HTTP ----------------------------------------------------------------------------------


def ingest(
    client: httpx.Client, project_id: int, rows: list[Source], run: Run
) -> list[tuple[int, str]]:
    """(item id, label) of the rows the server created; a duplicate row points at an earlier
    row's item and is only counted."""
    owner_label: dict[int, str] = {}
    created: list[tuple[int, str]] = []
    for start in range(0, len(rows), INGEST_BATCH):
        batch = rows[start : start + INGEST_BATCH]
        body = [{"external_id": r.id, "text": r.text} for r in batch]
        report = expect(
            client.post(f"/v1/projects/{project_id}/items", json=body), 200, "ingest items"
        )
        if report["failed"]:
            problems = [e["problem"] for e in report["results"] if e["status"] == "failed"]
            raise BenchError(f"ingest: {report['failed']} failed, e.g. {problems[:3]}")
        for row, entry in zip(batch, report["results"], strict=True):
            if entry["status"] == "created":
                owner_label[entry["id"]] = row.label
                created.append((entry["id"], row.label))
            elif entry["status"] == "duplicate":
                run.duplicates += 1
                run.conflicting_duplicates += owner_label.get(entry["id"]) != row.label
            else:
                raise BenchError(f"ingest: row {row.id} came back {entry['status']!r}")
    run.created = len(created)
    return created


def annotate(client: httpx.Client, project_id: int, pairs: list[tuple[int, str]]) -> int:
    done = 0
    for start in range(0, len(pairs), ANNOTATE_BATCH):
        batch = [
            {"item_id": i, "label": label} for i, label in pairs[start : start + ANNOTATE_BATCH]
        ]
        report = expect(
            client.post(f"/v1/projects/{project_id}/annotations", json=batch), 200, "annotate"
        )
        if report["failed"]:
            problems = [e.get("problem") for e in report["results"] if e.get("problem")]
            raise BenchError(f"annotate: {report['failed']} of {len(batch)} failed: {problems[:3]}")
        done += report["created"]
    return done


def job_seconds(job: dict[str, Any]) -> float:
    started = datetime.fromisoformat(job["started_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    return (finished - started).total_seconds()


def wait_job(client: httpx.Client, job_id: int, posted: float) -> dict[str, Any]:
    """Poll until the job ends, printing progress when it moves (and once a minute anyway)."""
    deadline = posted + JOB_TIMEOUT_S
    last_progress, last_print = -1.0, 0.0
    while time.monotonic() < deadline:
        job: dict[str, Any] = expect(client.get(f"/v1/jobs/{job_id}"), 200, f"job {job_id}")
        now = time.monotonic()
        if job["status"] == "succeeded":
            return job
        if job["status"] in ("failed", "cancelled"):
            raise BenchError(f"job {job_id} {job['status']}: {job['error']}")
        share = float(job["progress"])
        if share != last_progress or now - last_print >= HEARTBEAT_S:
            elapsed = now - posted
            eta = f", ~{elapsed * (1 - share) / share:.0f} s left" if share > 0 else ""
            progress(f"job {job_id} {job['status']}: {share:.0%} after {elapsed:.0f} s{eta}")
            last_progress, last_print = share, now
        time.sleep(POLL_S)
    raise BenchError(f"job {job_id} did not finish within {JOB_TIMEOUT_S:.0f} s")


def simulate(args: argparse.Namespace, rows: list[Source], workdir: Path) -> Run:
    labels = sorted({r.label for r in rows})
    run = Run(rows=len(rows), labels=labels)
    database_url = f"sqlite:///{workdir / 'labelwise.db'}"
    upgrade(database_url)
    env = service_env(database_url, workdir, bootstrap_admin_key=ADMIN_KEY, job_runner="inprocess")
    with (
        running_server(env, workdir / "server.log") as server,
        api_client(server, ADMIN_KEY, REQUEST_TIMEOUT_S) as client,
    ):
        try:
            return replay(args, client, rows, run)
        except BenchError as error:
            raise BenchError(f"{error}\nserver log (last lines):\n{server.log()}") from None
        finally:
            report_server_warnings(server)


def replay(args: argparse.Namespace, client: httpx.Client, rows: list[Source], run: Run) -> Run:
    project = expect(
        client.post(
            "/v1/projects",
            json={
                "name": "bench-active-learning",
                "labels": run.labels,
                "annotators_per_item": 1,
                "phase": "production",
            },
        ),
        201,
        "create project",
    )
    project_id: int = project["id"]
    started = time.perf_counter()
    pairs = ingest(client, project_id, rows, run)
    run.ingest_seconds = time.perf_counter() - started
    progress(
        f"{len(rows):,} rows ingested in {run.ingest_seconds:.1f} s: {run.created:,} items, "
        f"{run.duplicates:,} duplicates ({run.conflicting_duplicates:,} with another label)"
    )
    started = time.perf_counter()
    run.annotated = annotate(client, project_id, pairs)
    run.annotate_seconds = time.perf_counter() - started
    progress(f"{run.annotated:,} annotations in {run.annotate_seconds:.1f} s")
    request = {
        "strategies": args.strategies,
        "folds": args.folds,
        "seed_size": args.seed_size,
        "batch_size": args.batch_size,
        "budget": args.budget,
        "at_labels": args.at_labels,
        "params": args.params,
    }
    posted = time.monotonic()
    job = expect(
        client.post(f"/v1/projects/{project_id}/active-learning/simulations", json=request),
        202,
        "start simulation",
    )
    run.job_id = job["id"]
    progress(f"simulation job {run.job_id} accepted: {json.dumps(request)}")
    job = wait_job(client, run.job_id, posted)
    run.client_seconds = time.monotonic() - posted
    run.job_seconds = job_seconds(job)
    run.queued_seconds = (
        datetime.fromisoformat(job["started_at"]) - datetime.fromisoformat(job["created_at"])
    ).total_seconds()
    run.result = job["result"]
    progress(f"job {run.job_id} succeeded in {run.job_seconds:.1f} s")
    return run


def report_server_warnings(server: Server) -> None:
    with suppress(OSError):
        lines = server.log_path.read_text(errors="replace").splitlines()
        noisy = [line for line in lines if "WARNING" in line or "ERROR" in line or "Trace" in line]
        if noisy:
            progress(f"server log: {len(noisy)} warning/error lines, e.g.:")
            for line in noisy[:10]:
                progress(f"    {line[:300]}")


# --- report --------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---", *("---:" for _ in header[1:])]
    return [f"| {' | '.join(line)} |" for line in (header, align, *rows)]


def curve_rows(
    result: dict[str, Any], every: int | None = None
) -> tuple[list[str], list[list[str]]]:
    """labels -> accuracy per strategy; with `every`, only multiples of it, the first point,
    at_labels, and the labels each strategy needed (so the crossings stay visible)."""
    curves: dict[str, dict[int, float]] = {
        s: {int(n): float(a) for n, a in points} for s, points in result["curves"].items()
    }
    strategies = list(curves)
    sizes = sorted({n for points in curves.values() for n in points})
    if every:
        keep = {sizes[0], int(result["at_labels"]), sizes[-1]}
        keep |= {n for n in result["labels_needed"].values() if n is not None}
        sizes = [n for n in sizes if n % every == 0 or n in keep]
    rows = []
    for n in sizes:
        cells = [f"{n:,}"]
        for s in strategies:
            accuracy = curves[s].get(n)
            mark = "*" if result["labels_needed"].get(s) == n else ""
            cells.append("-" if accuracy is None else f"{accuracy:.4f}{mark}")
        rows.append(cells)
    return ["labels", *strategies], rows


def needed_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    at_labels = int(result["at_labels"])
    rows = []
    for s, needed in result["labels_needed"].items():
        share = result["label_share"].get(s)
        final = result["curves"][s][-1] if result["curves"][s] else None
        rows.append(
            [
                s,
                "not reached" if needed is None else f"{needed:,}",
                "-" if share is None else f"{share:.0%}",
                "-" if final is None else f"{final[1]:.4f} at {final[0]:,}",
            ]
        )
    header = ["strategy", f"labels to reach random@{at_labels:,}", "share", "last point"]
    return header, rows


def verdict(result: dict[str, Any]) -> str:
    at_labels = int(result["at_labels"])
    share = result["label_share"].get(TARGET_STRATEGY)
    limit = int(TARGET_SHARE * at_labels)
    if TARGET_STRATEGY not in result["label_share"]:
        return f"n/a: {TARGET_STRATEGY} was not replayed"
    if share is None:
        return (
            f"FAIL: {TARGET_STRATEGY} never reached random's accuracy at {at_labels:,} labels "
            f"within the budget of {result['budget']:,} (target <= {limit:,} labels)"
        )
    needed = result["labels_needed"][TARGET_STRATEGY]
    ok = share <= TARGET_SHARE + 1e-9
    return (
        f"{'PASS' if ok else 'FAIL'}: {TARGET_STRATEGY} reached random's {at_labels:,}-label "
        f"accuracy ({result['target_accuracy']:.4f}) with {needed:,} labels = {share:.0%} "
        f"(target <= {TARGET_SHARE:.0%} = {limit:,} labels)"
    )


def machine() -> str:
    # The job runs in the server; load the libraries it uses so their thread pools show here.
    for module in ("numpy", "scipy.sparse", "sklearn.linear_model"):
        with suppress(ImportError):
            importlib.import_module(module)
    pools = threadpool_info()
    blas = ", ".join(sorted({f"{i['internal_api']} {i['num_threads']} threads" for i in pools}))
    return f"{common_machine()}, {blas or 'no BLAS/OpenMP pools'}"


def timings(run: Run) -> list[str]:
    return [
        f"ingest {run.ingest_seconds:.1f} s, annotations {run.annotate_seconds:.1f} s",
        f"simulation job {run.job_id}: {run.job_seconds:.1f} s running "
        f"({run.job_seconds / 60:.1f} min; started_at..finished_at), queued "
        f"{run.queued_seconds:.1f} s, {run.client_seconds:.1f} s from POST to seen finished",
    ]


def data_lines(run: Run, data: Path) -> list[str]:
    r = run.result
    return [
        f"data {data}: {run.rows:,} rows, {len(run.labels)} labels; {run.created:,} items "
        f"({run.duplicates:,} duplicate texts, {run.conflicting_duplicates:,} of them with "
        f"another label, not annotated); {run.annotated:,} annotated",
        f"replay: {r['algorithm']} on {r['n_items']:,} items, {r['folds']} folds, seed "
        f"{r['seed_size']}, batches of {r['batch_size']}, budget {r['budget']:,}, "
        f"at_labels {r['at_labels']:,}; random's accuracy there: {r['target_accuracy']:.4f}",
    ]


def render_text(run: Run, data: Path, header: str) -> str:
    r = run.result
    out = [header, *data_lines(run, data), *timings(run), ""]
    out += [
        "Learning curves: mean held-out accuracy over the folds (* = the first point at or "
        f"above random's accuracy at {r['at_labels']:,} labels)"
    ]
    out += table(*curve_rows(r))
    out += ["", *table(*needed_rows(r)), "", f"summary: {r['summary']}", verdict(r)]
    return "\n".join(out)


def render_markdown(run: Run, data: Path, command: str, header: str) -> str:
    r = run.result
    compact_header, compact = curve_rows(r, every=400)
    full_header, full = curve_rows(r)
    lines = [
        "# Active-learning replay on the Debian descriptions",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {header}",
        "",
        *(f"- {line}" for line in data_lines(run, data)),
        *(f"- {line}" for line in timings(run)),
        "",
        f"**{verdict(r)}**",
        "",
        f"Summary (from the job): {r['summary']}",
        "",
        "## Labels needed to reach random's accuracy at "
        f"{r['at_labels']:,} labels ({r['target_accuracy']:.4f})",
        "",
        *markdown_table(*needed_rows(r)),
        "",
        "## Learning curves (compact, for docs/benchmarks.md)",
        "",
        f"Mean held-out accuracy over {r['folds']} folds; * marks the first point at or above "
        f"random's accuracy at {r['at_labels']:,} labels.",
        "",
        *markdown_table(compact_header, compact),
        "",
        "## Learning curves (every point)",
        "",
        *markdown_table(full_header, full),
        "",
        "## Raw job result",
        "",
        "```json",
        json.dumps(r, indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------


def parse_strategies(value: str) -> list[str]:
    chosen = [part.strip() for part in value.split(",") if part.strip()]
    unknown = set(chosen) - set(STRATEGIES)
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise argparse.ArgumentTypeError(
            f"distinct names from {', '.join(STRATEGIES)} (comma-separated)"
        )
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--folds", type=int, default=3, help="k of the k-fold replay (2..10)")
    parser.add_argument(
        "--strategies",
        type=parse_strategies,
        default=list(STRATEGIES),
        metavar="NAMES",
        help=f"comma-separated, from {','.join(STRATEGIES)} (random is always replayed)",
    )
    parser.add_argument("--seed-size", type=int, default=100, help="labels every replay starts at")
    parser.add_argument("--batch-size", type=int, default=100, help="labels added per round")
    parser.add_argument(
        "--budget", type=int, default=2_000, help="labels per replay, seed included"
    )
    parser.add_argument(
        "--at-labels", type=int, default=1_600, help="random's point the others must reach"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=debian_data(),
        help="JSON lines (gzip) with id, text, label",
    )
    parser.add_argument(
        "--params",
        type=json.loads,
        default={},
        metavar="JSON",
        help='tfidf_logreg param overrides for the replay, e.g. \'{"class_weight": "none"}\'',
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_al.md"), help="markdown")
    parser.add_argument(
        "--no-code-version",
        action="store_true",
        help="do not run `git describe` for the code version",
    )
    args = parser.parse_args(argv)
    if not 2 <= args.folds <= 10:
        parser.error("--folds must be in 2..10")
    if min(args.seed_size, args.batch_size, args.budget, args.at_labels) < 1:
        parser.error("--seed-size, --batch-size, --budget and --at-labels must be positive")
    if args.at_labels > args.budget:
        parser.error("--at-labels cannot exceed --budget")
    if not args.data.is_file():
        print(
            f"no data at {args.data}: this benchmark needs the Debian descriptions "
            "(shared/data/debian-dev.jsonl.gz next to the repository, or LABELWISE_DEBIAN_DATA)",
            file=sys.stderr,
        )
        return 2
    rows = load_sources(args.data)
    counts = Counter(r.label for r in rows)
    print(f"{len(rows):,} rows, {len(counts)} labels from {args.data}", file=sys.stderr)

    # A SIGTERM unwinds like Ctrl-C, so the finally blocks stop the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    command = shlex.join([".venv/bin/python", "bench/active_learning.py", *sys.argv[1:]])
    version = "not asked (--no-code-version)" if args.no_code_version else code_version()
    header = (
        f"code {version}, {machine()}, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="labelwise-bench-") as tmp:
            run = simulate(args, rows, Path(tmp))
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    print(render_text(run, args.data, header))
    args.out.write_text(render_markdown(run, args.data, command, header))
    print(f"\nmarkdown written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
