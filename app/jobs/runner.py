"""Job runners. The embedded default runs jobs on a background thread of the API process;
with PostgreSQL, `labelwise worker` processes run them through procrastinate instead.

Both call the same app.jobs.execute.run_job with the same job functions.
"""

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

from app.db import Database
from app.jobs.context import JobRunner
from app.jobs.execute import StaleJobSweeper, fail_interrupted_jobs, queued_job_ids, run_job
from app.jobs.kinds import JOB_FUNCTIONS
from app.settings import Settings

logger = logging.getLogger("labelwise.jobs")


class InProcessRunner:
    """Runs jobs one at a time on a worker thread, off the event loop and the request path."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self._executor: ThreadPoolExecutor | None = None
        self._pending: set[Future[None]] = set()
        self._stopping = False
        self._sweeper = StaleJobSweeper(
            database, stale_after=timedelta(seconds=settings.job_stale_seconds)
        )

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=self.settings.job_threads, thread_name_prefix="labelwise-job"
        )
        stale = timedelta(seconds=self.settings.job_stale_seconds)
        fail_interrupted_jobs(self.database, stale_after=stale)
        for job_id in queued_job_ids(self.database):  # accepted before a restart: run them now
            self.enqueue(job_id)
        self._sweeper.start()

    def enqueue(self, job_id: int) -> None:
        if self._executor is None or self._stopping:
            # The job row is committed and queued: the next start runs it.
            logger.info("job %s stays queued: the runner is not running", job_id)
            return
        future = self._executor.submit(self._run, job_id)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def _run(self, job_id: int) -> None:
        try:
            run_job(
                self.database,
                self.settings,
                job_id,
                functions=JOB_FUNCTIONS,
                enqueue=self.enqueue,
            )
        except Exception:  # run_job records failures itself; this is the database being gone
            logger.exception("job %s could not be run", job_id)

    def stop(self) -> None:
        self._stopping = True
        self._sweeper.stop()
        if self._executor is not None:
            # Queued work stays queued in the database and runs at the next start.
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def wait_idle(self, timeout: float | None = None) -> None:
        """Block until every job enqueued so far has finished (tests and the CLI use it)."""
        from concurrent.futures import wait

        while self._pending:
            wait(list(self._pending), timeout=timeout)


def build_runner(database: Database, settings: Settings) -> JobRunner:
    """The runner the settings ask for: in-process, or procrastinate (PostgreSQL workers)."""
    if settings.job_runner == "procrastinate":
        from app.jobs.procrastinate_runner import ProcrastinateRunner

        runner: JobRunner = ProcrastinateRunner(database, settings)
        return runner
    return InProcessRunner(database, settings)
