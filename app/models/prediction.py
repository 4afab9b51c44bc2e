"""Predictions: a model's probabilities for an item, from the registry or another service."""

import math
from datetime import datetime
from typing import Any, Literal, Self

import pydantic
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, model_validator
from sqlmodel import Field, SQLModel
from typing_extensions import TypeAliasType

from app.errors import Problem
from app.models.base import DbId, ResponseModel, SafeStr, timestamp_column, utcnow

PredictionSource = TypeAliasType("PredictionSource", Literal["registry", "external"])


class Prediction(SQLModel, table=True):
    __tablename__ = "prediction"
    __table_args__ = (
        sa.UniqueConstraint("item_id", "model_version", name="uq_prediction_item_id_model_version"),
        # Batch selection reads the most uncertain items of one version by index.
        sa.Index("ix_prediction_version_margin", "project_id", "model_version", "margin"),
        sa.Index("ix_prediction_version_confidence", "project_id", "model_version", "confidence"),
        sa.Index("ix_prediction_version_entropy", "project_id", "model_version", "entropy"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("project.id"), nullable=False)
    )
    item_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("item.id"), nullable=False))
    model_version: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    source: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    label: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    confidence: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    margin: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    entropy: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    probabilities: dict[str, float] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class PredictionIn(BaseModel):
    """One external prediction; validated entry by entry."""

    model_config = ConfigDict(extra="forbid")

    item_id: DbId | None = None
    external_id: SafeStr | None = pydantic.Field(default=None, min_length=1, max_length=255)
    probabilities: dict[str, Any] = pydantic.Field(
        description="Label -> probability, over the project's labels; they must sum to 1.",
        json_schema_extra={"additionalProperties": {"type": "number"}},
    )
    model_version: SafeStr = pydantic.Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _one_reference(self) -> Self:
        if (self.item_id is None) == (self.external_id is None):
            raise ValueError("give exactly one of item_id and external_id")
        return self


def probability_errors(probabilities: dict[str, Any], labels: list[str]) -> list[tuple[str, str]]:
    """(key, message) for each problem in a probability map; empty when it is valid."""
    errors: list[tuple[str, str]] = []
    known = set(labels)
    for key, value in probabilities.items():
        if key not in known:
            errors.append((key, f"unknown label {key!r}; the project's labels are {labels}"))
        elif isinstance(value, bool) or not isinstance(value, int | float):
            errors.append((key, "must be a number"))
        elif not math.isfinite(value):
            errors.append((key, "must be finite"))
        elif not 0.0 <= value <= 1.0:
            errors.append((key, f"must be in [0, 1], got {value}"))
    if not errors:
        total = math.fsum(float(v) for v in probabilities.values())
        if not probabilities:
            errors.append(("probabilities", "must not be empty"))
        elif abs(total - 1.0) > 1e-3:
            errors.append(("probabilities", f"must sum to 1 (within 0.001), got {total:.6g}"))
    return errors


PredictionEntryStatus = TypeAliasType(
    "PredictionEntryStatus", Literal["created", "updated", "failed"]
)


class PredictionEntryResult(ResponseModel):
    index: int
    item_id: int | None = None
    status: PredictionEntryStatus
    problem: Problem | None = None


class PredictionReport(ResponseModel):
    created: int = 0
    updated: int = 0
    failed: int = 0
    results: list[PredictionEntryResult] = pydantic.Field(default_factory=list)


class PredictionPublic(ResponseModel):
    model_version: str
    source: PredictionSource
    label: str
    confidence: float
    margin: float
    entropy: float
    probabilities: dict[str, float]
    created_at: datetime
