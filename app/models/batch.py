"""Batches: the items handed to one annotator at a time, each held by a lease until answered."""

from datetime import datetime
from enum import StrEnum
from typing import Literal

import pydantic
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel
from typing_extensions import TypeAliasType

from app.ml.selection import Strategy
from app.models.api_key import NAME_PATTERN
from app.models.base import DbId, ResponseModel, SafeStr, timestamp_column, utcnow
from app.models.item import ItemPublic

BatchQueue = TypeAliasType("BatchQueue", Literal["label", "review"])
# What a batch really used: a requested strategy, "cold_start" (diverse random draws, no model)
# or "review" (the review queue, oldest first).
UsedStrategy = TypeAliasType(
    "UsedStrategy",
    Literal[
        "random", "least_confidence", "margin", "entropy", "diverse_margin", "cold_start", "review"
    ],
)
# Whose stored scores ranked a label batch's picks (null: none did: a cold start, random, or
# the review queue). See BatchPublic.ranked_by.
BatchRanking = TypeAliasType(
    "BatchRanking", Literal["active_model", "previous_model", "partial_scores", "requested_model"]
)
# Where a batch item's lease stands: still live or expired, or how it ended (LeaseOutcome).
LeaseState = TypeAliasType(
    "LeaseState", Literal["live", "expired", "answered", "skipped", "released"]
)


class LeaseOutcome(StrEnum):
    answered = "answered"  # its annotator submitted an annotation for the item
    skipped = "skipped"  # released without an answer; not offered to that annotator again soon
    released = "released"  # the batch was deleted before the item was answered


class Batch(SQLModel, table=True):
    __tablename__ = "batch"
    __table_args__ = (sa.Index("ix_batch_project_annotator", "project_id", "annotator", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("project.id"), nullable=False)
    )
    annotator: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    queue: str = Field(sa_column=sa.Column(sa.String(10), nullable=False))
    requested_strategy: str | None = Field(default=None, sa_column=sa.Column(sa.String(30)))
    strategy: str = Field(sa_column=sa.Column(sa.String(30), nullable=False))
    model_version: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    ranked_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(30)))
    size: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    lease_expires_at: datetime = Field(sa_column=timestamp_column())
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    released_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class Lease(SQLModel, table=True):
    """One item of a batch. Live while released_at is null and expires_at is in the future."""

    __tablename__ = "lease"
    __table_args__ = (
        # Counting an item's live leases (the overlap cap) reads only unreleased rows.
        sa.Index(
            "ix_lease_live_item",
            "item_id",
            "expires_at",
            sqlite_where=sa.text("released_at IS NULL"),
            postgresql_where=sa.text("released_at IS NULL"),
        ),
        sa.Index("ix_lease_annotator_item", "annotator", "item_id"),
        sa.Index("ix_lease_batch", "batch_id", "position"),
        sa.Index("ix_lease_project_exploration", "project_id", "is_random", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    batch_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("batch.id"), nullable=False)
    )
    project_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("project.id"), nullable=False)
    )
    item_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("item.id"), nullable=False))
    annotator: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    position: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    score: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    # Drawn uniformly from the pool (the exploration share): the honest yardstick of the model.
    is_random: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    # The model's label and confidence when the item was handed out (None without a model).
    predicted_label: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    confidence: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    expires_at: datetime = Field(sa_column=timestamp_column())
    released_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    outcome: str | None = Field(default=None, sa_column=sa.Column(sa.String(20)))


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = pydantic.Field(ge=1, le=500, examples=[10])
    strategy: Strategy | None = pydantic.Field(
        default=None,
        description="Defaults to margin with a model and to a diverse cold start without one.",
    )
    queue: BatchQueue = pydantic.Field(
        default="label",
        description="label: items still needing answers; review: needs_review items, with the "
        "model's suggestion and the reason.",
    )
    model_version: SafeStr | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Rank by this version's stored predictions (e.g. an external model's); "
        "defaults to the active registry version.",
    )
    lease_seconds: int | None = pydantic.Field(
        default=None,
        ge=1,
        le=7 * 24 * 3600,
        description="How long the items stay reserved; defaults to the server's lease_seconds.",
    )
    annotator: str | None = pydantic.Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Admin and service keys only: fetch for this annotator (a front-end "
        "serving many people); annotator keys always fetch for themselves.",
    )
    random_share: float | None = pydantic.Field(
        default=None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Share of uniformly random, marked items; defaults to the server's "
        "batch_random_share (0.1).",
    )


class BatchSkip(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_ids: list[DbId] = pydantic.Field(min_length=1, max_length=500)


class BatchRenew(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lease_seconds: int | None = pydantic.Field(
        default=None,
        ge=1,
        le=7 * 24 * 3600,
        description="How long from now the live leases last; defaults to the server's "
        "lease_seconds.",
    )


class BatchItem(ResponseModel):
    item: ItemPublic
    score: float | None = pydantic.Field(
        description="How worth labeling the item is under the strategy (higher first); "
        "null without a model."
    )
    suggested_label: str | None = None
    confidence: float | None = pydantic.Field(
        default=None, description="The model's confidence in suggested_label."
    )
    review_reason: str | None = pydantic.Field(
        default=None, description="Review queue: why the item needs review."
    )
    exploration: bool = pydantic.Field(
        description="Drawn uniformly at random from the pool (the measured exploration share)."
    )
    lease: LeaseState


class BatchPublic(ResponseModel):
    id: int | None = pydantic.Field(
        description="null only in the answer to a request that found nothing to hand out "
        "(status 200, `items` empty): no batch was stored, so there is nothing to read, skip "
        "or release. Ask again later."
    )
    project_id: int
    annotator: str
    queue: BatchQueue
    strategy: UsedStrategy
    requested_strategy: Strategy | None
    model_version: str | None = pydantic.Field(
        description="The model whose stored scores ranked the picks (see ranked_by)."
    )
    ranked_by: BatchRanking | None = pydantic.Field(
        description="Whose stored scores ranked the picks. active_model: the active version's, "
        "its pool scoring complete. previous_model: the active version's pool scoring was "
        "still running, so the previously active version's scores ranked them "
        "(model_version names it). partial_scores: scoring was still running and no earlier "
        "version had scores: the active version's scores so far ranked them, topped up with "
        "items marked `exploration`. requested_model: the request named the model. null: no "
        "model ranked the batch (cold_start, random, review)."
    )
    lease_expires_at: datetime | None = pydantic.Field(
        description="When the items' leases expire; null when nothing was handed out."
    )
    created_at: datetime = pydantic.Field(
        description="When the batch was handed out (for an empty answer, when it was answered)."
    )
    released_at: datetime | None
    items: list[BatchItem]
