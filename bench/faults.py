"""Database faults under load (issue 24): the scenarios of tests/e2e/test_db_faults.py, run
longer, with what happened printed per scenario.

Each scenario starts one `labelwise serve` process on a fresh migrated database, a production
project of --items unlabeled items (two annotators per item) and --annotators annotator keys
made through the API. The annotators loop "POST a batch of 5, answer it" (an answer refused
is sent again after the Retry-After, at most 0.25 s, up to 5 times), one reader GETs the
project's stats and items, one client polls /readyz every 0.1 s, and a model training job is
started and running when the fault begins. The harness is tests/e2e/faults.py (one harness for
the tests and this bench).

* terminations (PostgreSQL at --postgres-url): every session of the service's database ended
  with pg_terminate_backend --terminations times (4), one every --every seconds (5: 4 in 20 s);
* restart (PostgreSQL, a throwaway cluster of Debian's binaries on a free port):
  `pg_ctl stop -m fast`, down --outage seconds (5), started again;
* sqlite-lock: another process holds SQLite's write lock (BEGIN IMMEDIATE) for --hold seconds
  (5), with LABELWISE_SQLITE_BUSY_TIMEOUT_MS=300;
* full-disk (root only): SQLite on a 48 MiB tmpfs, filled by a filler file; deleted
  --full-for seconds (5) after the first refused write.

Reported per scenario: requests by kind and outcome (status and problem type, or the
transport error of a connection that ended without a response), the recovery times after the
fault ended (first 2xx write, first /readyz 200), the answers acknowledged and stored (checked
in SQL: every acknowledged answer stored, no item over its overlap), how the job ended, and
the errors the server logged. Exit status 1 if any scenario broke the contract (a 500, a
dropped connection, an undocumented problem, an acknowledged answer lost, a job not ended
succeeded or retryable).

    .venv/bin/python bench/faults.py [--only terminations,restart,sqlite-lock,full-disk]
                                     [--annotators 6] [--out report.md]
"""

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from common import (  # noqa: E402
    BenchError,
    code_version,
    fresh_database,
    load_average,
    machine,
    progress,
    table,
    write_report,
)

from app.migrations import upgrade  # noqa: E402
from tests.e2e import faults  # noqa: E402
from tests.e2e.faults import WRITES, Call, Run, first_ok_after  # noqa: E402

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SCENARIOS = ("terminations", "restart", "sqlite-lock", "full-disk")


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def scenario_lines(run: Run) -> list[str]:
    """The tables and figures of one scenario."""
    lines = [f"## {run.name}", ""]
    counts = Counter((c.kind, c.outcome) for c in run.calls)
    lines += table(
        ["request", "outcome", "count"],
        [[kind, outcome, f"{n:,}"] for (kind, outcome), n in sorted(counts.items())],
        text_columns=2,
    )
    dropped = run.transport_errors()
    lines.append("")
    lines.append(f"dropped connections (no response): {len(dropped)}")
    lines.append(f"500s: {len(run.statuses(500))}")
    lines.append(f"contract violations: {len(run.contract_violations())}")
    recovery = []
    for n, (_, ended) in enumerate(run.faults, 1):
        recovery.append(
            [
                str(n),
                seconds(first_ok_after(run.calls, ended, WRITES)),
                seconds(first_ok_after(run.calls, ended, ("annotations",))),
                seconds(first_ok_after(run.calls, ended, ("readyz",))),
            ]
        )
    lines.append("")
    lines.append("recovery: from the end of each fault (sessions terminated, server accepting")
    lines.append("connections again, lock released, filler deleted) to the end of the first 2xx")
    lines += table(["fault", "write", "answers", "/readyz"], recovery)
    if run.check is not None:
        lines.append("")
        lines.append(
            f"answers: {run.check.acknowledged:,} acknowledged, {run.check.stored:,} stored; "
            f"acknowledged but not stored: {len(run.check.missing)}; items over the overlap: "
            f"{run.check.over_overlap}"
        )
    if run.job is not None:
        lines.append(run.job.summary)
    lines += run.notes
    if run.phases:
        lines.append("phases: " + ", ".join(f"{p} {t:.1f} s" for p, t in run.phases))
    lines += [f"harness: {failure}" for failure in run.harness_failures]
    errors = run.tracebacks()
    if errors:
        lines.append("server log errors:")
        lines += [f"  {error}" for error in errors[:8]]
    lines.append("")
    return lines


def count(calls: list[Call], status: int, problem: str | None = None) -> str:
    """How many of the calls had `status` (and the problem type `problem`, if given)."""
    return str(
        sum(1 for c in calls if c.status == status and (problem is None or c.problem == problem))
    )


def summary_lines(runs: list[Run]) -> list[str]:
    """One row per scenario, the columns of docs/hardening.md's table."""
    rows = []
    for run in runs:
        requests = [c for c in run.calls if c.kind != "readyz"]

        ok = sum(1 for c in requests if c.ok)
        last = run.faults[-1][1] if run.faults else None
        write = None if last is None else first_ok_after(run.calls, last, WRITES)
        ready = None if last is None else first_ok_after(run.calls, last, ("readyz",))
        check = run.check
        rows.append(
            [
                run.name,
                "-" if run.job is None else run.job.brief,
                f"{len(requests):,}",
                f"{ok:,}",
                count(requests, 503, faults.UNAVAILABLE),
                count(requests, 503, faults.BUSY),
                count(requests, 507),
                count(requests, 500),
                str(len(run.transport_errors())),
                seconds(write),
                seconds(ready),
                "-" if check is None else f"{check.acknowledged:,} / {check.stored:,}",
            ]
        )
    header = [
        "scenario",
        "job",
        "requests",
        "2xx",
        "503 unavail.",
        "503 busy",
        "507",
        "500",
        "dropped",
        "write rec.",
        "readyz rec.",
        "ack / stored",
    ]
    title = "## summary (requests without /readyz; recovery after the last fault)"
    return [title, "", *table(header, rows, text_columns=2)]


def broken(run: Run) -> bool:
    return bool(
        run.contract_violations()
        or run.harness_failures
        or (run.check is not None and run.check.problems)
        or (run.job is not None and run.job.problems())
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {','.join(SCENARIOS)}",
    )
    parser.add_argument("--annotators", type=int, default=6)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--terminations", type=int, default=4)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--outage", type=float, default=5.0)
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--full-for", type=float, default=5.0)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--out", type=Path, help="also write the report here (Markdown)")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    if not chosen or set(chosen) - set(SCENARIOS):
        parser.error(f"--only: choose from {', '.join(SCENARIOS)}")

    before = load_average()
    runs: list[Run] = []
    skipped: list[str] = []
    common = {"annotators": args.annotators, "items": args.items}
    try:
        for scenario in chosen:
            progress(f"{scenario} ...")
            if scenario == "terminations":
                with fresh_database("postgres", args.postgres_url, "labelwise_bench_faults") as db:
                    if db is None:
                        skipped.append("terminations: PostgreSQL is unreachable")
                        continue
                    upgrade(db.url)
                    server_url = faults.maintenance_url(args.postgres_url)
                    runs.append(
                        faults.terminations(
                            db.url,
                            server_url,
                            db.workdir,
                            times=args.terminations,
                            every=args.every,
                            settle=3.0,
                            **common,
                        )
                    )
            elif scenario == "restart":
                binaries = faults.postgres_binaries()
                if binaries is None:
                    skipped.append("restart: no /usr/lib/postgresql/*/bin/initdb and pg_ctl")
                    continue
                with tempfile.TemporaryDirectory(prefix="labelwise-bench-") as tmp:
                    restarted = faults.restart(
                        Path(tmp), binaries, outage=args.outage, settle=3.0, **common
                    )
                    runs.append(restarted)
            elif scenario == "sqlite-lock":
                with tempfile.TemporaryDirectory(prefix="labelwise-bench-") as tmp:
                    runs.append(faults.sqlite_lock(Path(tmp), hold=args.hold, settle=3.0, **common))
            else:
                tmpfs = faults.Tmpfs(size_mib=48)
                reason = tmpfs.mount()
                if reason is not None:
                    tmpfs.unmount()
                    skipped.append(f"full-disk: cannot mount a tmpfs ({reason})")
                    continue
                try:
                    with tempfile.TemporaryDirectory(prefix="labelwise-bench-") as tmp:
                        runs.append(
                            faults.full_disk(
                                Path(tmp), tmpfs, full_for=args.full_for, settle=3.0, **common
                            )
                        )
                finally:
                    tmpfs.unmount()
    except (BenchError, RuntimeError) as error:
        print(error, file=sys.stderr)
        return 1

    lines = [
        f"code {code_version()}, {machine()}; load {before}-{load_average()}",
        f"{args.annotators} annotators, batches of 5, {args.items:,} items, 2 annotators per "
        f"item; terminations {args.terminations} x every {args.every:g} s; restart outage "
        f"{args.outage:g} s; SQLite lock held {args.hold:g} s (busy timeout 300 ms); disk full "
        f"{args.full_for:g} s after the first refusal",
        "",
    ]
    for run in runs:
        lines += scenario_lines(run)
    if runs:
        lines += summary_lines(runs)
    lines += [f"skipped {reason}" for reason in skipped]
    print("\n".join(lines))
    if args.out:
        write_report(args.out, "bench/faults.py", lines)
    return 1 if any(broken(run) for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
