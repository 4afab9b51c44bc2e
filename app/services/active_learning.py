"""Is active learning paying off on this project? Measured online from the random share of
batches, and offline by replaying the project's own labels (a k-fold simulation job)."""

from collections import defaultdict
from typing import Any

from sqlalchemy import and_, case, func
from sqlmodel import Session, col, select

from app.errors import NotEnoughLabels
from app.jobs.context import JobRunner
from app.ml.thresholds import wilson_interval
from app.models.active_learning import (
    ActiveLearningReport,
    ExplorationAccuracy,
    SimulationRequest,
    SimulationSummary,
    SkippedItem,
    StrategyUsage,
)
from app.models.annotation import Annotation
from app.models.batch import Batch, Lease, LeaseOutcome
from app.models.job import Job, JobKind, JobStatus
from app.models.job_kinds import SimulateActiveLearningParams
from app.models.model_version import ModelVersion, registry_version_number
from app.models.project import Project
from app.registry.algorithms import get_algorithm
from app.services import jobs, model_versions
from app.services.api_keys import Principal
from app.settings import Settings

BASELINE = "random"
# The batches' strategy once a model is there (app/services/batches): the own loop's.
OWN_STRATEGY = "margin"


def report(session: Session, *, project: Project) -> ActiveLearningReport:
    return ActiveLearningReport(
        exploration=_exploration_accuracy(session, project=project),
        strategies=_strategy_usage(session, project=project),
        most_skipped=_most_skipped(session, project=project),
        simulation=_latest_simulation(session, project=project),
    )


def _exploration_accuracy(session: Session, *, project: Project) -> list[ExplorationAccuracy]:
    """The model's accuracy on uniformly drawn batch items, against their annotator's answer."""
    rows = session.exec(
        select(Batch.model_version, Lease.predicted_label, Annotation.label)
        .join(Batch, col(Batch.id) == col(Lease.batch_id))
        .join(
            Annotation,
            and_(
                col(Annotation.item_id) == col(Lease.item_id),
                col(Annotation.annotator) == col(Lease.annotator),
                col(Annotation.is_current),
            ),
        )
        .where(
            col(Lease.project_id) == project.id,
            col(Lease.is_random),
            col(Lease.outcome) == LeaseOutcome.answered,
            col(Lease.predicted_label).is_not(None),
            col(Batch.model_version).is_not(None),
            col(Annotation.label).is_not(None),
        )
    )
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for model_version, predicted, answer in rows:
        counts = tally[str(model_version)]
        counts[0] += 1
        counts[1] += int(predicted == answer)
    numbers = {
        name: number for name in tally if (number := registry_version_number(name)) is not None
    }
    n_train = dict(
        session.exec(
            select(ModelVersion.version, ModelVersion.n_train).where(
                col(ModelVersion.project_id) == project.id,
                col(ModelVersion.version).in_(list(numbers.values())),
            )
        ).all()
    )
    result = []
    for name, (answered, correct) in tally.items():
        low, high = wilson_interval(correct, answered)
        number = numbers.get(name)
        result.append(
            ExplorationAccuracy(
                model_version=name,
                n_train=n_train.get(number) if number is not None else None,
                answered=answered,
                correct=correct,
                accuracy=correct / answered,
                ci_low=low,
                ci_high=high,
            )
        )
    # The online learning curve: by training labels, external models last, then by name.
    return sorted(result, key=lambda r: (r.n_train is None, r.n_train or 0, r.model_version))


def _strategy_usage(session: Session, *, project: Project) -> list[StrategyUsage]:
    batches = dict(
        session.exec(
            select(Batch.strategy, func.count())
            .where(col(Batch.project_id) == project.id)
            .group_by(col(Batch.strategy))
        ).all()
    )
    leases = {
        strategy: (items, answered, skipped)
        for strategy, items, answered, skipped in session.exec(
            select(
                Batch.strategy,
                func.count(),
                func.sum(case((col(Lease.outcome) == LeaseOutcome.answered, 1), else_=0)),
                func.sum(case((col(Lease.outcome) == LeaseOutcome.skipped, 1), else_=0)),
            )
            .join(Batch, col(Batch.id) == col(Lease.batch_id))
            .where(col(Lease.project_id) == project.id)
            .group_by(col(Batch.strategy))
        )
    }
    return [
        StrategyUsage(
            strategy=strategy,
            batches=n_batches,
            items=leases.get(strategy, (0, 0, 0))[0],
            answered=int(leases.get(strategy, (0, 0, 0))[1] or 0),
            skipped=int(leases.get(strategy, (0, 0, 0))[2] or 0),
        )
        for strategy, n_batches in sorted(batches.items())
    ]


def _most_skipped(session: Session, *, project: Project, limit: int = 20) -> list[SkippedItem]:
    skips = func.count(func.distinct(col(Lease.annotator)))
    rows = session.exec(
        select(Lease.item_id, skips)
        .where(col(Lease.project_id) == project.id, col(Lease.outcome) == LeaseOutcome.skipped)
        .group_by(col(Lease.item_id))
        .having(skips >= 2)
        .order_by(skips.desc(), col(Lease.item_id))
        .limit(limit)
    )
    return [SkippedItem(item_id=item_id, skips=n) for item_id, n in rows]


def latest_simulation_job(session: Session, *, project: Project) -> Job | None:
    """The project's latest succeeded replay job, if any."""
    return session.exec(
        select(Job)
        .where(
            col(Job.project_id) == project.id,
            col(Job.kind) == JobKind.simulate_active_learning,
            col(Job.status) == JobStatus.succeeded,
        )
        .order_by(col(Job.id).desc())
        .limit(1)
    ).first()


def _latest_simulation(session: Session, *, project: Project) -> SimulationSummary | None:
    job = latest_simulation_job(session, project=project)
    if job is None or job.id is None:
        return None
    return SimulationSummary(job_id=job.id, finished_at=job.finished_at, result=job.result or {})


# --- the offline replay -------------------------------------------------------------------------


def _replay_plan(n_items: int, request: SimulationRequest) -> dict[str, Any]:
    """Budget and comparison point for n labeled items; a Conflict when they cannot work."""
    pool = n_items - -(-n_items // request.folds)  # every fold's pool: all but the largest fold
    budget = request.budget if request.budget is not None else pool
    if budget > pool or request.seed_size + request.batch_size > budget:
        raise NotEnoughLabels(
            f"The replay needs seed_size + batch_size <= budget <= {pool} (the labeled items "
            f"outside one of {request.folds} folds); this project has {n_items} human-labeled "
            f"items usable for training and asked for seed_size {request.seed_size}, "
            f"batch_size {request.batch_size}, budget {budget}.",
        )
    strategies = [BASELINE] + [s for s in request.strategies if s != BASELINE]
    return {
        "strategies": strategies,
        "folds": request.folds,
        "seed_size": request.seed_size,
        "batch_size": request.batch_size,
        "budget": budget,
        "at_labels": request.at_labels or budget,
    }


def _completion_plan(request: SimulationRequest, settings: Settings) -> dict[str, Any]:
    """The pool-completion replay's params: the own loop is the batches' default (margin with
    the configured random share)."""
    if request.target_pool_accuracy is None:
        return {}
    return {
        "target_pool_accuracy": request.target_pool_accuracy,
        "completion_seeds": request.completion_seeds,
        "own_strategy": OWN_STRATEGY,
        "own_random_share": settings.batch_random_share,
    }


def start_simulation(
    session: Session,
    runner: JobRunner,
    *,
    project: Project,
    principal: Principal,
    request: SimulationRequest,
    settings: Settings,
) -> Job:
    """Validate against the labels there are now (a 409 today, not a failed job later)."""
    name, params = model_versions.default_algorithm(session, project=project)
    if request.algorithm is not None and request.algorithm != name:
        name, params = request.algorithm, {}
    algorithm = get_algorithm(name)
    params = algorithm.resolve_params({**params, **request.params})
    training_set = model_versions.build_training_set(session, project=project, algorithm=algorithm)
    model_versions.check_trainable(session, project=project, training_set=training_set)
    plan = _replay_plan(len(training_set.item_ids), request)
    return jobs.submit_job(
        session,
        runner,
        project_id=project.id,
        kind=JobKind.simulate_active_learning,
        params=SimulateActiveLearningParams(
            **plan, **_completion_plan(request, settings), algorithm=name, params=params
        ),
        created_by=principal.name,
    )
