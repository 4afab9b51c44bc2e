"""Run one job by id, whichever runner picked it up: claim it, run its function, record the end.

The claim is a conditional UPDATE (queued -> running), so a job runs at most once even if two
runners see it. Whatever happens inside, the job ends succeeded, failed (with a problem) or
cancelled; a function that fails wrote nothing, because results are committed in one place.
"""

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from app.db import Database
from app.errors import AppError, InternalError, JobInterrupted, Problem
from app.jobs.context import JobCancelled, JobContext, JobLost, worker_name
from app.models.base import utcnow
from app.models.job import Job, JobStatus
from app.models.job_kinds import JobResult
from app.services import events
from app.settings import Settings

logger = logging.getLogger("labelwise.jobs")

# A job function returns its kind's result model (app/models/job_kinds.py), stored as JSON.
JobFunction = Callable[[JobContext], JobResult]
HEARTBEAT_SECONDS = 5.0


def run_job(
    database: Database,
    settings: Settings,
    job_id: int,
    *,
    functions: Mapping[str, JobFunction],
    enqueue: Callable[[int], None],
) -> None:
    job = _claim(database, job_id)
    if job is None:
        return  # cancelled while queued, or already taken by another runner
    context = JobContext(
        job_id=job_id,
        project_id=job.project_id,
        params=job.params,
        database=database,
        settings=settings,
    )
    stop_heartbeat = _start_heartbeat(database, job_id)
    try:
        result = functions[job.kind](context)
    except JobCancelled:
        _finish(database, job_id, JobStatus.cancelled)
        return
    except JobLost:
        logger.warning("job %s was failed by another process while running; stopped", job_id)
        return
    except AppError as error:
        _finish(database, job_id, JobStatus.failed, error=error.to_problem())
        return
    except Exception:
        logger.exception("job %s (%s) failed", job_id, job.kind)
        problem = InternalError.problem(
            "The job failed unexpectedly; it has been logged. This is a bug."
        )
        _finish(database, job_id, JobStatus.failed, error=problem)
        return
    finally:
        stop_heartbeat()
    _finish(database, job_id, JobStatus.succeeded, result=result.model_dump(mode="json"))
    for follow_up in context.follow_ups:
        enqueue(follow_up)


def _claim(database: Database, job_id: int) -> Job | None:
    now = utcnow()
    with database.session(write=True) as session:
        claimed = session.exec(
            update(Job)
            .where(col(Job.id) == job_id, col(Job.status) == JobStatus.queued)
            .values(
                status=JobStatus.running, started_at=now, heartbeat_at=now, worker=worker_name()
            )
        ).rowcount
        job = session.get(Job, job_id) if claimed else None
        session.commit()
        return job


def _finish(
    database: Database,
    job_id: int,
    status: JobStatus,
    *,
    result: dict[str, Any] | None = None,
    error: Problem | None = None,
) -> None:
    """Record how a job ended, unless it is no longer running here (a sweep failed it), and
    its event (job.succeeded, job.failed, job.cancelled) in the same transaction."""
    values: dict[str, Any] = {"status": status, "finished_at": utcnow()}
    if status == JobStatus.succeeded:
        values |= {"progress": 1.0, "result": result}
    if error is not None:
        values["error"] = error.model_dump(mode="json", exclude_none=True)
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


def _emit_finished(session: Session, job_id: int | None) -> None:
    """The event of a job this transaction has just ended (None: it ended nothing)."""
    job = session.get(Job, job_id) if job_id is not None else None
    if job is not None:
        events.emit_job_finished(session, job)


def _start_heartbeat(database: Database, job_id: int) -> Callable[[], None]:
    """Refresh heartbeat_at while a job runs, so other processes can tell it is alive."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                with database.session(write=True) as session:
                    session.exec(
                        update(Job)
                        .where(col(Job.id) == job_id, col(Job.status) == JobStatus.running)
                        .values(heartbeat_at=utcnow())
                    )
                    session.commit()
            except Exception:  # a missed beat is harmless; the next one retries
                logger.warning("job %s: heartbeat failed", job_id, exc_info=True)

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
    pids); later sweeps leave this process's own jobs alone.
    """
    now = utcnow()
    interrupted: list[int] = []
    with database.session(write=True) as session:
        for job in session.exec(select(Job).where(col(Job.status) == JobStatus.running)):
            if not at_startup and job.worker == worker_name():
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


def fail_job_if_running(database: Database, job_id: int, detail: str) -> None:
    """Fail a job whose process is known to be gone (retryable)."""
    problem = JobInterrupted.problem(detail)
    with database.session(write=True) as session:
        failed = session.exec(
            update(Job)
            .where(col(Job.id) == job_id, col(Job.status) == JobStatus.running)
            .values(
                status=JobStatus.failed,
                finished_at=utcnow(),
                error=problem.model_dump(mode="json", exclude_none=True),
            )
        ).rowcount
        _emit_finished(session, job_id if failed else None)
        session.commit()


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
