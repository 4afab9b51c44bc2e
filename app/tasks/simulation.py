"""The active-learning replay job: the project's own labels replayed k-fold for each
strategy and for random, to measure how many labels a strategy saves; and, when a target pool
accuracy is asked, the pool-completion replay: human answers needed to complete the labeled
pool at that accuracy by the own loop (strategy + auto-accept), by random batches + the same
auto-accept, and all by hand."""

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from app.jobs.context import JobContext
from app.ml.simulation import (
    CompletionSummary,
    complete_pool,
    curve_at,
    kfold_learning_curves,
    labels_to_reach,
    savings,
    summarize_completion,
)
from app.models.job_kinds import (
    CompletionArm,
    CompletionPoint,
    PoolCompletion,
    SimulateActiveLearningParams,
    SimulateActiveLearningResult,
)
from app.registry.algorithms import get_algorithm
from app.services import model_versions
from app.services.active_learning import BASELINE
from app.services.project_loading import load_project

# Progress once the features are fitted; the replays share the rest (the k-fold replay up to
# KFOLD_DONE when the completion replay follows it).
FEATURES_DONE = 0.05
KFOLD_DONE = 0.5


def run_simulation(context: JobContext) -> SimulateActiveLearningResult:
    """Job function: replay the project's labels k-fold for each strategy and random."""
    # Imported on first use: docs/design.md, "Import weight".
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning

    asked = context.read_params(SimulateActiveLearningParams)
    algorithm = get_algorithm(asked.algorithm)
    with context.database.session() as session:
        project = load_project(session, project_id=context.project_id)
        training_set = model_versions.build_training_set(
            session, project=project, algorithm=algorithm
        )
    pipeline = algorithm.pipeline(algorithm.resolve_params(asked.params))
    classifier = pipeline.named_steps["classifier"]
    with warnings.catch_warnings():
        # A capped iteration count is the algorithm's speed choice, as in training.
        warnings.simplefilter("ignore", ConvergenceWarning)
        # The features step sees no labels (vocabulary and IDF only), so fitting it once on
        # every item leaks nothing the replayed annotators would not have had.
        features = pipeline.named_steps["features"].fit_transform(
            training_set.model_inputs(algorithm)
        )
        context.progress(FEATURES_DONE)
        completing = asked.target_pool_accuracy is not None
        end = KFOLD_DONE if completing else 0.99
        curves = kfold_learning_curves(
            features,
            np.asarray(training_set.labels),
            strategies=asked.strategies,
            folds=asked.folds,
            seed_size=asked.seed_size,
            batch_size=asked.batch_size,
            budget=asked.budget,
            seed=0,
            make_classifier=lambda: clone(classifier),
            progress=lambda done: context.progress(FEATURES_DONE + (end - FEATURES_DONE) * done),
        )
        completion = None
        if completing:
            completion = _completion(
                context,
                asked,
                features,
                np.asarray(training_set.labels),
                make_classifier=lambda: clone(classifier),
            )
    at_labels = asked.at_labels
    target = curve_at(curves[BASELINE], at_labels)
    needed = {
        s: (labels_to_reach(c, target) if target is not None else None) for s, c in curves.items()
    }
    saved = savings(curves, BASELINE, at_labels=at_labels)
    return SimulateActiveLearningResult(
        algorithm=algorithm.name,
        n_items=len(training_set.item_ids),
        folds=asked.folds,
        seed_size=asked.seed_size,
        batch_size=asked.batch_size,
        budget=asked.budget,
        baseline=BASELINE,
        at_labels=at_labels,
        target_accuracy=target,
        curves={s: [(n, round(a, 4)) for n, a in c] for s, c in curves.items()},
        labels_needed=needed,
        label_share=saved,
        summary=savings_summary(needed, saved, at_labels=at_labels, target=target),
        **({} if completion is None else {"completion": completion}),
    )


def _completion(
    context: JobContext,
    asked: SimulateActiveLearningParams,
    features: Any,
    labels: np.ndarray,
    *,
    make_classifier: Callable[[], Any],
) -> PoolCompletion:
    """The pool-completion replay of the labeled items (the pool), once per seed for the own
    loop and for random + prelabels; all by hand needs no replay."""
    target = asked.target_pool_accuracy
    assert target is not None
    seeds = asked.completion_seeds or 1
    strategy = asked.own_strategy or "margin"
    share = asked.own_random_share if asked.own_random_share is not None else 0.0
    arms = [("own_loop", strategy, share), ("random_prelabels", "random", 0.0)]
    summaries: list[tuple[str, str, float, CompletionSummary]] = []
    for index, (name, arm_strategy, arm_share) in enumerate(arms):
        runs = []
        for seed in range(seeds):
            runs.append(
                complete_pool(
                    features,
                    labels,
                    strategy=arm_strategy,
                    target=target,
                    seed_size=asked.seed_size,
                    batch_size=asked.batch_size,
                    make_classifier=make_classifier,
                    seed=seed,
                    random_share=arm_share,
                )
            )
            done = (index * seeds + seed + 1) / (len(arms) * seeds)
            context.progress(KFOLD_DONE + (0.99 - KFOLD_DONE) * done)
        summaries.append((name, arm_strategy, arm_share, summarize_completion(runs)))
    n = int(labels.shape[0])
    result = [_arm(name, s, share, summary, target) for name, s, share, summary in summaries]
    result.append(
        CompletionArm(
            name="all_human",
            strategy=None,
            random_share=0.0,
            runs=1,
            completed=1,
            human_answers=float(n),
            human_share=1.0,
            auto_accepted=0.0,
            auto_accept_accuracy=None,
            pool_accuracy=1.0,
            worst_pool_accuracy=1.0,
            met_target=True,
            curve=[CompletionPoint(labels=n, accepted=0, accepted_accuracy=None, pool_accuracy=1)],
        )
    )
    return PoolCompletion(
        target_accuracy=target,
        pool_size=n,
        seeds=seeds,
        seed_size=asked.seed_size,
        batch_size=asked.batch_size,
        arms=result,
        summary=completion_summary(result, target=target),
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _arm(
    name: str, strategy: str, share: float, summary: CompletionSummary, target: float
) -> CompletionArm:
    worst = summary.worst_pool_accuracy
    return CompletionArm(
        name=name,
        strategy=strategy,
        random_share=share,
        runs=summary.runs,
        completed=summary.completed,
        human_answers=_rounded(summary.human_answers),
        human_share=_rounded(summary.human_share),
        auto_accepted=_rounded(summary.auto_accepted),
        auto_accept_accuracy=_rounded(summary.auto_accept_accuracy),
        pool_accuracy=_rounded(summary.pool_accuracy),
        worst_pool_accuracy=_rounded(worst),
        met_target=summary.completed == summary.runs and worst is not None and worst >= target,
        curve=[
            CompletionPoint(
                labels=p.labels,
                accepted=p.accepted,
                accepted_accuracy=_rounded(p.accepted_accuracy),
                pool_accuracy=round(p.pool_accuracy, 4),
            )
            for p in summary.curve
        ],
    )


def completion_summary(arms: list[CompletionArm], *, target: float) -> str:
    """One sentence per arm that replayed: its human share and realized pool accuracy, and
    whether it missed the target (honestly: a miss is said first)."""
    parts = []
    for arm in arms:
        if arm.name == "all_human":
            continue
        label = "The own loop" if arm.name == "own_loop" else "Random batches + prelabels"
        if arm.human_share is None or arm.pool_accuracy is None:
            parts.append(f"{label} did not complete the pool.")
            continue
        verdict = "" if arm.met_target else f" MISSED the {target:.0%} target:"
        parts.append(
            f"{label}{verdict} completed the pool with {arm.human_share:.1%} human answers; "
            f"pool accuracy {arm.pool_accuracy:.3f} (worst replay {arm.worst_pool_accuracy:.3f}), "
            + (
                "no auto-accepts."
                if arm.auto_accept_accuracy is None
                else f"auto-accepts {arm.auto_accept_accuracy:.3f} correct."
            )
        )
    parts.append("All by hand: 100% human answers.")
    return " ".join(parts)


def savings_summary(
    needed: dict[str, int | None],
    saved: dict[str, float | None],
    *,
    at_labels: int,
    target: float | None,
) -> str:
    """One sentence a team can act on: the best strategy's saving, or that none helped."""
    if target is None:
        return "The baseline has no point at the comparison size; nothing to compare."
    options = [(share, s) for s, share in saved.items() if s != BASELINE and share is not None]
    if not options:
        return (
            f"No strategy reached random's accuracy at {at_labels} labels ({target:.3f}) within "
            "the budget: active learning does not pay off on these labels."
        )
    share = min(option[0] for option in options)
    tied = [s for s in saved if s != BASELINE and saved[s] == share]
    best = tied[0] if len(tied) == 1 else ", ".join(tied[:-1]) + " and " + tied[-1]
    if share >= 1.0:
        return (
            f"No strategy beat random: the best ({best}) needed {needed[tied[0]]} labels to "
            f"reach random's accuracy at {at_labels} labels ({target:.3f})."
        )
    return (
        f"{best} reached random's accuracy at {at_labels} labels ({target:.3f}) with "
        f"{needed[tied[0]]} labels: {1 - share:.0%} fewer labels."
    )
