"""Run one job by id, whichever runner picked it up: claim it, run its function, record the end.

The claim is a conditional UPDATE (queued -> running), so a job runs at most once even if two
runners see it. Whatever happens inside, the job ends succeeded, failed (with a problem) or
cancelled; a function that fails wrote nothing, because results are committed in one place.

Database faults (app/db_faults.py) are not bugs here either. A job function that meets one
fails with its problem (database-unavailable, database-busy, database-full), retryable. The
runner's own short transactions (the claim, the end, failing a job whose process died) are
retried with jittered backoff for `LABELWISE_JOB_FAULT_RETRY_SECONDS`; past that, a claim
raises `JobNotClaimed` (the job stays queued: the runner enqueues it again later) and an end
is left to the stale-job sweep (the heartbeat has stopped: the job fails job-interrupted).

Each job logs its life on the `labelwise.jobs` logger, one JSON line per step, with the same
fields every time (`job_id`, `kind`, `project_id`): `job started`; then `job succeeded` (with
`duration_ms` and `result`, the result's top-level numbers, flags and short strings),
`job failed` (with `duration_ms` and `problem`, the problem's type), or
`job cancelled` (with `duration_ms`).
"""

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from app.db import Database
from app.db_faults import DatabaseFault, cause, classify, error_type
from app.errors import AppError, InternalError, JobInterrupted, Problem
from app.jobs.context import JobCancelled, JobContext, JobLost, worker_name
from app.jobs.retries import with_fault_retries
from app.models.base import utcnow
from app.models.job import Job, JobStatus
from app.models.job_kinds import JobResult
from app.services import events
from app.settings import Settings

logger = logging.getLogger("labelwise.jobs")

# A job function returns its kind's result model (app/models/job_kinds.py), stored as JSON.
JobFunction = Callable[[JobContext], JobResult]
HEARTBEAT_SECONDS = 5.0


class JobNotClaimed(Exception):
    """The database stayed away while a runner tried to claim a job: it is still queued, and
    the runner must enqueue it again later. Pickles (it crosses from a job process)."""

    def __init__(self, job_id: int, reason: str) -> None:
        super().__init__(job_id, reason)
        self.job_id = job_id
        self.reason = reason

    def __str__(self) -> str:
        return f"job {self.job_id} was not claimed: {self.reason}"


def run_job(
    database: Database,
    settings: Settings,
    job_id: int,
    *,
    functions: Mapping[str, JobFunction],
    enqueue: Callable[[int], None],
) -> None:
    """Claim and run one job; record how it ended. Raises JobNotClaimed if the database
    stayed away past the retries while claiming; nothing else escapes about the job."""
    retry_seconds = settings.job_fault_retry_seconds
    with running_here(job_id):
        try:
            job = _claim(database, job_id, retry_seconds=retry_seconds)
        except Exception as error:  # a fault may be the driver's own error, unwrapped
            fault = classify(error)
            if fault is None:
                raise
            logger.warning("job %s could not be claimed (database fault %s)", job_id, fault.value)
            raise JobNotClaimed(job_id, f"database fault {fault.value}") from None
        if job is None:
            return  # cancelled while queued, or already taken by another runner
        context = JobContext(
            job_id=job_id,
            project_id=job.project_id,
            params=job.params,
            database=database,
            settings=settings,
        )
        fields = {"job_id": job_id, "kind": job.kind, "project_id": job.project_id}
        logger.info("job started", extra={"fields": fields})
        started = time.perf_counter()
        status, result, problem = _run(job, context, functions)
        if status is None:
            return  # no longer this process's job
        _log_end(fields, status, time.perf_counter() - started, result, problem)
        try:
            _finish(
                database,
                job_id,
                status,
                result=result,
                error=problem,
                retry_seconds=retry_seconds,
            )
        except Exception as error:  # a fault may be the driver's own error, unwrapped
            if classify(error) is None:
                raise
            # Its heartbeat has stopped: the stale-job sweep fails it (job-interrupted,
            # retryable) once the database is back.
            logger.error(
                "job %s ended %s, but the database stayed away while recording it; the "
                "stale-job sweep will fail it",
                job_id,
                status.value,
                exc_info=error,
            )
    for follow_up in context.follow_ups:
        try:
            enqueue(follow_up)
        except Exception:  # it is committed and queued: the runner enqueues it again later
            logger.warning("job %s: enqueueing follow-up job %s failed", job_id, follow_up)


# A string result field longer than this (a summary sentence) is left out of the log line.
_LOGGED_STRING_CHARS = 80


def _log_end(
    fields: dict[str, Any],
    status: JobStatus,
    elapsed: float,
    result: dict[str, Any] | None,
    problem: Problem | None,
) -> None:
    """The one line of a job's end: how it ended, how long it ran, and a short result (its
    top-level numbers, flags and short strings) or its problem's type."""
    line = {**fields, "duration_ms": round(elapsed * 1000, 2)}
    if status == JobStatus.succeeded:
        line["result"] = short_result(result or {})
        logger.info("job succeeded", extra={"fields": line})
    elif status == JobStatus.failed and problem is not None:
        line["problem"] = problem.type
        logger.warning("job failed", extra={"fields": line})
    else:
        logger.info(f"job {status.value}", extra={"fields": line})


def short_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result's top-level scalars (numbers, flags, null, short strings), without its kind:
    what a log line can carry; lists, mappings and long text stay in the job's row."""
    return {
        key: value
        for key, value in result.items()
        if key != "kind"
        and (
            value is None
            or isinstance(value, bool | int | float)
            or (isinstance(value, str) and len(value) <= _LOGGED_STRING_CHARS)
        )
    }


def _run(
    job: Job, context: JobContext, functions: Mapping[str, JobFunction]
) -> tuple[JobStatus | None, dict[str, Any] | None, Problem | None]:
    """Run the job's function under a heartbeat: how it ended (None: it was failed by
    another process meanwhile), its result, its problem."""
    job_id = context.job_id
    stop_heartbeat = _start_heartbeat(context.database, job_id)
    try:
        result = functions[job.kind](context)
    except JobCancelled:
        return JobStatus.cancelled, None, None
    except JobLost:
        logger.warning("job %s was failed by another process while running; stopped", job_id)
        return None, None, None
    except AppError as error:
        return JobStatus.failed, None, error.to_problem()
    except Exception as error:
        fault = classify(error)
        if fault is not None:
            logger.warning(
                "job %s (%s) stopped on a database fault (%s)",
                job_id,
                job.kind,
                fault.value,
                exc_info=error,
            )
            return JobStatus.failed, None, fault_problem(fault, job_id)
        logger.exception("job %s (%s) failed", job_id, job.kind)
        problem = InternalError.problem(
            "The job failed unexpectedly; it has been logged. This is a bug."
        )
        return JobStatus.failed, None, problem
    finally:
        stop_heartbeat()
    return JobStatus.succeeded, result.model_dump(mode="json"), None


def fault_problem(fault: DatabaseFault, job_id: int) -> Problem:
    """The problem of a job stopped by a database fault: the fault's type and status
    (database-unavailable, database-busy, database-full), a detail for a job."""
    return error_type(fault).problem(
        f"{cause(fault)}, so the job stopped before it finished; its result was not recorded "
        "(chunks it had committed stay, see docs/jobs.md). Nothing is wrong with the job: "
        f"retry it with POST /v1/jobs/{job_id}/retry once the database is back.",
        context={"fault": fault.value},
    )


# Jobs this process is claiming or running: a periodic sweep leaves them alone, and fails
# the process's other `running` jobs (ones whose end it could not record).
_here: set[int] = set()
_here_lock = threading.Lock()


@contextmanager
def running_here(job_id: int) -> Iterator[None]:
    """Mark a job as run by this process for the block (run_job does; so must anything else
    that runs a job function in this process, or the sweep fails the job under it)."""
    with _here_lock:
        _here.add(job_id)
    try:
        yield
    finally:
        with _here_lock:
            _here.discard(job_id)


def _is_running_here(job_id: int | None) -> bool:
    with _here_lock:
        return job_id in _here


def _claim(database: Database, job_id: int, *, retry_seconds: float = 0.0) -> Job | None:
    now = utcnow()
    me = worker_name()

    def claim() -> Job | None:
        with database.session(write=True) as session:
            claimed = session.exec(
                update(Job)
                .where(col(Job.id) == job_id, col(Job.status) == JobStatus.queued)
                .values(status=JobStatus.running, started_at=now, heartbeat_at=now, worker=me)
            ).rowcount
            job = session.get(Job, job_id)
            session.commit()
        if claimed:
            return job
        # An earlier attempt's commit may have stored this very claim before its connection
        # failed: the job is then ours, with this attempt's start time.
        if job is not None and (job.status, job.worker, job.started_at) == (
            JobStatus.running,
            me,
            now,
        ):
            return job
        return None

    return with_fault_retries(f"job {job_id}: claim", claim, seconds=retry_seconds)


def _finish(
    database: Database,
    job_id: int,
    status: JobStatus,
    *,
    result: dict[str, Any] | None = None,
    error: Problem | None = None,
    retry_seconds: float = 0.0,
) -> None:
    """Record how a job ended, unless it is no longer running here (a sweep failed it), and
    its event (job.succeeded, job.failed, job.cancelled) in the same transaction. Safe to run
    again: a second run finds the job no longer running and changes nothing."""
    values: dict[str, Any] = {"status": status, "finished_at": utcnow()}
    if status == JobStatus.succeeded:
        values |= {"progress": 1.0, "result": result}
    if error is not None:
        values["error"] = error.model_dump(mode="json", exclude_none=True)

    def finish() -> None:
        with database.session(write=True) as session:
            finished = session.exec(
                update(Job)
                .where(
                    col(Job.id) == job_id,
                    col(Job.status) == JobStatus.running,
                    col(Job.worker) == worker_name(),
                )
                .values(**values)
            ).rowcount
            _emit_finished(session, job_id if finished else None)
            session.commit()

    with_fault_retries(f"job {job_id}: recording its end", finish, seconds=retry_seconds)


def _emit_finished(session: Session, job_id: int | None) -> None:
    """The event of a job this transaction has just ended (None: it ended nothing)."""
    job = session.get(Job, job_id) if job_id is not None else None
    if job is not None:
        events.emit_job_finished(session, job)


def _start_heartbeat(database: Database, job_id: int) -> Callable[[], None]:
    """Refresh heartbeat_at while a job runs, so other processes can tell it is alive."""
    stop = threading.Event()

    def beat() -> None:
        failing = False
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                with database.session(write=True) as session:
                    session.exec(
                        update(Job)
                        .where(col(Job.id) == job_id, col(Job.status) == JobStatus.running)
                        .values(heartbeat_at=utcnow())
                    )
                    session.commit()
            except Exception as error:  # a missed beat is harmless; the next one retries
                fault = classify(error)
                if not failing:  # once per streak: the database may be away for a while
                    logger.warning(
                        "job %s: heartbeat failed (%s); trying every %.0f s",
                        job_id,
                        f"database fault {fault.value}" if fault else type(error).__name__,
                        HEARTBEAT_SECONDS,
                        exc_info=fault is None,
                    )
                failing = True
                continue
            if failing:
                logger.info("job %s: heartbeat works again", job_id)
            failing = False

    thread = threading.Thread(target=beat, name=f"job-{job_id}-heartbeat", daemon=True)
    thread.start()

    def stop_beating() -> None:
        stop.set()
        thread.join()

    return stop_beating


def fail_interrupted_jobs(
    database: Database, *, stale_after: timedelta, at_startup: bool = True
) -> list[int]:
    """Mark running jobs whose process is gone as failed (retryable); return their ids.

    A job is interrupted when its worker is a dead process on this host, or when its
    heartbeat is older than stale_after (its worker was on another host, or hung). At
    start-up a job "owned" by this very pid is also dead (a restarted container reuses
    pids); later sweeps leave alone the jobs this process is running, and fail its others
    (a job whose end it could not record while the database was away).
    """
    now = utcnow()
    interrupted: list[int] = []
    with database.session(write=True) as session:
        for job in session.exec(select(Job).where(col(Job.status) == JobStatus.running)):
            if not at_startup and job.worker == worker_name() and _is_running_here(job.id):
                continue
            beat = job.heartbeat_at or job.started_at or job.created_at
            if _owner_is_dead(job.worker) or now - beat > stale_after:
                assert job.id is not None
                job.status, job.finished_at = JobStatus.failed, now
                job.error = JobInterrupted.problem(
                    "The job was interrupted (its process stopped before it finished); "
                    "nothing it was computing was saved. Retry it with POST /v1/jobs/"
                    f"{job.id}/retry."
                ).model_dump(mode="json", exclude_none=True)
                session.add(job)
                session.flush()
                events.emit_job_finished(session, job)
                interrupted.append(job.id)
        session.commit()
    for job_id in interrupted:
        logger.warning("job %s was interrupted by a restart; marked failed", job_id)
    return interrupted


def _owner_is_dead(worker: str | None) -> bool:
    if not worker or ":" not in worker:
        return False
    host, _, pid_text = worker.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # this process is just starting, so it runs nothing yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """An exited process nobody has reaped yet (an orphaned job process whose new parent,
    PID 1 in some containers, never reaps) still answers kill(pid, 0)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def fail_job_if_running(
    database: Database, job_id: int, detail: str, *, retry_seconds: float = 0.0
) -> None:
    """Fail a job whose process is known to be gone (retryable); database faults are
    retried for `retry_seconds`, then raised (the stale-job sweep fails the job later)."""
    problem = JobInterrupted.problem(detail)
    finished_at = utcnow()

    def fail() -> None:
        with database.session(write=True) as session:
            failed = session.exec(
                update(Job)
                .where(col(Job.id) == job_id, col(Job.status) == JobStatus.running)
                .values(
                    status=JobStatus.failed,
                    finished_at=finished_at,
                    error=problem.model_dump(mode="json", exclude_none=True),
                )
            ).rowcount
            _emit_finished(session, job_id if failed else None)
            session.commit()

    with_fault_retries(f"job {job_id}: failing it", fail, seconds=retry_seconds)


class StaleJobSweeper:
    """Fails, every half stale period, running jobs whose worker stopped beating, so a job
    lost with another host does not wait for some process's next start."""

    def __init__(self, database: Database, *, stale_after: timedelta) -> None:
        self.database = database
        self.stale_after = stale_after
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.stale_after.total_seconds() / 2):
            try:
                fail_interrupted_jobs(self.database, stale_after=self.stale_after, at_startup=False)
            except Exception:  # the database may be briefly unreachable; try next time
                logger.warning("stale-job sweep failed", exc_info=True)


def queued_job_ids(database: Database) -> list[int]:
    with database.session() as session:
        rows = session.exec(
            select(col(Job.id)).where(col(Job.status) == JobStatus.queued).order_by(col(Job.id))
        )
        return [job_id for job_id in rows if job_id is not None]
