"""The active-learning replay job: the project's own labels replayed k-fold for each
strategy and for random, to measure how many labels a strategy saves."""

import warnings

import numpy as np

from app.jobs.context import JobContext
from app.ml.simulation import curve_at, kfold_learning_curves, labels_to_reach, savings
from app.models.job_kinds import SimulateActiveLearningParams, SimulateActiveLearningResult
from app.registry.algorithms import get_algorithm
from app.services import model_versions
from app.services.active_learning import BASELINE
from app.services.project_loading import load_project

# Progress once the features are fitted; the replays share the rest.
FEATURES_DONE = 0.05


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
            progress=lambda done: context.progress(FEATURES_DONE + (0.99 - FEATURES_DONE) * done),
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
    )


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
