"""Annotations: one current answer per (item, annotator); replaced answers stay as history."""

from datetime import datetime
from typing import Any, Literal, Self

import pydantic
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, model_validator
from sqlmodel import Field, SQLModel
from typing_extensions import TypeAliasType

from app.errors import Problem
from app.models.api_key import NAME_PATTERN
from app.models.base import (
    MAX_DB_ID,
    AnnotationSource,
    DbId,
    ResponseModel,
    SafeStr,
    timestamp_column,
    utcnow,
)


class Annotation(SQLModel, table=True):
    __tablename__ = "annotation"
    __table_args__ = (
        # At most one current annotation per (item, annotator), even under concurrent writes.
        sa.Index(
            "uq_annotation_current_item_annotator",
            "item_id",
            "annotator",
            unique=True,
            sqlite_where=sa.text("is_current"),
            postgresql_where=sa.text("is_current"),
        ),
        sa.Index("ix_annotation_project_annotator", "project_id", "annotator", "id"),
        sa.Index("ix_annotation_project_current", "project_id", "is_current", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("project.id"), nullable=False)
    )
    item_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("item.id"), nullable=False, index=True)
    )
    annotator: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    label: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    abstain: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    source: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    model_version: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    # For auto-accepted prelabels: the model's confidence and the threshold it cleared.
    confidence: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    threshold: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    duration_ms: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    note: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    # Where an imported or implicit label came from (same shape as Item.provenance).
    provenance: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON))
    is_current: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    replaced_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class AnnotationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: DbId
    label: SafeStr | None = pydantic.Field(default=None, description="Null only when abstaining.")
    abstain: bool = pydantic.Field(default=False, description='The explicit "I don\'t know".')
    duration_ms: int | None = pydantic.Field(default=None, ge=0, le=MAX_DB_ID)
    note: SafeStr | None = pydantic.Field(default=None, max_length=10_000)
    annotator: str | None = pydantic.Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Admin and service keys only: submit in this annotator's name (imports).",
    )
    source: AnnotationSource | None = pydantic.Field(
        default=None,
        description="Admin and service keys only; defaults to human.",
    )

    @model_validator(mode="after")
    def _label_xor_abstain(self) -> Self:
        if self.abstain and self.label is not None:
            raise ValueError("an abstention carries no label")
        if not self.abstain and self.label is None:
            raise ValueError("give a label, or abstain: true")
        return self


class AnnotationPublic(ResponseModel):
    id: int
    item_id: int
    annotator: str
    label: str | None
    abstain: bool
    source: AnnotationSource
    model_version: str | None
    confidence: float | None = None
    threshold: float | None = None
    duration_ms: int | None
    note: str | None
    provenance: dict[str, Any] | None = None
    is_current: bool
    created_at: datetime
    replaced_at: datetime | None


AnnotationEntryStatus = TypeAliasType(
    "AnnotationEntryStatus", Literal["created", "replaced", "unchanged", "failed"]
)


class AnnotationEntryResult(ResponseModel):
    index: int
    id: int | None = None
    status: AnnotationEntryStatus
    problem: Problem | None = None


class AnnotationReport(ResponseModel):
    created: int = 0
    replaced: int = 0
    unchanged: int = 0
    failed: int = 0
    results: list[AnnotationEntryResult] = pydantic.Field(default_factory=list)
