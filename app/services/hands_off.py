"""The hands-off loop's decisions after training (docs/active-learning.md, "The hands-off
loop"): auto-accept once a newly activated version has scored the pool, and score items
ingested since. Retraining itself is model_versions.auto_retrain_job; all of it is asked
by the watcher thread (services/retrain_watch.py), never on a request's path.

A round, for a project with `hands_off` set: `labels_per_round` new human labels -> a
training job (created_by "hands-off", activate "if_better": only a version at least as good
on the same held-out items) -> its activation queues the pool scoring -> once that has
succeeded, one prelabel job at the project's target accuracy (`queue_auto_accept`). Every
step is a job, so the jobs list shows the loop, and each decision is re-checked from the
stored state under the project's lock, so several API processes queue each step once.
"""

from dataclasses import dataclass

from sqlmodel import Session, col, select

from app.models.base import ItemStatus, Phase
from app.models.item import Item
from app.models.job import Job, JobKind, JobStatus
from app.models.job_kinds import PrelabelParams, ScorePoolParams
from app.models.model_version import ModelVersion, registry_version_name
from app.models.prediction import Prediction
from app.models.project import Project
from app.services import jobs, model_versions
from app.services.model_versions import HANDS_OFF
from app.settings import Settings

# The prelabel job calibrates on at least this many out-of-fold predictions (tasks/prelabel.py).
MIN_CALIBRATION = 20
# At most this many items per new-items scoring job.
NEW_ITEMS_CHUNK = 2_000
# New items are looked for among the project's newest unlabeled items, so a pass costs the
# same on a pool of a million (older unscored items wait for the next round's full scoring).
NEW_ITEMS_WINDOW = 10_000
PENDING = (JobStatus.queued, JobStatus.running)


def hands_off_project_ids(session: Session) -> list[int]:
    rows = session.exec(
        select(Project.id).where(col(Project.hands_off).is_not(None)).order_by(col(Project.id))
    )
    return [project_id for project_id in rows if project_id is not None]


@dataclass(frozen=True)
class Step:
    """The loop's next job for a project: the round's auto-accept, or scoring new items."""

    kind: JobKind
    version: ModelVersion
    item_ids: list[int]  # the new items to score (score_pool)


def due_step(session: Session, *, project: Project) -> Step | None:
    """The loop's next job after training for this project, if one is due (reads only): the
    round's auto-accept once the active version's pool scoring has succeeded, else the
    scoring of items ingested since, one at a time."""
    if project.hands_off_settings is None:
        return None
    active = model_versions.active_version(session, project=project)
    if active is None or _pending(session, project, (JobKind.score_pool, JobKind.prelabel)):
        return None
    scoring = model_versions.activation_scoring_status(session, project=project, version=active)
    if scoring != JobStatus.succeeded:
        return None
    if _auto_accept_due(session, project, active):
        return Step(JobKind.prelabel, active, [])
    new_items = unscored_items(session, project=project, version=active)
    return Step(JobKind.score_pool, active, new_items) if new_items else None


def queue_step(session: Session, *, project: Project, step: Step, settings: Settings) -> Job:
    """Add the step's job (flushes; the caller commits, then enqueues)."""
    loop = project.hands_off_settings
    assert loop is not None
    if step.kind == JobKind.prelabel:
        return queue_auto_accept(
            session,
            project=project,
            version=step.version,
            target_accuracy=loop.target_accuracy,
            settings=settings,
        )
    return jobs.new_job(
        session,
        project_id=project.id,
        kind=JobKind.score_pool,
        params=ScorePoolParams(version=step.version.version, item_ids=step.item_ids),
        created_by=HANDS_OFF,
    )


def queue_auto_accept(
    session: Session,
    *,
    project: Project,
    version: ModelVersion,
    target_accuracy: float,
    settings: Settings,
) -> Job:
    """The round's prelabel job, in mode target_pool_accuracy: auto-accept the version's
    most probably correct predictions while the whole pool (human answers counted correct)
    stays within its error budget at the project's target accuracy (app/ml/completion.py).
    The one place the loop says how it auto-accepts.

    Every unsettled item is a candidate, and earlier auto-accepts are decided again with the
    new version (one the budget no longer covers is withdrawn). An item not accepted keeps
    the prediction as a suggestion and stays in the label queue, where batches rank it."""
    params = PrelabelParams(
        model_version=registry_version_name(version.version),
        threshold=None,
        target_precision=None,
        target_pool_accuracy=target_accuracy,
        unsure_to_review=False,
        item_ids=None,
        limit=None,
        audit_share=settings.prelabel_audit_share,
    )
    return jobs.new_job(
        session, project_id=project.id, kind=JobKind.prelabel, params=params, created_by=HANDS_OFF
    )


def unscored_items(session: Session, *, project: Project, version: ModelVersion) -> list[int]:
    """Up to NEW_ITEMS_CHUNK of the project's newest unlabeled items without a score of the
    version (ingested after its pool scoring read them), oldest first."""
    name = registry_version_name(version.version)
    newest = (
        select(Item.id)
        .where(col(Item.project_id) == project.id, col(Item.status) == ItemStatus.unlabeled)
        .order_by(col(Item.id).desc())
        .limit(NEW_ITEMS_WINDOW)
        .subquery()
    )
    scored = (
        select(Prediction.id)
        .where(col(Prediction.item_id) == newest.c.id, col(Prediction.model_version) == name)
        .exists()
    )
    rows = session.exec(
        select(newest.c.id).where(~scored).order_by(newest.c.id).limit(NEW_ITEMS_CHUNK)
    )
    return [int(item_id) for item_id in rows]


def _pending(session: Session, project: Project, kinds: tuple[JobKind, ...]) -> bool:
    found = session.exec(
        select(Job.id)
        .where(
            col(Job.project_id) == project.id,
            col(Job.kind).in_(kinds),
            col(Job.status).in_(PENDING),
        )
        .limit(1)
    ).first()
    return found is not None


def _auto_accept_due(session: Session, project: Project, active: ModelVersion) -> bool:
    """A production project (a pilot only suggests) whose active version can calibrate and
    has had no auto-accept job from the loop since its activation."""
    if project.phase != Phase.production or active.n_train < MIN_CALIBRATION:
        return False
    assert active.activated_at is not None
    done = session.exec(
        select(Job.id)
        .where(
            col(Job.project_id) == project.id,
            col(Job.kind) == JobKind.prelabel,
            col(Job.created_by) == HANDS_OFF,
            col(Job.created_at) >= active.activated_at,
        )
        .limit(1)
    ).first()
    return done is None
