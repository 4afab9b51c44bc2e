"""The model registry's use cases: choose the training set, queue training (the job that
trains and registers a version is app/tasks/training.py), activate a version, and load a
version's fitted pipeline (through the in-process cache)."""

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func
from sqlmodel import Session, col, select

from app.db import Database
from app.errors import NotEnoughLabels, NotFound
from app.jobs.context import JobRunner
from app.models.base import (
    HUMAN_RESOLUTIONS,
    TRAINABLE_RESOLUTIONS,
    USER_BEHAVIOR_RESOLUTION,
    ItemSource,
    utcnow,
)
from app.models.dataset_version import DatasetVersion
from app.models.item import Item
from app.models.job import Job, JobKind
from app.models.job_kinds import ActivateIfBetter, ScorePoolParams, TrainModelParams
from app.models.model_version import (
    ActivationCheck,
    ModelArtifact,
    ModelTrainRequest,
    ModelVersion,
    registry_version_name,
)
from app.models.project import Project
from app.models.webhook import EventType, ModelActivatedData
from app.pagination import PageRequest, keyset
from app.registry.algorithms import DEFAULT_ALGORITHM, Algorithm, get_algorithm
from app.registry.cache import ModelCache, shared_cache
from app.registry.store import load_array, load_pipeline
from app.registry.training import MIN_PER_LABEL
from app.services import events, item_status, jobs
from app.services.api_keys import Principal
from app.services.dataset_versions import frozen_training_rows
from app.services.dataset_versions import get_version as get_dataset_version
from app.services.project_loading import load_project

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

# Each training example's sample weight by who resolved it: an implicit label counts half as
# much as a human one in the fit and its cross-validation (metrics stay unweighted).
USER_BEHAVIOR_WEIGHT = 0.5
PIPELINE_ARTIFACT = "pipeline"
OOF_ARTIFACT = "oof_probabilities"


@dataclass
class TrainingSet:
    item_ids: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    inputs: list[Any] = field(default_factory=list)
    label_counts: dict[str, int] = field(default_factory=dict)  # before any exclusion
    excluded_labels: dict[str, int] = field(default_factory=dict)  # too few examples
    weights: list[float] = field(default_factory=list)  # USER_BEHAVIOR_WEIGHT or 1.0
    n_user_behavior: int = 0  # examples resolved by user behaviour
    synthetic_dropped: int = 0
    without_features: int = 0

    def model_inputs(self, algorithm: Algorithm) -> list[str] | np.ndarray:
        if algorithm.input == "features":
            return np.asarray(self.inputs, dtype=np.float64)
        return list(self.inputs)

    def sample_weights(self) -> np.ndarray | None:
        """The weights to fit with, or None when every example weighs 1 (a plain fit)."""
        if all(weight == 1.0 for weight in self.weights):
            return None
        return np.asarray(self.weights, dtype=np.float64)

    @property
    def hash(self) -> str:
        digest = hashlib.sha256()
        for item_id, label, weight in zip(self.item_ids, self.labels, self.weights, strict=True):
            # A weight only when it is not 1, so human-only sets keep their earlier hashes.
            suffix = "" if weight == 1.0 else f"\t{weight}"
            digest.update(f"{item_id}\t{label}{suffix}\n".encode())
        return digest.hexdigest()


def feature_vector(data: dict[str, Any]) -> list[float] | None:
    """data.features as a list of finite floats, or None."""
    values = data.get("features")
    if not isinstance(values, list) or not values:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    floats = [float(v) for v in values]
    return floats if all(math.isfinite(v) for v in floats) else None


def build_training_set(
    session: Session,
    *,
    project: Project,
    algorithm: Algorithm,
    dataset_version: DatasetVersion | None = None,
) -> TrainingSet:
    """Items resolved by humans or by user behaviour (never by a model), the latter weighted
    USER_BEHAVIOR_WEIGHT; synthetic items capped at the project's synthetic_max_ratio of the
    human-resolved ones; labels too rare to cross-validate left out. From the items as they
    are now, or from a dataset version's frozen rows (their texts as frozen; a features
    algorithm reads the items' current data.features).

    Each row is (item id, label, source, resolved_by, input)."""
    features = algorithm.input == "features"
    rows = _trainable_rows(
        session, project=project, dataset_version=dataset_version, features=features
    )
    # A frozen version may hold labels the project has since dropped: no model predicts them.
    retired = Counter(row[1] for row in rows if row[1] not in project.labels)
    rows = [row for row in rows if row[1] in project.labels]
    result = TrainingSet()
    if features:
        rows = _with_feature_vectors(rows, result)
    chosen = _cap_synthetic(rows, project.synthetic_max_ratio, result)
    counts = Counter(r[1] for r in chosen)
    result.label_counts = dict(sorted(counts.items()))
    result.excluded_labels = {k: v for k, v in result.label_counts.items() if v < MIN_PER_LABEL}
    result.excluded_labels.update(sorted(retired.items()))
    _add_examples(result, chosen)
    return result


def _trainable_rows(
    session: Session,
    *,
    project: Project,
    dataset_version: DatasetVersion | None,
    features: bool,
) -> Sequence[Any]:
    """The trainable items as they are now (ordered by id), or a dataset version's frozen
    rows; the input is the item's data (features) or its text."""
    if dataset_version is not None:
        return frozen_training_rows(session, version=dataset_version, features=features)
    columns: list[Any] = [Item.id, Item.resolved_label, Item.source, Item.resolved_by]
    columns.append(Item.data if features else Item.text)
    rows: Sequence[Any] = session.exec(
        select(*columns)
        .where(
            col(Item.project_id) == project.id,
            col(Item.resolved_by).in_(TRAINABLE_RESOLUTIONS),
            col(Item.resolved_label).is_not(None),
        )
        .order_by(col(Item.id))
    ).all()
    return rows


def _with_feature_vectors(rows: Sequence[Any], result: TrainingSet) -> list[Any]:
    """The rows whose data.features is a valid vector of the commonest width, the input
    replaced by that vector; the others are counted in result.without_features."""
    vectors = [(row, feature_vector(row[4])) for row in rows]
    lengths = Counter(len(v) for _, v in vectors if v is not None)
    width = lengths.most_common(1)[0][0] if lengths else 0
    kept = [(r, v) for r, v in vectors if v is not None and len(v) == width]
    result.without_features = len(rows) - len(kept)
    return [(r[0], r[1], r[2], r[3], v) for r, v in kept]


def _cap_synthetic(rows: Sequence[Any], ratio: float, result: TrainingSet) -> list[Any]:
    """The real rows and the first synthetic ones up to `ratio` of the training set (relative
    to the human-resolved rows), sorted by item id; the rest counted in
    result.synthetic_dropped."""
    real = [r for r in rows if r[2] != ItemSource.synthetic]
    synthetic = [r for r in rows if r[2] == ItemSource.synthetic]
    n_human = sum(1 for r in real if r[3] in HUMAN_RESOLUTIONS)
    allowed = len(synthetic) if ratio >= 1 else math.floor(ratio * n_human / (1 - ratio))
    result.synthetic_dropped = max(0, len(synthetic) - allowed)
    return sorted(real + synthetic[:allowed], key=lambda r: r[0])


def _add_examples(result: TrainingSet, chosen: Sequence[Any]) -> None:
    """Append the chosen rows whose label is not excluded, each weighted by who resolved it."""
    for item_id, label, _, resolved_by, value in chosen:
        if label in result.excluded_labels:
            continue
        result.item_ids.append(item_id)
        result.labels.append(label)
        result.inputs.append(value)
        implicit = resolved_by == USER_BEHAVIOR_RESOLUTION
        result.weights.append(USER_BEHAVIOR_WEIGHT if implicit else 1.0)
        result.n_user_behavior += implicit


def default_algorithm(session: Session, *, project: Project) -> tuple[str, dict[str, Any]]:
    """The active version's algorithm and params (the model the project really uses), else
    the default algorithm (DEFAULT_ALGORITHM) with its defaults."""
    active = active_version(session, project=project)
    if active is not None:
        return active.algorithm, dict(active.params)
    algorithm = get_algorithm(DEFAULT_ALGORITHM)
    return algorithm.name, dict(algorithm.defaults)


def check_trainable(session: Session, *, project: Project, training_set: TrainingSet) -> None:
    """A 409 unless at least two labels have MIN_PER_LABEL examples each; it gives the counts,
    and says when items wait for more human answers (the pilot phase's second answer) and
    what to do about them; `context` holds the figures."""
    usable = {k: v for k, v in training_set.label_counts.items() if v >= MIN_PER_LABEL}
    if len(usable) >= 2:
        return
    have = ", ".join(f"{k}: {v}" for k, v in training_set.label_counts.items()) or "none"
    extra = ""
    if training_set.without_features:
        extra = f" {training_set.without_features} labeled items have no usable data.features."
    waiting, facts = item_status.waiting_for_answers(session, project=project)
    raise NotEnoughLabels(
        f"Training needs at least {MIN_PER_LABEL} human-resolved labels for each of at least "
        f"2 labels (for {MIN_PER_LABEL}-fold cross-validation); this project has {have}."
        f"{waiting} Implicit labels from user behaviour count too; model auto-accepts do not."
        f"{extra}",
        context={
            "label_counts": training_set.label_counts,
            "min_per_label": MIN_PER_LABEL,
            **facts,
        },
    )


def start_training(
    session: Session,
    runner: JobRunner,
    *,
    project: Project,
    principal: Principal,
    request: ModelTrainRequest,
) -> Job:
    """Validate now (a doomed job is a 409/422 today, not a failed job later), then enqueue."""
    algorithm = get_algorithm(request.algorithm)
    params = algorithm.resolve_params(request.params)
    frozen = None
    if request.dataset_version is not None:
        frozen = get_dataset_version(session, project=project, version=request.dataset_version)
    training_set = build_training_set(
        session, project=project, algorithm=algorithm, dataset_version=frozen
    )
    check_trainable(session, project=project, training_set=training_set)
    return jobs.submit_job(
        session,
        runner,
        project_id=project.id,
        kind=JobKind.train_model,
        params=TrainModelParams(
            algorithm=algorithm.name,
            params=params,
            activate=request.activate,
            dataset_version=request.dataset_version,
        ),
        created_by=principal.name,
    )


# Who queues the hands-off loop's jobs (their created_by): services/hands_off.py.
HANDS_OFF = "hands-off"


def retraining_project_ids(session: Session) -> list[int]:
    """The projects that retrain automatically (`retrain_after_labels` or the hands-off loop
    set)."""
    rows = session.exec(
        select(Project.id)
        .where(col(Project.retrain_after_labels).is_not(None) | col(Project.hands_off).is_not(None))
        .order_by(col(Project.id))
    )
    return [project_id for project_id in rows if project_id is not None]


def retrain_due(session: Session, *, project: Project) -> bool:
    """Whether the project retrains automatically, no training job is pending, and
    `retrain_after_labels` items got a new label since the newest version read its training
    data (reads only)."""
    return _retrain_basis(session, project)[0]


def auto_retrain_job(session: Session, *, project: Project) -> Job | None:
    """The training job `retrain_due` calls for, if it does (flushes; the caller commits,
    then enqueues). services/retrain_watch.py asks, off the request path."""
    due, latest = _retrain_basis(session, project)
    if not due:
        return None
    hands_off = project.hands_off_settings is not None
    if hands_off:  # the loop improves the model in use: the active version's algorithm
        latest = active_version(session, project=project) or latest
    algorithm = get_algorithm(latest.algorithm if latest else DEFAULT_ALGORITHM)
    return jobs.new_job(
        session,
        project_id=project.id,
        kind=JobKind.train_model,
        params=TrainModelParams(
            algorithm=algorithm.name,
            params=latest.params if latest else dict(algorithm.defaults),
            activate=ActivateIfBetter.if_better,
        ),
        created_by=HANDS_OFF if hands_off else "auto-retrain",
    )


def _retrain_basis(session: Session, project: Project) -> tuple[bool, ModelVersion | None]:
    """Whether a retrain is due, and the newest version (its algorithm and params carry over).

    It counts the items labeled after that version's training data (`Item.labeled_at`, set
    when an item gets a trainable label new to it), stopping at `retrain_after_labels`: the
    cost grows with the labels since the last training, never with the labeled items. The
    hands-off loop's `labels_per_round` takes the place of `retrain_after_labels` while it is
    on."""
    loop = project.hands_off_settings
    every = loop.labels_per_round if loop is not None else project.retrain_after_labels
    if every is None:
        return False, None
    pending = session.exec(
        select(Job.id)
        .where(
            col(Job.project_id) == project.id,
            col(Job.kind) == JobKind.train_model,
            col(Job.status).in_(("queued", "running")),
        )
        .limit(1)
    ).first()
    if pending is not None:
        return False, None
    newest = session.exec(
        select(ModelVersion, DatasetVersion.created_at)
        .outerjoin(
            DatasetVersion,
            (col(DatasetVersion.project_id) == col(ModelVersion.project_id))
            & (col(DatasetVersion.version) == col(ModelVersion.dataset_version)),
        )
        .where(col(ModelVersion.project_id) == project.id)
        .order_by(col(ModelVersion.version).desc())
        .limit(1)
    ).first()
    latest, data_read_at = newest if newest else (None, None)
    labeled = select(Item.id).where(
        col(Item.project_id) == project.id, col(Item.resolved_by).in_(TRAINABLE_RESOLUTIONS)
    )
    since = None
    if latest is not None:
        # Versions trained before lineage have no dataset version: their own time stands in.
        since = data_read_at or latest.created_at
    # An automatic training that failed (too few labels per label, say) waits for the next
    # `every` labels instead of being queued again at every check.
    failed_at = session.exec(
        select(Job.created_at)
        .where(
            col(Job.project_id) == project.id,
            col(Job.kind) == JobKind.train_model,
            col(Job.status) == "failed",
            col(Job.created_by).in_((HANDS_OFF, "auto-retrain")),
        )
        .order_by(col(Job.id).desc())
        .limit(1)
    ).first()
    if failed_at is not None and (since is None or failed_at > since):
        since = failed_at
    if since is not None:
        labeled = labeled.where(col(Item.labeled_at) > since)
    new_labels = session.exec(
        select(func.count()).select_from(labeled.limit(every).subquery())
    ).one()
    return new_labels >= every, latest


def list_versions(session: Session, *, project: Project, page: PageRequest) -> list[ModelVersion]:
    query = select(ModelVersion).where(col(ModelVersion.project_id) == project.id)
    return list(session.exec(keyset(query, col(ModelVersion.id), page, descending=True)))


def get_version(session: Session, *, project: Project, version: int) -> ModelVersion:
    found = session.exec(
        select(ModelVersion).where(
            col(ModelVersion.project_id) == project.id, col(ModelVersion.version) == version
        )
    ).first()
    if found is None:
        raise NotFound(f"Project {project.id} has no model version {version}.")
    return found


def active_version(session: Session, *, project: Project) -> ModelVersion | None:
    """The project's active version. Every batch request asks, so its training set (ids and
    labels, megabytes for a big one) loads only if the caller reads it."""
    return session.exec(
        select(ModelVersion).where(
            col(ModelVersion.project_id) == project.id, col(ModelVersion.active)
        )
    ).first()


def activation_scoring_status(
    session: Session, *, project: Project, version: ModelVersion
) -> str | None:
    """The status of the pool scoring the version's latest activation queued (None: there is
    none): one primary-key read, cheap enough for every batch request."""
    if version.scoring_job_id is None:
        return None
    return session.exec(select(Job.status).where(col(Job.id) == version.scoring_job_id)).first()


def activate_version(
    session: Session, runner: JobRunner, *, project: Project, version: int, principal: Principal
) -> tuple[ModelVersion, Job]:
    """Make a version the project's active one and start scoring the pool with it."""
    project = load_project(session, project_id=project.id, lock=True)
    chosen = get_version(session, project=project, version=version)
    job = make_active(session, project=project, version=chosen, created_by=principal.name)
    return chosen, jobs.commit_and_enqueue(session, runner, job)


def make_active(
    session: Session, *, project: Project, version: ModelVersion, created_by: str
) -> Job:
    """Make `version` the project's only active one and queue its pool scoring (flushes)."""
    for other in session.exec(
        select(ModelVersion).where(
            col(ModelVersion.project_id) == project.id, col(ModelVersion.active)
        )
    ):
        if other.id != version.id:
            other.active = False
            session.add(other)
    session.flush()  # the partial unique index allows one active version at a time
    version.active, version.activated_at = True, utcnow()
    session.add(version)
    scoring = jobs.new_job(
        session,
        project_id=project.id,
        kind=JobKind.score_pool,
        params=ScorePoolParams(version=version.version),
        created_by=created_by,
    )
    version.scoring_job_id = scoring.id
    session.add(version)
    events.emit(
        session,
        EventType.model_activated,
        project_id=project.id,
        data=lambda: _activated(version, created_by=created_by, scoring_job_id=scoring.id),
    )
    return scoring


def _activated(
    version: ModelVersion, *, created_by: str, scoring_job_id: int | None
) -> ModelActivatedData:
    metrics = version.metrics or {}
    accuracy, macro_f1 = metrics.get("accuracy"), metrics.get("macro_f1")
    assert version.activated_at is not None
    return ModelActivatedData(
        project_id=version.project_id,
        version=version.version,
        model_version=registry_version_name(version.version),
        algorithm=version.algorithm,
        dataset_version=version.dataset_version,
        accuracy=None if accuracy is None else float(accuracy),
        macro_f1=None if macro_f1 is None else float(macro_f1),
        activated_at=version.activated_at,
        activated_by=created_by,
        scoring_job_id=scoring_job_id,
    )


def load_version(database: Database, version: ModelVersion) -> "Pipeline":
    """The fitted pipeline of a version, from the process cache or the database."""

    def load() -> "Pipeline":
        with database.session() as session:
            artifact = session.get(ModelArtifact, (version.id, PIPELINE_ARTIFACT))
            if artifact is None:
                raise NotFound(f"Model version {version.version} has no stored pipeline.")
            return load_pipeline(artifact.content)

    settings = database.settings
    pipelines: ModelCache[Pipeline] = shared_cache(
        settings.resolved_database_url, settings.model_cache_size
    )
    return pipelines.get(version.id, load)


def load_oof_probabilities(session: Session, version: ModelVersion) -> np.ndarray:
    artifact = session.get(ModelArtifact, (version.id, OOF_ARTIFACT))
    if artifact is None:
        raise NotFound(f"Model version {version.version} has no out-of-fold probabilities.")
    return load_array(artifact.content)


def version_inputs(
    algorithm: Algorithm, items: list[tuple[int, str, dict[str, Any]]]
) -> tuple[list[int], list[str] | np.ndarray]:
    """The (ids, inputs) of (id, text, data) rows the algorithm can score; others are skipped."""
    if algorithm.input == "text":
        return [r[0] for r in items], [r[1] for r in items]
    ids, vectors = [], []
    for item_id, _, data in items:
        vector = feature_vector(data)
        if vector is not None:
            ids.append(item_id)
            vectors.append(vector)
    return ids, np.asarray(vectors, dtype=np.float64)


# Fewer labels than this that the active version never saw: compare cross-validated macro-F1.
MIN_HELD_OUT_COMPARISON = 20


def compare_with_active(
    database: Database,
    *,
    active: ModelVersion,
    algorithm: Algorithm,
    training_set: TrainingSet,
    new_labels: list[str],
    oof_probabilities: np.ndarray,
    macro_f1: float,
) -> ActivationCheck:
    """Whether a new version does at least as well as the active one, on the same held-out
    evidence: the items of the new training set the active version never trained on, which
    the active version predicts now and the new one predicted out of fold. Accuracy on those
    items; with fewer than MIN_HELD_OUT_COMPARISON of them (or a version reading other
    inputs), each version's own cross-validated macro-F1, which is measured on different
    items and only a fallback."""
    seen = set(active.train_item_ids)
    held_out = [i for i, item_id in enumerate(training_set.item_ids) if item_id not in seen]
    same_inputs = get_algorithm(active.algorithm).input == algorithm.input
    number = active.version
    if len(held_out) < MIN_HELD_OUT_COMPARISON or not same_inputs:
        active_f1 = float(active.metrics["macro_f1"])
        return ActivationCheck(
            basis="cross_validation",
            active_version=number,
            n_items=0,
            new_score=round(macro_f1, 6),
            active_score=round(active_f1, 6),
            activated=macro_f1 >= active_f1,
        )
    # Imported on first use: docs/design.md, "Import weight".
    from app.registry.training import predict_probabilities

    truth = np.asarray([training_set.labels[i] for i in held_out])
    new_guess = np.asarray(new_labels)[oof_probabilities[held_out].argmax(axis=1)]
    inputs = training_set.model_inputs(algorithm)
    subset = inputs[held_out] if isinstance(inputs, np.ndarray) else [inputs[i] for i in held_out]
    active_probabilities = predict_probabilities(
        load_version(database, active), subset, len(active.labels)
    )
    active_guess = np.asarray(active.labels)[active_probabilities.argmax(axis=1)]
    new_score = float(np.mean(new_guess == truth))
    active_score = float(np.mean(active_guess == truth))
    return ActivationCheck(
        basis="held_out",
        active_version=number,
        n_items=len(held_out),
        new_score=round(new_score, 6),
        active_score=round(active_score, 6),
        activated=new_score >= active_score,
    )
