"""Items: the things to label, deduplicated by external_id and by normalized-text hash."""

from datetime import datetime
from typing import Any, Literal

import pydantic
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, field_validator
from sqlmodel import Field, SQLModel
from typing_extensions import TypeAliasType

from app.errors import Problem
from app.models.annotation import AnnotationPublic
from app.models.base import (
    MAX_JSON_DEPTH,
    ItemSource,
    ItemStatus,
    JsonObject,
    ResolvedBy,
    ResponseModel,
    SafeStr,
    timestamp_column,
    utcnow,
)
from app.models.prediction import PredictionPublic


class Item(SQLModel, table=True):
    __tablename__ = "item"
    __table_args__ = (
        sa.UniqueConstraint("project_id", "external_id", name="uq_item_project_id_external_id"),
        sa.UniqueConstraint("project_id", "content_hash", name="uq_item_project_id_content_hash"),
        sa.Index("ix_item_project_status", "project_id", "status", "id"),
        sa.Index("ix_item_project_source", "project_id", "source", "id"),
        sa.Index("ix_item_project_resolved_label", "project_id", "resolved_label", "id"),
        sa.Index("ix_item_project_resolved_by", "project_id", "resolved_by", "id"),
        sa.Index("ix_item_project_labeled_at", "project_id", "labeled_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("project.id"), nullable=False)
    )
    external_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    text: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    content_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    data: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    # "metadata" is reserved on declarative classes, hence the attribute name.
    meta: dict[str, Any] = Field(sa_column=sa.Column("metadata", sa.JSON, nullable=False))
    source: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    status: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    resolved_label: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    # Who decided resolved_label: a "review", the "consensus" of human answers, a "model" (an
    # auto-accept), or "user_behavior" (an implicit label from clicks), in that order of
    # precedence.
    resolved_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(20)))
    # How sure the consensus is (majority: the winning vote share; Dawid-Skene: posterior).
    consensus_quality: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    # Why it was sent to human review, and the model's suggestion for the reviewer.
    review_reason: str | None = Field(default=None, sa_column=sa.Column(sa.String(30)))
    suggested_label: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    suggestion_confidence: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    # Order in the review queue among items that already have a label (a label-issue flag's
    # label quality: lowest first); null for items still waiting for a label, which go first.
    review_priority: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    # Where an imported item came from: {kind, name, query_sha256?, job_id, imported_at}.
    provenance: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON))
    # When the item last got a label a model learns from (a TRAINABLE_RESOLUTIONS label new to
    # it): auto-retrain counts the labels newer than the newest model's training data.
    labeled_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class ItemIn(BaseModel):
    """One item of a bulk upsert. Validated entry by entry so one bad item sinks only itself."""

    model_config = ConfigDict(extra="forbid")

    external_id: SafeStr | None = pydantic.Field(
        default=None, min_length=1, max_length=255, description="Your id; the same one updates."
    )
    text: SafeStr = pydantic.Field(min_length=1, description="The content to label.")
    data: JsonObject = pydantic.Field(
        default_factory=dict,
        description=f"Structured payload; at most {MAX_JSON_DEPTH} levels deep.",
    )
    metadata: JsonObject = pydantic.Field(
        default_factory=dict, description=f"At most {MAX_JSON_DEPTH} levels deep."
    )
    source: ItemSource = ItemSource.manual

    @field_validator("text")
    @classmethod
    def _has_content(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("must contain more than whitespace")
        return text


IngestStatus = TypeAliasType(
    "IngestStatus", Literal["created", "updated", "unchanged", "duplicate", "failed"]
)
# Which of an ingest's entries its report lists.
IngestResults = TypeAliasType("IngestResults", Literal["all", "errors"])


class IngestEntryResult(ResponseModel):
    index: int = pydantic.Field(
        description="Position of the entry in the request (line number - 1)."
    )
    id: int | None = pydantic.Field(
        default=None, description="The stored item; for a duplicate, the original."
    )
    status: IngestStatus
    problem: Problem | None = None


class IngestReport(ResponseModel):
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    failed: int = 0
    results: list[IngestEntryResult] = pydantic.Field(default_factory=list)

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged + self.duplicates + self.failed

    def absorb(self, part: "IngestReport", *, keep_all: bool) -> None:
        """Add a chunk's report; without keep_all, keep only failed and duplicate results."""
        self.created += part.created
        self.updated += part.updated
        self.unchanged += part.unchanged
        self.duplicates += part.duplicates
        self.failed += part.failed
        self.results.extend(
            r for r in part.results if keep_all or r.status in ("failed", "duplicate")
        )


class ItemPublic(ResponseModel):
    id: int
    project_id: int
    external_id: str | None
    text: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    source: ItemSource
    status: ItemStatus
    resolved_label: str | None
    resolved_by: ResolvedBy | None = pydantic.Field(
        default=None,
        description="A reviewer's decision, human consensus, a model's auto-accepted "
        "prelabel, or an implicit label from user behaviour such as clicks (that order of "
        "precedence).",
    )
    consensus_quality: float | None = pydantic.Field(
        default=None,
        description="Confidence of the consensus label under the project's consensus_method.",
    )
    review_reason: str | None = pydantic.Field(
        default=None,
        description="Why it went to human review: low_confidence, audit, label_issue, "
        "production_low_confidence, production_random.",
    )
    suggested_label: str | None = None
    suggestion_confidence: float | None = None
    provenance: dict[str, Any] | None = pydantic.Field(
        default=None,
        description="For imported items: the import kind, source name, query hash, job and "
        "time it came from.",
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, item: Item) -> "ItemPublic":
        return cls.model_validate({**item.model_dump(exclude={"meta"}), "metadata": item.meta})


class ItemDetail(ItemPublic):
    annotations: list[AnnotationPublic] = pydantic.Field(
        description="Current annotations (an annotator key sees only its own)."
    )
    predictions: list[PredictionPublic] = pydantic.Field(
        default_factory=list, description="Latest predictions, newest first, one per model version."
    )
