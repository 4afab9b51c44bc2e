"""Reviews: an adjudicator's final word on an item, above consensus and auto-accepts."""

from datetime import datetime

import pydantic
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel

from app.models.base import DbId, ResolvedBy, ResponseModel, SafeStr, timestamp_column, utcnow


class Review(SQLModel, table=True):
    __tablename__ = "review"
    __table_args__ = (
        # One current review per item; a new review replaces it and the old one stays.
        sa.Index(
            "uq_review_current_item",
            "item_id",
            unique=True,
            sqlite_where=sa.text("is_current"),
            postgresql_where=sa.text("is_current"),
        ),
        sa.Index("ix_review_project", "project_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("project.id"), nullable=False)
    )
    item_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("item.id"), nullable=False))
    reviewer: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    label: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    note: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    # What the item resolved to before this review: the evidence for flag-precision reports.
    previous_label: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    previous_resolved_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(20)))
    is_current: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    replaced_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class ReviewCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: DbId
    label: SafeStr = pydantic.Field(description="The final label; one of the project's labels.")
    note: SafeStr | None = pydantic.Field(default=None, max_length=10_000)


class ReviewPublic(ResponseModel):
    id: int
    item_id: int
    reviewer: str
    label: str
    note: str | None
    previous_label: str | None = pydantic.Field(
        description="The item's resolved label before this review."
    )
    previous_resolved_by: ResolvedBy | None
    is_current: bool
    created_at: datetime
    replaced_at: datetime | None
