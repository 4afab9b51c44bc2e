"""The training job: freeze (or reuse) a dataset version, train on it, register the model
version and, when asked, activate it (which queues its pool scoring)."""

from collections import Counter
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from app.errors import TrainingRefused
from app.jobs.context import JobContext
from app.models.dataset_version import DatasetVersion, DatasetVersionCreate
from app.models.job_kinds import TrainModelParams, TrainModelResult
from app.models.model_version import (
    ActivationCheck,
    ModelArtifact,
    ModelVersion,
    registry_version_name,
)
from app.models.project import Project
from app.registry.algorithms import Algorithm, get_algorithm
from app.registry.store import dump_array, dump_pipeline
from app.registry.training import TrainedModel, train
from app.services.dataset_versions import emit_created as emit_dataset_version_created
from app.services.dataset_versions import get_version as get_dataset_version
from app.services.dataset_versions import snapshot
from app.services.model_versions import (
    OOF_ARTIFACT,
    PIPELINE_ARTIFACT,
    TrainingSet,
    active_version,
    build_training_set,
    check_trainable,
    compare_with_active,
    make_active,
)
from app.services.project_loading import load_project


def run_training(context: JobContext) -> TrainModelResult:
    """Job function: train on a dataset version (frozen now, reused, or named) and register
    a new model version that records it."""
    asked = context.read_params(TrainModelParams)
    algorithm = get_algorithm(asked.algorithm)
    params = algorithm.resolve_params(asked.params)
    training_set, frozen, created = _frozen_training_set(context, asked, algorithm)
    try:
        return _train_and_register(
            context, asked, algorithm, params, training_set, frozen, created=created
        )
    except BaseException:
        if created:  # a job that registers no model leaves no dataset version behind
            _drop_untrained_version(context, frozen)
        raise


def _train_and_register(
    context: JobContext,
    asked: TrainModelParams,
    algorithm: Algorithm,
    params: dict[str, Any],
    training_set: TrainingSet,
    dataset: DatasetVersion,
    *,
    created: bool,
) -> TrainModelResult:
    """Fit (cancellable), then register the version, its artifacts and its activation in one
    transaction (with the dataset version's event, if this job froze it: only now is it
    kept); the pool scoring an activation queues runs once this job has succeeded."""
    frozen = dataset.version
    trained = _fit(context, algorithm, params, training_set)
    check = None
    if asked.activate == "if_better":
        check = _compare_with_active(context, algorithm, training_set, trained)
    pipeline_bytes = dump_pipeline(trained.pipeline)
    oof_bytes = dump_array(trained.oof_probabilities)
    context.progress(0.95)

    with context.database.session(write=True) as session:
        project = load_project(session, project_id=context.project_id, lock=True)
        version = _add_version(
            session, context, project, algorithm, params, training_set, trained, frozen
        )
        assert version.id is not None
        session.add(
            ModelArtifact(
                model_version_id=version.id, name=PIPELINE_ARTIFACT, content=pipeline_bytes
            )
        )
        session.add(
            ModelArtifact(model_version_id=version.id, name=OOF_ARTIFACT, content=oof_bytes)
        )
        if created:
            emit_dataset_version_created(session, version=dataset)
        scoring_job = None
        if _should_activate(session, project, asked.activate, version, check):
            scoring_job = make_active(
                session, project=project, version=version, created_by="registry"
            )
        session.commit()
    if scoring_job is not None:
        assert scoring_job.id is not None
        context.follow_ups.append(scoring_job.id)
    return TrainModelResult(
        version=version.version,
        model_version=registry_version_name(version.version),
        n_train=version.n_train,
        n_user_behavior=training_set.n_user_behavior,
        dataset_version=frozen,
        accuracy=trained.metrics["accuracy"],
        macro_f1=trained.metrics["macro_f1"],
        training_seconds=trained.seconds,
        activated=scoring_job is not None,
        scoring_job_id=scoring_job.id if scoring_job else None,
    )


def _fit(
    context: JobContext, algorithm: Algorithm, params: dict[str, Any], training_set: TrainingSet
) -> TrainedModel:
    """The cross-validated fit, reporting progress per fold (5% to 90%)."""
    context.progress(0.05)
    try:
        return train(
            algorithm,
            params,
            training_set.model_inputs(algorithm),
            training_set.labels,
            sample_weight=training_set.sample_weights(),
            progress=lambda fraction: context.progress(0.05 + 0.85 * fraction),
        )
    except ValueError as error:  # scikit-learn refusing these params for this data
        raise TrainingRefused(
            f"{algorithm.name} cannot be trained with these params on this data: {error}"
        ) from error


def _add_version(
    session: Session,
    context: JobContext,
    project: Project,
    algorithm: Algorithm,
    params: dict[str, Any],
    training_set: TrainingSet,
    trained: TrainedModel,
    frozen: int,
) -> ModelVersion:
    """The project's next model version, recording its training set, metrics and lineage
    (flushes; the project row is locked, so version numbers never collide)."""
    latest = session.exec(
        select(func.max(ModelVersion.version)).where(col(ModelVersion.project_id) == project.id)
    ).one()
    version = ModelVersion(
        project_id=project.id or 0,
        version=(latest or 0) + 1,
        algorithm=algorithm.name,
        params=params,
        labels=trained.labels,
        n_train=len(training_set.labels),
        train_item_ids=training_set.item_ids,
        train_labels=training_set.labels,
        train_set_hash=training_set.hash,
        label_distribution=dict(sorted(Counter(training_set.labels).items())),
        metrics=trained.metrics
        | {
            "excluded_labels": training_set.excluded_labels,
            "synthetic_dropped": training_set.synthetic_dropped,
            "n_user_behavior": training_set.n_user_behavior,
        },
        training_seconds=trained.seconds,
        job_id=context.job_id,
        dataset_version=frozen,
    )
    session.add(version)
    session.flush()
    return version


def _frozen_training_set(
    context: JobContext, asked: TrainModelParams, algorithm: Algorithm
) -> tuple[TrainingSet, DatasetVersion, bool]:
    """The training set, the dataset version it comes from (lineage) and whether this job
    created that version: the one the request named, else a new version of the labels as
    they are now, or the latest version when nothing changed since. A set that cannot be
    trained leaves no version behind."""
    requested = asked.dataset_version
    with context.database.session(write=True) as session:
        project = load_project(session, project_id=context.project_id, lock=True)
        if requested is not None:
            frozen = get_dataset_version(session, project=project, version=requested)
        else:
            frozen = snapshot(
                session,
                project=project,
                data=DatasetVersionCreate(note=f"Frozen to train a model (job {context.job_id})."),
                created_by=f"job:{context.job_id}",
                reuse_unchanged=True,
            )
        training_set = build_training_set(
            session, project=project, algorithm=algorithm, dataset_version=frozen
        )
        # Raises: the session closes without a commit.
        check_trainable(session, project=project, training_set=training_set)
        session.commit()
    created = requested is None and frozen.created_by == f"job:{context.job_id}"
    return training_set, frozen, created


def _drop_untrained_version(context: JobContext, frozen: DatasetVersion) -> None:
    """Delete a dataset version this job froze, unless a model version names it."""
    with context.database.session(write=True) as session:
        trained = select(ModelVersion.id).where(
            col(ModelVersion.project_id) == frozen.project_id,
            col(ModelVersion.dataset_version) == frozen.version,
        )
        session.exec(
            delete(DatasetVersion).where(col(DatasetVersion.id) == frozen.id, ~trained.exists())
        )
        session.commit()


def _compare_with_active(
    context: JobContext, algorithm: Algorithm, training_set: TrainingSet, trained: TrainedModel
) -> ActivationCheck | None:
    """The new version against the version active now, on the same held-out items
    (model_versions.compare_with_active); None when none is active."""
    with context.database.session() as session:
        project = load_project(session, project_id=context.project_id)
        current = active_version(session, project=project)
        if current is None:
            return None
        return compare_with_active(
            context.database,
            active=current,
            algorithm=algorithm,
            training_set=training_set,
            new_labels=trained.labels,
            oof_probabilities=trained.oof_probabilities,
            macro_f1=float(trained.metrics["macro_f1"]),
        )


def _should_activate(
    session: Session,
    project: Project,
    activate: bool | str,
    version: ModelVersion,
    check: ActivationCheck | None,
) -> bool:
    """True, False, or "if_better": when the new version does at least as well as the active
    one on the same held-out items (auto-retraining and the hands-off loop never swap in a
    worse model). The comparison is recorded in the version's metrics (`activation`); if
    another version was activated while this one trained, it is compared by cross-validated
    macro-F1."""
    if activate != "if_better":
        return bool(activate)
    current = active_version(session, project=project)
    if current is None:
        return True
    if check is None or check.active_version != current.version:
        new_f1, active_f1 = float(version.metrics["macro_f1"]), float(current.metrics["macro_f1"])
        check = ActivationCheck(
            basis="cross_validation",
            active_version=current.version,
            n_items=0,
            new_score=round(new_f1, 6),
            active_score=round(active_f1, 6),
            activated=new_f1 >= active_f1,
        )
    version.metrics = {**version.metrics, "activation": check.model_dump(mode="json")}
    session.add(version)
    return check.activated
