"""Automatic retraining, decided off the request path.

A project with `retrain_after_labels: N` gets a training job once N items got a new label
since its newest model read its training data. Answers, reviews, imports, consensus and
click logs all label items; none of them asks whether to retrain. Every API process runs a
`RetrainWatcher` that asks, every `LABELWISE_RETRAIN_CHECK_SECONDS`, for each such project:
an answer costs the same whether its project retrains automatically or not
(bench/request_cost.py), and the job follows the label that crossed the line within one
period.

Projects with the hands-off loop on (`hands_off`) retrain every `labels_per_round` labels
the same way; the same pass then queues the loop's next step after training
(`queue_hands_off_steps`): the round's auto-accept, or the scoring of newly ingested items.

Several processes may watch the same database: a project found due is checked again under
its row lock before the job is added, so one job is queued (and none while one is pending).
"""

import logging
import threading
from collections.abc import Callable

from app.db import Database
from app.db_faults import classify
from app.services import hands_off, model_versions
from app.services.project_loading import load_project

logger = logging.getLogger("labelwise.jobs")


def queue_due_retrains(database: Database, enqueue: Callable[[int], None]) -> list[int]:
    """One pass: queue (commit, then enqueue) a training job for each project that is due;
    their ids."""
    with database.session() as session:
        project_ids = model_versions.retraining_project_ids(session)
        due = [
            project_id
            for project_id in project_ids
            if model_versions.retrain_due(
                session, project=load_project(session, project_id=project_id)
            )
        ]
    queued = []
    for project_id in due:
        with database.session(write=True) as session:
            project = load_project(session, project_id=project_id, lock=True)
            job = model_versions.auto_retrain_job(session, project=project)
            session.commit()
        if job is not None and job.id is not None:
            enqueue(job.id)
            queued.append(job.id)
    return queued + queue_hands_off_steps(database, enqueue)


def queue_hands_off_steps(database: Database, enqueue: Callable[[int], None]) -> list[int]:
    """One pass of the hands-off loop after training (services/hands_off.py): per project,
    the round's auto-accept or the scoring of new items, if due; the ids queued."""
    with database.session() as session:
        due = [
            project_id
            for project_id in hands_off.hands_off_project_ids(session)
            if hands_off.due_step(session, project=load_project(session, project_id=project_id))
        ]
    queued = []
    for project_id in due:
        with database.session(write=True) as session:
            project = load_project(session, project_id=project_id, lock=True)
            step = hands_off.due_step(session, project=project)  # again, under the lock
            job = None
            if step is not None:
                job = hands_off.queue_step(
                    session, project=project, step=step, settings=database.settings
                )
            session.commit()
        if job is not None and job.id is not None:
            enqueue(job.id)
            queued.append(job.id)
    return queued


class RetrainWatcher:
    """Runs `queue_due_retrains` every `every` seconds on a daemon thread. `passes` counts
    the finished passes (a test waits for one to know a check ran after its labels)."""

    def __init__(self, database: Database, enqueue: Callable[[int], None], *, every: float) -> None:
        self.database = database
        self.enqueue = enqueue
        self.every = every
        self.passes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retrain-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                queue_due_retrains(self.database, self.enqueue)
            except Exception as error:  # the database may be briefly unreachable; try next time
                if (fault := classify(error)) is not None:
                    logger.warning("retrain check skipped: database fault %s", fault.value)
                else:
                    logger.warning("retrain check failed", exc_info=True)
            self.passes += 1
