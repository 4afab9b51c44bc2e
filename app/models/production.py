"""Continuous labeling: production predictions, the daily review sample drawn from them, and
the model-vs-human disagreement report built on the reviewers' decisions."""

from datetime import date, datetime
from typing import Annotated, Any, Literal, Self

import pydantic
import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, ConfigDict, WithJsonSchema, model_validator
from sqlmodel import Field, SQLModel
from typing_extensions import TypeAliasType

from app.errors import Problem
from app.models.base import (
    MAX_JSON_DEPTH,
    JsonObject,
    ResponseModel,
    SafeStr,
    timestamp_column,
    utcnow,
)
from app.models.item import IngestStatus

SampleReason = TypeAliasType(
    "SampleReason", Literal["production_low_confidence", "production_random"]
)
LOW_CONFIDENCE: SampleReason = "production_low_confidence"
RANDOM: SampleReason = "production_random"
ReportBucket = TypeAliasType("ReportBucket", Literal["day", "week"])
HumanDecision = TypeAliasType("HumanDecision", Literal["review", "consensus"])

MAX_DAILY_SAMPLE = 100_000
Confidence = Annotated[float, pydantic.Field(ge=0.0, le=1.0, allow_inf_nan=False)]
DailyCount = Annotated[int, pydantic.Field(ge=0, le=MAX_DAILY_SAMPLE)]


class ProductionSampling(BaseModel):
    """How many production predictions go to human review each UTC day (a project setting)."""

    model_config = ConfigDict(extra="forbid")

    daily_random: DailyCount = pydantic.Field(
        default=20,
        description="Predictions drawn uniformly at random each day, after the low-confidence "
        "ones: the unbiased estimate of the production disagreement rate.",
    )
    daily_low_confidence: DailyCount = pydantic.Field(
        default=30,
        description="Predictions below low_confidence_below sent each day, lowest confidence "
        "first: where the model most likely errs.",
    )
    low_confidence_below: Confidence = pydantic.Field(
        default=0.6, description="A prediction below this confidence is low-confidence."
    )


DEFAULT_PRODUCTION_SAMPLING: dict[str, Any] = ProductionSampling().model_dump()


class ProductionSamplingPublic(ProductionSampling, ResponseModel):
    """The setting as a project answers it: every field is always there."""


class ProductionSamplingUpdate(BaseModel):
    """Only the fields sent change; the others keep their values."""

    model_config = ConfigDict(extra="forbid")

    daily_random: DailyCount | None = None
    daily_low_confidence: DailyCount | None = None
    low_confidence_below: Confidence | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> Self:
        for field in self.model_fields_set:
            if getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self


class ProductionPrediction(SQLModel, table=True):
    """One production prediction; sampled_at and sample_reason are set when it was sent to
    review as part of its day's sample."""

    __tablename__ = "production_prediction"
    __table_args__ = (
        # The daily quota: today's predictions of a project, sampled or not.
        sa.Index("ix_production_prediction_project_received", "project_id", "received_at", "id"),
        # The report and the disagreement list read the sampled predictions only.
        sa.Index("ix_production_prediction_project_sampled", "project_id", "sampled_at", "id"),
        # A retried request is recognised by (item, predicted_at).
        sa.Index("ix_production_prediction_item", "item_id", "predicted_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("project.id"), nullable=False)
    )
    item_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("item.id"), nullable=False))
    label: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    confidence: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    model_version: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    predicted_at: datetime = Field(sa_column=timestamp_column())
    received_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    sampled_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    sample_reason: str | None = Field(default=None, sa_column=sa.Column(sa.String(30)))


class ProductionPredictionIn(BaseModel):
    """One production prediction with its item; validated entry by entry."""

    model_config = ConfigDict(extra="forbid")

    external_id: SafeStr = pydantic.Field(
        min_length=1, max_length=255, description="Your id of the item; the same one updates it."
    )
    text: SafeStr = pydantic.Field(min_length=1, description="The content the model saw.")
    label: SafeStr = pydantic.Field(
        min_length=1, max_length=100, description="The production model's label."
    )
    confidence: float = pydantic.Field(
        ge=0.0, le=1.0, allow_inf_nan=False, strict=True, description="Its confidence, in [0, 1]."
    )
    model_version: SafeStr = pydantic.Field(min_length=1, max_length=100)
    predicted_at: AwareDatetime | None = pydantic.Field(
        default=None,
        description="When the model predicted (with a UTC offset); default: when received. "
        "Send it to make retries safe: the same prediction again is `unchanged`.",
    )
    metadata: JsonObject | None = pydantic.Field(
        default=None,
        description=f"The item's metadata (at most {MAX_JSON_DEPTH} levels deep); omitted, an "
        "existing item keeps its own.",
    )

    @pydantic.field_validator("text")
    @classmethod
    def _has_content(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("must contain more than whitespace")
        return text


# Entries are validated one by one in the service, so one bad entry fails only itself; the
# spec still describes them (the schema is added to the components in app.main).
RawProductionEntry = Annotated[
    Any, WithJsonSchema({"$ref": "#/components/schemas/ProductionPredictionIn"})
]


class ProductionSampleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    predictions: list[RawProductionEntry] = pydantic.Field(
        min_length=1,
        description="Up to LABELWISE_MAX_ITEMS_PER_REQUEST (10,000) production predictions.",
    )


ProductionEntryStatus = TypeAliasType(
    "ProductionEntryStatus", Literal["stored", "unchanged", "failed"]
)


class ProductionEntryResult(ResponseModel):
    index: int = pydantic.Field(description="Position of the entry in `predictions`.")
    status: ProductionEntryStatus = pydantic.Field(
        description="stored: a new production prediction; unchanged: the same prediction "
        "(item, model_version, predicted_at, label, confidence) was already stored; failed: "
        "see problem, nothing was written for it."
    )
    item_id: int | None = None
    item_status: IngestStatus | None = pydantic.Field(
        default=None,
        description="What happened to the item, as in bulk ingest (a duplicate text attaches "
        "the prediction to the existing item).",
    )
    prediction_id: int | None = None
    sample_reason: SampleReason | None = pydantic.Field(
        default=None, description="Set when this prediction entered the review queue now."
    )
    problem: Problem | None = None


class DailyQuota(ResponseModel):
    day: date = pydantic.Field(description="The UTC day of received_at the quota counts.")
    daily_low_confidence: int
    daily_random: int
    low_confidence_below: float
    sampled_low_confidence: int = pydantic.Field(description="Used today, this request included.")
    sampled_random: int = pydantic.Field(description="Used today, this request included.")


class ProductionIngestReport(ResponseModel):
    stored: int = 0
    unchanged: int = 0
    failed: int = 0
    items_created: int = 0
    entered_review: int = pydantic.Field(
        default=0,
        description="Predictions of today (of this request or earlier ones) this request sent "
        "to the review queue.",
    )
    quota: DailyQuota
    results: list[ProductionEntryResult] = pydantic.Field(default_factory=list)


class DisagreementStats(ResponseModel):
    n_sampled: int = pydantic.Field(description="Sampled predictions (sent to review).")
    n_decided: int = pydantic.Field(
        description="Of those, the ones whose item now has a human decision (a review or "
        "human consensus)."
    )
    n_disagreed: int = pydantic.Field(
        description="Of the decided ones, those whose human label differs from the model's."
    )
    disagreement_rate: float | None = pydantic.Field(
        description="n_disagreed / n_decided; null before any decision."
    )
    ci_low: float | None = pydantic.Field(description="Wilson 95% interval, lower bound.")
    ci_high: float | None = pydantic.Field(description="Wilson 95% interval, upper bound.")


class PeriodDisagreement(DisagreementStats):
    period_start: date = pydantic.Field(
        description="First UTC day of the period (of predicted_at): the day, or the Monday."
    )


class LabelDisagreement(DisagreementStats):
    label: str = pydantic.Field(description="The production model's label.")


class ModelVersionDisagreement(DisagreementStats):
    model_version: str


class ReasonDisagreement(DisagreementStats):
    sample_reason: SampleReason


class Confusion(ResponseModel):
    production_label: str
    human_label: str
    n: int


class ProductionReport(ResponseModel):
    bucket: ReportBucket
    model_version: str | None = pydantic.Field(description="The model_version filter, if any.")
    sample_reason: SampleReason | None = pydantic.Field(
        description="The sample_reason filter, if any."
    )
    sampling: ProductionSamplingPublic = pydantic.Field(
        description="The project's current setting."
    )
    overall: DisagreementStats = pydantic.Field(
        description="Every sampled prediction. Without a sample_reason filter it mixes both "
        "samples, so low-confidence predictions are over-represented and the rate overstates "
        "the disagreement on all production traffic."
    )
    by_sample_reason: list[ReasonDisagreement] = pydantic.Field(
        description="production_random is a uniform sample of the day's predictions: the "
        "unbiased estimate of the production disagreement rate. production_low_confidence "
        "measures the model where it is least sure."
    )
    by_period: list[PeriodDisagreement] = pydantic.Field(
        description="By UTC day or ISO week (Monday) of predicted_at, oldest first."
    )
    by_label: list[LabelDisagreement] = pydantic.Field(
        description="By the production model's label: how often its X is not a human's X."
    )
    by_model_version: list[ModelVersionDisagreement]
    confusions: list[Confusion] = pydantic.Field(
        description="Decided disagreements by (production label, human label), most first."
    )


class ProductionDisagreement(ResponseModel):
    prediction_id: int
    item_id: int
    external_id: str | None
    text: str
    production_label: str
    confidence: float
    model_version: str
    human_label: str
    decided_by: HumanDecision = pydantic.Field(
        description="review: a reviewer's decision; consensus: the annotators' answers."
    )
    predicted_at: datetime
    sample_reason: SampleReason
