"""Jobs in `labelwise worker` processes, queued with procrastinate (PostgreSQL only).

The API process only defers: it puts one procrastinate job, carrying the Labelwise job id,
on the `labelwise` queue. A worker process runs it with app.jobs.execute.run_job, the same
function, job table and job functions the embedded runner uses. procrastinate brings the
queue itself: SKIP LOCKED fetching, LISTEN/NOTIFY wake-ups, worker heartbeats and a
graceful stop on SIGTERM/SIGINT (running jobs finish, no new job is taken).

The Labelwise `job` row stays the record users see; procrastinate's rows only carry the id.
Deferring uses a queueing lock per job id, so deferring a job twice while it waits is a no-op;
a worker re-defers every queued job when it starts, so a job whose defer was lost (the API
stopped between committing the row and deferring) still runs.

Database faults: the API never fails a request because deferring failed (the job row is
committed and queued); every worker re-defers, every `LABELWISE_JOB_FAULT_RETRY_SECONDS`,
the queued jobs that have no waiting queue entry (a defer that failed, a claim that met a
database that stayed away). A worker whose procrastinate loop stops on a database fault (its
heartbeat or its fetch failed) starts it again, with backoff, until a signal stops it.
"""

import asyncio
import contextlib
import logging
import os
import signal
import threading
from datetime import timedelta
from typing import Any

import procrastinate
import psycopg
import sqlalchemy as sa
from procrastinate.exceptions import AlreadyEnqueued, ConnectorException
from procrastinate.jobs import JobDeferrer
from procrastinate.schema import SchemaManager
from procrastinate.worker import Worker
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlmodel import col, select

from app.db import CONNECT_TIMEOUT_SECONDS, Database
from app.db_faults import classify
from app.jobs.context import worker_name
from app.jobs.execute import (
    StaleJobSweeper,
    fail_interrupted_jobs,
    queued_job_ids,
    run_job,
)
from app.jobs.kinds import JOB_FUNCTIONS
from app.jobs.retries import retry_wait
from app.logs import configure_logging
from app.models.base import utcnow
from app.models.job import Job, JobStatus
from app.settings import Settings

logger = logging.getLogger("labelwise.jobs")

QUEUE = "labelwise"
TASK_NAME = "labelwise.run_job"
MAX_CONCURRENCY = 16
# procrastinate's main table: present means its schema has been applied.
SCHEMA_MARKER_TABLE = "procrastinate_jobs"
# Serializes concurrent `labelwise migrate` runs while they check for and apply the schema.
_SCHEMA_LOCK_KEY = 0x6C61_6265_6C77  # "labelw"
# How long a request waits for a connection of the API's defer pool before it gives the defer up
# (the job stays queued; a worker re-defers it).
DEFER_WAIT_SECONDS = 3.0
# The longest wait before a worker whose loop stopped on a database fault starts it again.
MAX_RESTART_WAIT_SECONDS = 30.0
MIGRATE_HINT = (
    "run `LABELWISE_JOB_RUNNER=procrastinate labelwise migrate` with the same "
    "LABELWISE_DATABASE_URL"
)


class ProcrastinateNeedsPostgres(ValueError):
    """The procrastinate runner was asked for on a database that is not PostgreSQL."""


class ProcrastinateSchemaMissing(RuntimeError):
    """procrastinate's tables are not in the database: `labelwise migrate` did not add them."""


def procrastinate_conninfo(database_url: str) -> str:
    """The libpq conninfo for a SQLAlchemy PostgreSQL URL (as the app's engine would connect)."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise ProcrastinateNeedsPostgres(
            f"LABELWISE_JOB_RUNNER=procrastinate needs PostgreSQL, but the database is "
            f"{url.get_backend_name()}. Set LABELWISE_DATABASE_URL to a postgresql+psycopg:// "
            "URL, or use LABELWISE_JOB_RUNNER=inprocess (the embedded default)."
        )
    # Let SQLAlchemy's psycopg dialect read the URL (query options, socket hosts, escapes).
    url = url.set(drivername="postgresql+psycopg")
    args, kwargs = url.get_dialect()().create_connect_args(url)
    return make_conninfo(*args, **kwargs)


def _connect_kwargs(conninfo: str) -> dict[str, Any]:
    """Connection options for the queue's pools: an unreachable server fails a connection
    attempt in seconds, as it does for the app's engine (unless the URL says otherwise)."""
    if "connect_timeout" in conninfo_to_dict(conninfo):
        return {}
    return {"connect_timeout": CONNECT_TIMEOUT_SECONDS}


def procrastinate_schema_present(engine: Engine) -> bool:
    with engine.connect() as connection:
        present = connection.exec_driver_sql(
            f"SELECT to_regclass('{SCHEMA_MARKER_TABLE}') IS NOT NULL"
        ).scalar()
    return bool(present)


def ensure_procrastinate_schema(database_url: str) -> bool:
    """Apply procrastinate's schema unless it is there already; True if it was applied now.

    One transaction under an advisory lock: concurrent migrations apply it once, and a
    failure leaves nothing half-created. Upgrading procrastinate to a version with schema
    changes needs its SQL migrations (procrastinate/sql/migrations), not this function.
    """
    with psycopg.connect(procrastinate_conninfo(database_url)) as connection:
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        row = connection.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (SCHEMA_MARKER_TABLE,)
        ).fetchone()
        if row is not None and row[0]:
            return False
        # No parameters: psycopg sends the whole script with the simple query protocol.
        connection.execute(SchemaManager.get_schema())
    # Leaving the block committed the transaction.
    logger.info("applied procrastinate's schema")
    return True


def _queueing_lock(job_id: int) -> str:
    return f"labelwise-job-{job_id}"


def _deferrer(app: procrastinate.App, job_id: int) -> JobDeferrer:
    return app.configure_task(TASK_NAME, queue=QUEUE, queueing_lock=_queueing_lock(job_id))


def defer(app: procrastinate.App, job_id: int) -> None:
    """Defer a Labelwise job from sync code (a no-op if it is already waiting in the queue)."""
    with contextlib.suppress(AlreadyEnqueued):
        _deferrer(app, job_id).defer(job_id=job_id)


async def defer_async(app: procrastinate.App, job_id: int) -> None:
    with contextlib.suppress(AlreadyEnqueued):
        await _deferrer(app, job_id).defer_async(job_id=job_id)


class ProcrastinateRunner:
    """The API side: defers jobs for `labelwise worker` processes; never runs one itself.

    FastAPI runs sync routes on a thread pool, so deferring is synchronous: the app is
    opened with a psycopg ConnectionPool (procrastinate's sync connector), which is
    thread-safe. The pool is opened without waiting for a connection, so the API starts
    even while the database is down; interrupted jobs are the workers' business. The pool
    checks a connection before lending it, so one the server closed (a restart,
    pg_terminate_backend) is replaced, not used.
    """

    def __init__(self, database: Database, settings: Settings, *, pool_size: int = 4) -> None:
        self.database = database
        self.settings = settings
        self.pool_size = pool_size
        self._conninfo = procrastinate_conninfo(settings.resolved_database_url)
        self._pool: ConnectionPool[Any] | None = None
        self._app: procrastinate.App | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        if not procrastinate_schema_present(self.database.engine):
            raise ProcrastinateSchemaMissing(
                f"LABELWISE_JOB_RUNNER=procrastinate, but procrastinate's tables are missing "
                f"from the database: {MIGRATE_HINT}."
            )
        self._open()

    def _open(self) -> procrastinate.App:
        with self._lock:
            if self._app is None:
                pool: ConnectionPool[Any] = ConnectionPool(
                    self._conninfo,
                    kwargs=_connect_kwargs(self._conninfo),
                    min_size=1,
                    max_size=self.pool_size,
                    open=False,
                    name="labelwise-procrastinate",
                    check=ConnectionPool.check_connection,
                    timeout=DEFER_WAIT_SECONDS,
                )
                pool.open(wait=False)
                # An external pool: procrastinate uses it and leaves closing it to us.
                app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector())
                self._app = app.open(pool)
                self._pool = pool
            return self._app

    def enqueue(self, job_id: int) -> None:
        """Defer a committed job; never raise for a database fault (this runs on the request
        path after the job's commit): the job stays queued, and a worker re-defers it."""
        try:
            # Opened lazily too: start() may have failed while the database was unreachable.
            defer(self._open(), job_id)
        except (ConnectorException, psycopg.Error) as error:
            logger.warning(
                "job %s: deferring it failed (%s); it stays queued, and a worker defers it "
                "again within %.0f s",
                job_id,
                error.__cause__ or error,
                redefer_seconds(self.settings),
            )

    def stop(self) -> None:
        with self._lock:
            if self._app is not None:
                self._app.close()
                self._app = None
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def build_worker_app(
    database: Database, settings: Settings, *, concurrency: int = 1
) -> procrastinate.App:
    """The worker side: an async-connector app with the one task that runs a Labelwise job."""
    conninfo = procrastinate_conninfo(settings.resolved_database_url)
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo,
        kwargs=_connect_kwargs(conninfo),
        min_size=1,
        # Fetching, heartbeats and abort polling share the pool with jobs deferring follow-ups.
        max_size=concurrency + 3,
        name="labelwise-worker",
    )
    app = procrastinate.App(connector=connector)

    def enqueue(job_id: int) -> None:
        # Called on the job's thread: procrastinate's sync API hops onto the worker's event
        # loop (asgiref async_to_sync) to use the worker's async pool. If it fails, the job
        # stays queued and the re-defer pass defers it (run_job logs the failure).
        defer(app, job_id)

    # A sync task: procrastinate runs it on a thread (asgiref sync_to_async,
    # thread_sensitive=False), so CPU-heavy job functions never block the event loop that
    # fetches jobs and sends heartbeats. No procrastinate retry: a failed Labelwise job is
    # retried explicitly, with POST /v1/jobs/{id}/retry; one whose claim met a database that
    # stayed away (JobNotClaimed) is still queued, and the re-defer pass defers it again.
    @app.task(name=TASK_NAME, queue=QUEUE)
    def run_labelwise_job(job_id: int) -> None:
        run_job(database, settings, job_id, functions=JOB_FUNCTIONS, enqueue=enqueue)

    return app


def run_worker(settings: Settings, concurrency: int = 1) -> None:
    """`labelwise worker`: run Labelwise jobs from the queue until SIGTERM or SIGINT.

    At start-up, jobs left running by a dead worker are marked failed (retryable), and
    queued jobs are (re-)deferred. On SIGTERM/SIGINT the worker takes no new job, lets the
    running ones finish, and exits; a second signal stops it at once. A database fault does
    not stop it (module docstring).
    """
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}.")
    procrastinate_conninfo(settings.resolved_database_url)  # refuses SQLite before anything
    configure_logging(settings.log_level)
    _share_log_handlers("procrastinate", level=logging.INFO)
    database = Database(settings)
    try:
        if not procrastinate_schema_present(database.engine):
            raise ProcrastinateSchemaMissing(
                f"procrastinate's tables are missing from the database: {MIGRATE_HINT}."
            )
        stale_after = timedelta(seconds=settings.job_stale_seconds)
        interrupted = fail_interrupted_jobs(database, stale_after=stale_after)
        queued = queued_job_ids(database)
        app = build_worker_app(database, settings, concurrency=concurrency)
        logger.info(
            "worker %s starting on queue %s (concurrency %s)",
            worker_name(),
            QUEUE,
            concurrency,
            extra={
                "fields": {
                    "worker": worker_name(),
                    "pid": os.getpid(),
                    "interrupted_jobs": interrupted,
                    "queued_jobs": len(queued),
                }
            },
        )
        sweeper = StaleJobSweeper(database, stale_after=stale_after)
        sweeper.start()
        try:
            asyncio.run(_work(app, database, queued, concurrency=concurrency))
        finally:
            sweeper.stop()
        logger.info("worker %s stopped", worker_name())
    finally:
        database.engine.dispose()


def redefer_seconds(settings: Settings) -> float:
    """How often a worker re-defers the queued jobs with no waiting queue entry, and how old
    such a job must be: LABELWISE_JOB_FAULT_RETRY_SECONDS, at least 1 s."""
    return max(1.0, settings.job_fault_retry_seconds)


_QUEUE_ENTRIES = sa.table(
    "procrastinate_jobs",
    sa.column("queueing_lock", sa.String),
    sa.column("status", sa.String),
)


def undeferred_job_ids(database: Database, *, older_than: timedelta) -> list[int]:
    """Queued Labelwise jobs, created more than `older_than` ago, with no procrastinate job
    waiting to run them (`todo` under their queueing lock): their defer failed or was lost, or
    their claim met a database that stayed away. Oldest first, at most 1000."""
    lock = sa.literal("labelwise-job-") + sa.cast(col(Job.id), sa.String)
    waiting = (
        sa.select(sa.literal(1))
        .select_from(_QUEUE_ENTRIES)
        .where(
            _QUEUE_ENTRIES.c.queueing_lock == lock,
            # Inlined, so the partial unique index on the lock (WHERE status = 'todo') serves it.
            _QUEUE_ENTRIES.c.status == sa.literal_column("'todo'"),
        )
    )
    with database.session() as session:
        rows = session.exec(
            select(col(Job.id))
            .where(
                col(Job.status) == JobStatus.queued,
                col(Job.created_at) < utcnow() - older_than,
                ~sa.exists(waiting),
            )
            .order_by(col(Job.id))
            .limit(1000)
        )
        return [job_id for job_id in rows if job_id is not None]


async def _redefer_forever(app: procrastinate.App, database: Database, every: float) -> None:
    """Defer again, every `every` seconds, the queued jobs nothing will run (see
    undeferred_job_ids); a database fault is logged and the next pass tries again."""
    failing = False
    while True:
        await asyncio.sleep(every)
        try:
            job_ids = await asyncio.to_thread(
                undeferred_job_ids, database, older_than=timedelta(seconds=every)
            )
            for job_id in job_ids:
                await defer_async(app, job_id)
        except Exception as error:
            if not failing:  # once per streak: the database may be away for a while
                logger.warning(
                    "re-deferring queued jobs failed (%s); trying again every %.0f s",
                    _fault_name(error),
                    every,
                    exc_info=classify(error) is None,
                )
            failing = True
            continue
        if failing:
            logger.info("re-deferring queued jobs works again")
        failing = False
        if job_ids:
            logger.warning("deferred again queued jobs nothing would run: %s", job_ids)


def _fault_name(error: BaseException) -> str:
    fault = classify(error)
    if fault is not None:
        return f"database fault {fault.value}"
    if isinstance(error, ConnectorException) and error.__cause__ is not None:
        return f"queue connection: {type(error.__cause__).__name__}"
    return type(error).__name__


async def _work(
    app: procrastinate.App, database: Database, queued: list[int], *, concurrency: int
) -> None:
    """Run procrastinate's worker loop until SIGTERM/SIGINT, starting it again whenever it
    stops without one: procrastinate stops it when its heartbeat fails, and a failed fetch
    ends it with the error (a database that went away)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    current: list[Worker] = []

    def on_signal() -> None:
        # The first signal stops gracefully; the next one gets the default action (at once).
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        stopping.set()
        for worker in current:
            worker.stop()  # type: ignore[no-untyped-call]

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    async with app.open_async():
        for job_id in queued:
            await defer_async(app, job_id)
        redefer = asyncio.create_task(
            _redefer_forever(app, database, redefer_seconds(database.settings))
        )
        try:
            await _run_until_stopped(app, stopping, current, concurrency=concurrency)
        finally:
            redefer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await redefer


async def _run_until_stopped(
    app: procrastinate.App, stopping: asyncio.Event, current: list[Worker], *, concurrency: int
) -> None:
    restarts = 0
    while not stopping.is_set():
        worker = Worker(
            app=app,
            queues=[QUEUE],
            concurrency=concurrency,
            name=f"labelwise-worker-{os.getpid()}",
            # The Labelwise job row is the record; keep procrastinate's rows only for failures.
            delete_jobs="successful",
            install_signal_handlers=False,  # on_signal above
        )
        current[:] = [worker]
        try:
            await worker.run()  # type: ignore[no-untyped-call]
        except Exception:
            logger.warning("the worker loop failed", exc_info=True)
        if stopping.is_set():
            return
        restarts += 1
        wait = min(retry_wait(restarts) * 10, MAX_RESTART_WAIT_SECONDS)
        logger.warning(
            "worker %s: the queue loop stopped on a database fault; starting it again in %.1f s",
            worker_name(),
            wait,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=wait)


def _share_log_handlers(name: str, *, level: int) -> None:
    """Send another library's log records through Labelwise's JSON handler."""
    target = logging.getLogger(name)
    target.setLevel(level)
    for handler in logging.getLogger("labelwise").handlers:
        if handler not in target.handlers:
            target.addHandler(handler)
    target.propagate = False
