"""Is active learning paying off? The online yardstick (the random share) and offline replays."""

from datetime import datetime
from typing import Any, Self

import pydantic
from pydantic import BaseModel, ConfigDict, model_validator

from app.ml.selection import Strategy
from app.models.base import ResponseModel

DEFAULT_STRATEGIES: list[Strategy] = ["random", "margin", "diverse_margin"]


class SimulationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategies: list[Strategy] = pydantic.Field(
        default_factory=lambda: list(DEFAULT_STRATEGIES),
        min_length=1,
        max_length=5,
        description='Compared against "random", which is always replayed as the baseline.',
    )
    folds: int = pydantic.Field(
        default=3, ge=2, le=10, description="k of the k-fold: each fold is held out once."
    )
    seed_size: int = pydantic.Field(
        default=50, ge=2, le=100_000, description="Labels every replay starts from."
    )
    batch_size: int = pydantic.Field(default=50, ge=1, le=10_000)
    budget: int | None = pydantic.Field(
        default=None,
        ge=2,
        le=1_000_000,
        description="Labels each replay may use, seed included. Default: every item of the pool.",
    )
    algorithm: str | None = pydantic.Field(
        default=None,
        max_length=50,
        description="The model to replay with (see GET /v1/algorithms). Default: the active "
        "version's algorithm and params, else hashed_tfidf_sgd.",
    )
    params: dict[str, Any] = pydantic.Field(
        default_factory=dict,
        description='Overrides of the algorithm\'s params, e.g. {"class_weight": "none"}.',
    )
    at_labels: int | None = pydantic.Field(
        default=None,
        ge=1,
        description="The savings compare each strategy with random's accuracy at this many "
        "labels. Default: the budget.",
    )
    target_pool_accuracy: float | None = pydantic.Field(
        default=0.95,
        gt=0.0,
        lt=1.0,
        allow_inf_nan=False,
        description="Also replay completing the labeled pool at this accuracy (every item "
        "answered by a human or auto-accepted): human answers needed by the own loop (margin + "
        "auto-accept), by random batches + the same auto-accept, and all by hand. null: skip.",
    )
    completion_seeds: int = pydantic.Field(
        default=1, ge=1, le=5, description="Pool-completion replays per arm (seeds)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError("strategies must be distinct")
        if self.budget is not None and self.seed_size > self.budget:
            raise ValueError("seed_size cannot exceed budget")
        if self.budget is not None and self.at_labels is not None and self.at_labels > self.budget:
            raise ValueError("at_labels cannot exceed budget")
        return self


class ExplorationAccuracy(ResponseModel):
    model_version: str
    n_train: int | None = pydantic.Field(
        description="Labels the version was trained on (unknown for external models)."
    )
    answered: int = pydantic.Field(description="Randomly drawn items annotators answered.")
    correct: int = pydantic.Field(description="Of those, how many the model predicted right.")
    accuracy: float | None
    ci_low: float | None = pydantic.Field(description="95% Wilson interval.")
    ci_high: float | None


class StrategyUsage(ResponseModel):
    strategy: str
    batches: int
    items: int
    answered: int
    skipped: int


class SkippedItem(ResponseModel):
    item_id: int
    skips: int = pydantic.Field(description="Distinct annotators who skipped it.")


class SimulationSummary(ResponseModel):
    job_id: int
    finished_at: datetime | None
    result: dict[str, object]


class ActiveLearningReport(ResponseModel):
    exploration: list[ExplorationAccuracy] = pydantic.Field(
        description="Accuracy of each model version on the uniformly random share of batches "
        "that humans answered, by the labels it was trained on: the online learning curve."
    )
    strategies: list[StrategyUsage]
    most_skipped: list[SkippedItem] = pydantic.Field(
        description="Items two or more annotators skipped, most first (at most 20): often "
        "ambiguous or unlearnable; worth a look at the guidelines."
    )
    simulation: SimulationSummary | None = pydantic.Field(
        description="The latest finished replay (POST .../active-learning/simulations)."
    )
