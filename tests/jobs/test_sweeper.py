"""Jobs lost with another host are failed by the periodic sweep; the ones this process runs
are kept, its others (an end it could not record) are failed."""

import os
from datetime import timedelta

from sqlmodel import Session

from app.db import Database
from app.jobs.context import worker_name
from app.jobs.execute import fail_interrupted_jobs, running_here
from app.models.base import utcnow
from app.models.job import Job, JobKind, JobStatus
from app.models.job_kinds import ScorePoolParams
from app.services.jobs import new_job
from app.settings import Settings


def running_job(session: Session, *, worker: str, beat_age: timedelta) -> int:
    job = new_job(
        session,
        project_id=None,
        kind=JobKind.score_pool,
        params=ScorePoolParams(version=1),
        created_by="t",
    )
    job.status, job.worker, job.heartbeat_at = JobStatus.running, worker, utcnow() - beat_age
    session.add(job)
    session.commit()
    assert job.id is not None
    return job.id


def test_periodic_sweep_fails_only_stale_jobs_of_other_processes(live_settings: Settings) -> None:
    database = Database(live_settings)
    with database.session(write=True) as session:
        lost = running_job(session, worker="gone-host:123", beat_age=timedelta(minutes=5))
        alive = running_job(session, worker="other-host:456", beat_age=timedelta(seconds=1))
        mine = running_job(session, worker=worker_name(), beat_age=timedelta(minutes=5))
        # This process's, but it runs it no longer (its end could not be recorded).
        left = running_job(session, worker=worker_name(), beat_age=timedelta(seconds=1))
    with running_here(mine):
        failed = fail_interrupted_jobs(
            database, stale_after=timedelta(seconds=60), at_startup=False
        )
    assert sorted(failed) == sorted([lost, left])
    with database.session() as session:
        statuses = {i: session.get(Job, i).status for i in (lost, alive, mine, left)}  # type: ignore[union-attr]
    assert statuses == {lost: "failed", alive: "running", mine: "running", left: "failed"}
    database.engine.dispose()


def test_an_exited_but_unreaped_process_counts_as_dead() -> None:
    import socket
    import subprocess
    import sys
    import time

    from app.jobs.execute import _owner_is_dead

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    # Not waited for: it stays a zombie, which still answers kill(pid, 0).
    while not _owner_is_dead(f"{socket.gethostname()}:{child.pid}"):
        assert time.monotonic() < deadline, "a zombie process was taken for a live one"
        time.sleep(0.05)
    child.wait()
    assert not _owner_is_dead(f"{socket.gethostname()}:{os.getppid()}")
