"""Prelabel requests: which model, which items, and how confident an auto-accept must be."""

from typing import Self

import pydantic
from pydantic import BaseModel, ConfigDict, model_validator

from app.models.base import DbId, ResponseModel, SafeStr

MAX_PRELABEL_ITEM_IDS = 10_000


class PrelabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float | None = pydantic.Field(
        default=None,
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Auto-accept at or above this confidence. Default: the project's "
        "auto_accept_threshold (unless target_precision or target_pool_accuracy is given).",
    )
    target_precision: float | None = pydantic.Field(
        default=None,
        gt=0.0,
        lt=1.0,
        allow_inf_nan=False,
        description="Instead of one threshold: per label, the lowest threshold whose precision "
        "on human labels (cross-validated) reaches this target.",
    )
    target_pool_accuracy: float | None = pydantic.Field(
        default=None,
        gt=0.0,
        lt=1.0,
        allow_inf_nan=False,
        description="Instead of thresholds: auto-accept as many items as the whole pool's error "
        "budget allows, so that the pool ends at or above this accuracy (human answers count "
        "as correct, earlier auto-accepts with their expected errors; see "
        "docs/active-learning.md).",
    )
    item_ids: list[DbId] | None = pydantic.Field(
        default=None, max_length=MAX_PRELABEL_ITEM_IDS, description="Only these items."
    )
    limit: int | None = pydantic.Field(default=None, ge=1, description="At most this many items.")
    model_version: SafeStr | None = pydantic.Field(
        default=None,
        max_length=100,
        description='Default: the active registry version. "registry:N" names another registry '
        "version; any other name uses the stored predictions of that external model.",
    )
    audit_share: float | None = pydantic.Field(
        default=None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Share of auto-accepted items also sent to human review (default 2%).",
    )

    @model_validator(mode="after")
    def _one_mode(self) -> Self:
        given = [self.threshold, self.target_precision, self.target_pool_accuracy]
        if sum(value is not None for value in given) > 1:
            raise ValueError("give one of threshold, target_precision and target_pool_accuracy")
        return self


class AuditVersion(ResponseModel):
    model_version: str
    audited: int = pydantic.Field(description="Auto-accepts sent to review as an audit sample.")
    reviewed: int = pydantic.Field(description="Of those, how many humans have answered.")
    agreed: int = pydantic.Field(description="Answers that agree with the auto-accepted label.")
    precision: float | None
    ci_low: float | None = pydantic.Field(description="95% Wilson interval.")
    ci_high: float | None


class AuditReport(ResponseModel):
    model_versions: list[AuditVersion]
