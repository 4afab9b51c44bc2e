"""Job runners. The embedded default runs jobs in a child process of the API process; with
PostgreSQL, `labelwise worker` processes run them through procrastinate instead.

Both call the same app.jobs.execute.run_job with the same job functions.
"""

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from app.db import Database
from app.db_faults import classify
from app.jobs.context import JobRunner
from app.jobs.execute import (
    JobNotClaimed,
    StaleJobSweeper,
    fail_interrupted_jobs,
    fail_job_if_running,
    queued_job_ids,
    run_job,
)
from app.jobs.kinds import JOB_FUNCTIONS
from app.logs import configure_logging
from app.settings import Settings

logger = logging.getLogger("labelwise.jobs")

# The least wait before enqueueing again a job that could not be claimed (the database stayed
# away for LABELWISE_JOB_FAULT_RETRY_SECONDS); the wait is the larger of this and that setting.
MIN_REQUEUE_SECONDS = 1.0


class InProcessRunner:
    """The embedded default: jobs run in a child process that this API process owns.

    Training and scoring hold the GIL for long stretches (scipy's L-BFGS, the TF-IDF
    analyzer); on a thread they made API requests 15x slower at p95 (bench/registry.py).
    A child process keeps them off the event loop and off the request path, and needs no
    setup: it uses the same database through its own engine.
    """

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pending: set[Future[list[int]]] = set()
        self._dispatch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labelwise-jobs")
        self._stopping = False
        self._timers: set[threading.Timer] = set()
        self._sweeper = StaleJobSweeper(
            database, stale_after=timedelta(seconds=settings.job_stale_seconds)
        )

    def start(self) -> None:
        """Fail the jobs a previous run left running, enqueue the queued ones, start the
        sweep. A database that is away now (a fault, not a missing schema) does not stop
        the start: the recovery is tried again later, until it succeeds."""
        try:
            self._recover()
        except SQLAlchemyError as error:
            fault = classify(error)
            if fault is None:
                raise
            logger.warning(
                "job runner start-up: database fault %s; recovering queued and interrupted "
                "jobs later",
                fault.value,
            )
            self._later("start-up-recovery", self._recover_or_retry)
        self._sweeper.start()

    def _recover(self) -> None:
        stale = timedelta(seconds=self.settings.job_stale_seconds)
        fail_interrupted_jobs(self.database, stale_after=stale)
        for job_id in queued_job_ids(self.database):  # accepted before a restart: run them now
            self.enqueue(job_id)

    def _recover_or_retry(self) -> None:
        try:
            self._recover()
        except Exception:
            logger.warning("job runner start-up recovery failed again; retrying later")
            self._later("start-up-recovery", self._recover_or_retry)

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.settings.job_processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_child_start,
                    initargs=(self.settings.model_dump_json(), os.getpid()),
                )
            return self._pool

    def enqueue(self, job_id: int) -> None:
        if self._stopping:
            # The job row is committed and queued: the next start runs it.
            logger.info("job %s stays queued: the runner is stopping", job_id)
            return
        pool = self._executor()
        try:
            future = pool.submit(_child_run_job, job_id)
        except BrokenProcessPool:
            self._replace(pool)
            future = self._executor().submit(_child_run_job, job_id)
        self._pending.add(future)
        # Callbacks run on the pool's manager thread; hand the follow-up work to our own.
        future.add_done_callback(
            lambda done: self._dispatch.submit(self._finished, job_id, pool, done)
        )

    def _finished(self, job_id: int, pool: ProcessPoolExecutor, done: Future[list[int]]) -> None:
        self._pending.discard(done)
        if done.cancelled():
            return  # shutting down; the job is still queued in the database
        error = done.exception()
        if isinstance(error, BrokenProcessPool):
            # The child died (killed, out of memory) while running this job.
            self._replace(pool)
            try:
                fail_job_if_running(
                    self.database,
                    job_id,
                    "The process running the job died before it finished; nothing it was "
                    f"computing was saved. Retry it with POST /v1/jobs/{job_id}/retry.",
                    retry_seconds=self.settings.job_fault_retry_seconds,
                )
            except Exception:  # the database stayed away: the stale-job sweep fails it
                logger.exception("job %s: failing it after its process died failed", job_id)
        elif isinstance(error, JobNotClaimed):
            # The database stayed away while the child claimed it: still queued, try later.
            self._enqueue_later(job_id)
        elif error is not None:  # run_job records failures itself
            logger.error("job %s could not be run", job_id, exc_info=error)
        else:
            for follow_up in done.result():
                self.enqueue(follow_up)

    def _enqueue_later(self, job_id: int) -> None:
        """Enqueue a queued job again after a while (its claim met a database that stayed
        away). The claim is conditional, so a job that some other process ran meanwhile is
        left alone."""
        logger.warning(
            "job %s stays queued; enqueueing it again in %.0f s", job_id, self._later_seconds()
        )
        self._later(f"job-{job_id}-requeue", lambda: self.enqueue(job_id))

    def _later_seconds(self) -> float:
        return max(MIN_REQUEUE_SECONDS, self.settings.job_fault_retry_seconds)

    def _later(self, name: str, action: Callable[[], None]) -> None:
        """Run `action` after LABELWISE_JOB_FAULT_RETRY_SECONDS on a timer of its own (the
        dispatch thread is not held); never once the runner is stopping (the next start
        does it)."""

        def fire() -> None:
            with self._lock:
                self._timers.discard(timer)
            action()

        timer = threading.Timer(self._later_seconds(), fire)
        timer.daemon = True
        timer.name = name
        with self._lock:
            if self._stopping:
                return
            self._timers.add(timer)
        timer.start()

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        self._stopping = True
        self._sweeper.stop()
        with self._lock:
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            # A running job finishes; queued ones stay queued and run at the next start.
            pool.shutdown(wait=True, cancel_futures=True)
        self._dispatch.shutdown(wait=True)


# The child process's own database handle, created once by _child_start.
_child: dict[str, Any] = {}


def _child_start(settings_json: str, parent_pid: int) -> None:
    settings = Settings.model_validate_json(settings_json)
    configure_logging(settings.log_level)
    _child["database"] = Database(settings)
    _child["settings"] = settings
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _exit_with_parent(parent_pid: int) -> None:
    """A job process never outlives its API process (a killed API must not leave a job
    writing behind its back: the restart marks that job interrupted instead)."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def _child_run_job(job_id: int) -> list[int]:
    """Run one job in the child; return the follow-up jobs for the parent to enqueue."""
    follow_ups: list[int] = []
    run_job(
        _child["database"],
        _child["settings"],
        job_id,
        functions=JOB_FUNCTIONS,
        enqueue=follow_ups.append,
    )
    return follow_ups


def build_runner(database: Database, settings: Settings) -> JobRunner:
    """The runner the settings ask for: in-process, or procrastinate (PostgreSQL workers)."""
    if settings.job_runner == "procrastinate":
        from app.jobs.procrastinate_runner import ProcrastinateRunner

        runner: JobRunner = ProcrastinateRunner(database, settings)
        return runner
    return InProcessRunner(database, settings)
