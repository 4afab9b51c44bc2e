"""Database faults are not bugs (issue 24): six annotators fetch batches and answer against a
real server while its database fails under it, and a model trains.

* PostgreSQL: every session of the service's database terminated four times;
* PostgreSQL: the server stopped (pg_ctl stop -m fast) for 3 s and started again;
* SQLite: another process holds the write lock past LABELWISE_SQLITE_BUSY_TIMEOUT_MS;
* SQLite: the disk (a small tmpfs) is full, then has room again.

Always: no 500, no connection dropped without a response, every error a documented problem
(503 database-unavailable or database-busy with Retry-After, 507 database-full) naming its
`context.fault`; every acknowledged answer stored, no item over its overlap (checked in SQL);
the job ends succeeded, or failed with a problem and then succeeds when retried. The harness
and the scenarios are tests/e2e/faults.py; bench/faults.py runs them longer."""

from pathlib import Path

import pytest

from app.migrations import upgrade
from tests.databases import POSTGRES_URL, fresh_database
from tests.e2e import faults
from tests.e2e.faults import BUSY, FULL, UNAVAILABLE, WRITES, Run, first_ok_after

pytestmark = pytest.mark.e2e

RECOVERY_S = 2.0  # after the database is back: /readyz 200 and writes 2xx within this


def need_postgres() -> None:
    if not POSTGRES_URL:
        pytest.skip("LABELWISE_TEST_POSTGRES_URL is not set: no PostgreSQL to inject faults into")


def assert_no_bug(run: Run) -> None:
    """The contract every scenario keeps: no 500, no dropped connection, only documented
    problems; nothing acknowledged lost, no item over its overlap; the job not stuck."""
    report = run.report()
    assert not run.harness_failures, report
    assert run.transport_errors() == [], report
    assert run.statuses(500) == [], report
    assert run.contract_violations() == [], report
    assert run.check is not None and run.check.acknowledged > 0, report
    assert run.check.problems == [], report
    assert run.job is not None and run.job.problems() == [], report
    assert run.faults and run.recovered_at is not None, report


def test_postgres_sessions_terminated_under_load(tmp_path: Path) -> None:
    need_postgres()
    with fresh_database("postgresql", tmp_path) as url:
        upgrade(url)
        server = faults.maintenance_url()
        run = faults.terminations(url, server, tmp_path, times=4, every=2.0, settle=1.5)
    report = run.report()
    assert_no_bug(run)
    assert run.statuses(507) == [], report
    # The faults happened: each termination ended the service's sessions.
    assert all(" 0 sessions" not in note for note in run.notes if "termination" in note), report
    assert run.recovered_at is not None
    assert first_ok_after(run.calls, run.recovered_at, ("annotations",)) is not None, report
    assert first_ok_after(run.calls, run.recovered_at, ("readyz",)) is not None, report


def test_postgres_restart_under_load(tmp_path: Path) -> None:
    binaries = faults.postgres_binaries()
    if binaries is None:
        pytest.skip(
            "no /usr/lib/postgresql/*/bin/initdb and pg_ctl: cannot run a cluster to restart"
        )
    run = faults.restart(tmp_path, binaries, outage=3.0, settle=2.5)
    report = run.report()
    assert_no_bug(run)
    assert run.statuses(507) == [], report
    assert run.outage is not None and run.recovered_at is not None
    down, up = run.outage
    # While the server is down: the API says the database is unavailable, and so does /readyz.
    during = run.during(down, up, (*WRITES, "read"))
    assert during, report
    assert {(c.status, c.problem) for c in during} == {(503, UNAVAILABLE)}, report
    ready_during = run.during(down, up, ("readyz",))
    assert ready_during and {c.status for c in ready_during} == {503}, report
    # Once it accepts connections again: ready, and writes succeed, within RECOVERY_S.
    ready = first_ok_after(run.calls, run.recovered_at, ("readyz",))
    writes = first_ok_after(run.calls, run.recovered_at, WRITES)
    assert ready is not None and ready <= RECOVERY_S, (ready, report)
    assert writes is not None and writes <= RECOVERY_S, (writes, report)


def test_sqlite_write_lock_held_by_another_process(tmp_path: Path) -> None:
    run = faults.sqlite_lock(tmp_path, busy_timeout_ms=300, hold=3.0, settle=1.5)
    report = run.report()
    assert_no_bug(run)
    assert run.statuses(507) == [], report
    [(began, released)] = run.faults
    # Writes that ended while the lock was held could not have written: 503 database-busy.
    blocked = run.during(began, released, WRITES)
    assert blocked, report
    assert {(c.status, c.problem) for c in blocked} == {(503, BUSY)}, report
    assert all(c.retry_after for c in blocked), report
    # Reads never wait for a writer.
    reads = run.during(began, released, ("read",))
    assert reads and {c.status for c in reads} == {200}, report
    writes = first_ok_after(run.calls, released, WRITES)
    assert writes is not None and writes <= RECOVERY_S, (writes, report)


def test_sqlite_full_disk(tmp_path: Path) -> None:
    tmpfs = faults.Tmpfs(size_mib=48)
    reason = tmpfs.mount()
    if reason is not None:
        tmpfs.unmount()
        pytest.skip(f"cannot mount a tmpfs to fill ({reason}): run as root to test a full disk")
    try:
        run = faults.full_disk(tmp_path, tmpfs, full_for=2.0, settle=1.5)
    finally:
        tmpfs.unmount()
    report = run.report()
    assert_no_bug(run)
    [(_, drained)] = run.faults
    refused = [c for c in run.calls if c.kind in WRITES and c.status == 507]
    assert refused, report
    assert {c.problem for c in refused} == {FULL}, report
    # From the first refusal until the filler is deleted: writes refused, reads answered.
    first = min(c.started for c in refused)
    reads = run.during(first, drained, ("read",))
    assert reads and {c.status for c in reads} == {200}, report
    assert run.integrity == "ok", report
    writes = first_ok_after(run.calls, drained, WRITES)
    assert writes is not None and writes <= RECOVERY_S, (writes, report)
