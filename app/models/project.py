"""Projects: a labeling task definition (labels, guidelines, overlap, thresholds, costs)."""

import json
from datetime import datetime
from typing import Annotated, Any, Self

import pydantic
import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, model_validator
from sqlmodel import Field, SQLModel

from app.models.base import (
    PILOT_MIN_ANNOTATORS,
    ConsensusMethod,
    Phase,
    ResponseModel,
    SafeStr,
    reject_control_characters,
    reject_nul,
    timestamp_column,
    utcnow,
)
from app.models.production import (
    DEFAULT_PRODUCTION_SAMPLING,
    ProductionSampling,
    ProductionSamplingPublic,
    ProductionSamplingUpdate,
)

Label = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(reject_nul),
    AfterValidator(reject_control_characters),
]
Probability = Annotated[float, pydantic.Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Cost = Annotated[float, pydantic.Field(ge=0, allow_inf_nan=False)]


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: SafeStr = pydantic.Field(min_length=1)
    label: SafeStr
    note: SafeStr | None = None


class ExamplePublic(Example, ResponseModel):
    """An example as a project answers it: `note` is always there (null when none)."""


class HandsOff(BaseModel):
    """The hands-off loop (docs/active-learning.md, "The hands-off loop"): after every
    `labels_per_round` new human labels the service retrains, activates the new version only
    when it does at least as well on the same held-out items, rescores the pool and
    auto-accepts the most probably correct predictions while the whole pool (human answers
    and auto-accepts) stays at least `target_accuracy` correct. Annotators just keep asking
    for batches."""

    model_config = ConfigDict(extra="forbid")

    labels_per_round: int = pydantic.Field(
        default=200,
        ge=1,
        le=10_000_000,
        description="New human labels (first or changed ones) that start the next round.",
    )
    target_accuracy: float = pydantic.Field(
        default=0.95,
        ge=0.5,
        le=1.0,
        allow_inf_nan=False,
        description="The share of the pool's labels that must be right once every item is "
        "answered or auto-accepted. Human answers count as right; each round auto-accepts "
        "the predictions most probably right (calibrated on the version's out-of-fold "
        "predictions) while their expected errors, with a safety margin, fit the pool's "
        "error budget, (1 - target_accuracy) x pool size.",
    )


class HandsOffPublic(HandsOff, ResponseModel):
    """The hands-off loop's settings as a project answers them."""


class Project(SQLModel, table=True):
    __tablename__ = "project"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(200), nullable=False, unique=True))
    description: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    labels: list[str] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    allow_abstain: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    guidelines: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    examples: list[dict[str, Any]] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    annotators_per_item: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    auto_accept_threshold: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    agreement_threshold: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    synthetic_max_ratio: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    cost_per_label: dict[str, float] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    phase: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    consensus_method: str = Field(
        default=ConsensusMethod.majority,
        sa_column=sa.Column(sa.String(20), nullable=False, server_default="majority"),
    )
    # Train a new version after this many new human labels (None: only on request).
    retrain_after_labels: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    # The hands-off loop's settings (HandsOff), None: off. SQL NULL when off, so the watcher
    # finds the projects that use it with IS NOT NULL.
    hands_off: dict[str, Any] | None = Field(
        default=None, sa_column=sa.Column(sa.JSON(none_as_null=True), nullable=True)
    )
    # The daily review sample of production predictions (models/production.py).
    production_sampling: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_PRODUCTION_SAMPLING),
        sa_column=sa.Column(
            sa.JSON, nullable=False, server_default=json.dumps(DEFAULT_PRODUCTION_SAMPLING)
        ),
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())

    @property
    def hands_off_settings(self) -> HandsOff | None:
        """The hands-off loop's settings, or None when it is off."""
        return None if self.hands_off is None else HandsOff.model_validate(self.hands_off)

    @property
    def required_annotators(self) -> int:
        """Human answers an item needs: annotators_per_item, and at least two in the pilot."""
        if self.phase == Phase.pilot:
            return max(self.annotators_per_item, PILOT_MIN_ANNOTATORS)
        return self.annotators_per_item


def _check_labels(labels: list[str] | None, examples: list[Example] | None) -> None:
    if labels is not None:
        if len(labels) < 2:
            raise ValueError("a project needs at least two labels")
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be distinct")
    if labels is not None and examples is not None:
        unknown = sorted({e.label for e in examples} - set(labels))
        if unknown:
            raise ValueError(f"examples use labels that are not in labels: {unknown}")


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeStr = pydantic.Field(min_length=1, max_length=200, examples=["debian-sections"])
    description: SafeStr | None = None
    labels: list[Label] = pydantic.Field(
        min_length=2, max_length=1000, examples=[["devel", "utils"]]
    )
    allow_abstain: bool = True
    guidelines: SafeStr = pydantic.Field(default="", description="Markdown shown to annotators.")
    examples: list[Example] = pydantic.Field(default_factory=list)
    annotators_per_item: int = pydantic.Field(default=1, ge=1, le=100)
    auto_accept_threshold: Probability = 0.95
    agreement_threshold: Probability = 0.6
    synthetic_max_ratio: Probability = 0.1
    cost_per_label: dict[SafeStr, Cost] = pydantic.Field(
        default_factory=dict, examples=[{"in_house": 0.12, "crowd": 0.04}]
    )
    phase: Phase = pydantic.Field(
        default=Phase.pilot,
        description="pilot: every item goes to at least two annotators so agreement is "
        "measured; moving to production needs alpha >= agreement_threshold (or force + reason).",
    )
    consensus_method: ConsensusMethod = pydantic.Field(
        default=ConsensusMethod.majority,
        description="How answers become one label: majority (ties go to review), dawid_skene, "
        "or crowdlab (needs a trained model).",
    )
    retrain_after_labels: int | None = pydantic.Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Train a new model version once this many items got a new human label "
        "(a first or a changed one) since the newest version's training data; it is "
        "activated if its cross-validated macro-F1 is at least the active version's.",
    )
    hands_off: HandsOff | None = pydantic.Field(
        default=None,
        description="Turn the hands-off loop on (null: off). It retrains every "
        "labels_per_round new human labels, activates only a version at least as good on the "
        "same held-out items, rescores the pool and auto-accepts within target_accuracy; "
        "needs the production phase to auto-accept.",
    )
    production_sampling: ProductionSampling = pydantic.Field(
        default_factory=ProductionSampling,
        description="How many production predictions (POST .../production-samples) go to "
        "human review each UTC day.",
    )

    @model_validator(mode="after")
    def _labels_are_consistent(self) -> Self:
        _check_labels(self.labels, self.examples)
        return self


NULLABLE_UPDATE_FIELDS = {"description", "reason", "retrain_after_labels", "hands_off"}


class ProjectUpdate(BaseModel):
    """Every field optional; only the fields sent are changed."""

    model_config = ConfigDict(extra="forbid")

    name: SafeStr | None = pydantic.Field(default=None, min_length=1, max_length=200)
    description: SafeStr | None = None
    labels: list[Label] | None = pydantic.Field(default=None, min_length=2, max_length=1000)
    allow_abstain: bool | None = None
    guidelines: SafeStr | None = None
    examples: list[Example] | None = None
    annotators_per_item: int | None = pydantic.Field(default=None, ge=1, le=100)
    auto_accept_threshold: Probability | None = None
    agreement_threshold: Probability | None = None
    synthetic_max_ratio: Probability | None = None
    cost_per_label: dict[SafeStr, Cost] | None = None
    phase: Phase | None = None
    consensus_method: ConsensusMethod | None = None
    retrain_after_labels: int | None = pydantic.Field(default=None, ge=1, le=10_000_000)
    hands_off: HandsOff | None = pydantic.Field(
        default=None,
        description="The whole object (fields left out take their defaults); null turns the "
        "loop off.",
    )
    production_sampling: ProductionSamplingUpdate | None = pydantic.Field(
        default=None, description="Only the fields sent change."
    )

    force: bool = pydantic.Field(
        default=False,
        description="With `reason`: move pilot to production below the agreement threshold.",
    )
    reason: SafeStr | None = pydantic.Field(default=None, min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _labels_are_consistent(self) -> Self:
        _check_labels(self.labels, self.examples)
        for field in self.model_fields_set:
            if getattr(self, field) is None and field not in NULLABLE_UPDATE_FIELDS:
                raise ValueError(f"{field} cannot be null")
        if self.force and not self.reason:
            raise ValueError("force needs a reason, for the audit trail")
        return self


class ProjectPublic(ResponseModel):
    id: int
    name: str
    description: str | None
    labels: list[str]
    allow_abstain: bool
    guidelines: str
    examples: list[ExamplePublic]
    annotators_per_item: int
    auto_accept_threshold: float
    agreement_threshold: float
    synthetic_max_ratio: float
    cost_per_label: dict[str, float]
    phase: Phase
    consensus_method: ConsensusMethod
    retrain_after_labels: int | None
    hands_off: HandsOffPublic | None
    production_sampling: ProductionSamplingPublic
    created_at: datetime
    updated_at: datetime


class PhaseChange(SQLModel, table=True):
    """A recorded move between phases, with the agreement measured at that moment."""

    __tablename__ = "phase_change"
    __table_args__ = (sa.Index("ix_phase_change_project", "project_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("project.id"), nullable=False)
    )
    from_phase: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    to_phase: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    forced: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    krippendorff_alpha: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    agreement_threshold: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    changed_by: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class PhaseChangePublic(ResponseModel):
    id: int
    from_phase: Phase
    to_phase: Phase
    forced: bool = pydantic.Field(description="Moved below the agreement threshold on purpose.")
    reason: str | None
    krippendorff_alpha: float | None = pydantic.Field(
        description="Agreement measured when the phase changed (null: not measurable)."
    )
    agreement_threshold: float
    changed_by: str
    created_at: datetime
