"""Signed webhooks: subscriptions, the outbox of events, and one delivery per (event, endpoint).

An event is written in the same transaction as the change it reports (`services/events.emit`),
so a crash loses none; a sender loop in every API process delivers it later, signed per the
Standard Webhooks spec (docs/webhooks.md). The event payload models below are what a receiver
gets as the body: `{type, timestamp, data}`.
"""

from datetime import datetime
from enum import StrEnum
from typing import Generic, Literal, TypeVar

import pydantic
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel
from typing_extensions import TypeAliasType

from app.errors import Problem
from app.models.base import DbId, Phase, ResponseModel, SafeStr, timestamp_column, utcnow
from app.models.job import JobKind, JobStatus
from app.models.job_kinds import JobResult


class EventType(StrEnum):
    job_succeeded = "job.succeeded"
    job_failed = "job.failed"
    job_cancelled = "job.cancelled"
    model_activated = "model.activated"
    dataset_version_created = "dataset_version.created"
    label_issues_ready = "label_issues.ready"
    project_phase_changed = "project.phase_changed"
    items_labeled = "items.labeled"


class DeliveryStatus(StrEnum):
    pending = "pending"  # waiting for its first or next attempt (or being sent now)
    succeeded = "succeeded"  # the endpoint answered 2xx
    failed = "failed"  # every attempt failed; POST .../retry sends it once more
    cancelled = "cancelled"  # the webhook was deleted before it was delivered


URL_MAX_LENGTH = 2000
RESPONSE_PREFIX_CHARS = 200  # what is kept of a receiver's answer (never the whole body)


WebhookStatus = TypeAliasType("WebhookStatus", Literal["active", "disabled"])


class Webhook(SQLModel, table=True):
    """A subscription: where to send which events (of one project, or all), with its secret."""

    __tablename__ = "webhook"

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(sa_column=sa.Column(sa.String(URL_MAX_LENGTH), nullable=False))
    events: list[str] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    project_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, sa.ForeignKey("project.id"))
    )
    description: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    # The signing secret ("whsec_" + base64): needed to sign, so kept as it is.
    secret: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    created_by: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    # The first failure since the last success; disabled once that is old enough.
    failing_since: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    disabled_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    disabled_reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    deleted_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class WebhookEvent(SQLModel, table=True):
    """One event of the outbox: the body every endpoint gets, byte for byte on every attempt."""

    __tablename__ = "webhook_event"
    __table_args__ = (sa.Index("ix_webhook_event_created_at", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    # The `webhook-id` header: stable across retries, so receivers deduplicate by it.
    message_id: str = Field(sa_column=sa.Column(sa.String(40), nullable=False, unique=True))
    type: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    project_id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    body: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class WebhookDelivery(SQLModel, table=True):
    """An event on its way to one endpoint. While pending, `next_attempt_at` is when it is due;
    a sender that claims it moves that past its own attempt (a lease) and sets `claim`, so a
    sender that dies mid-attempt leaves it due again."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        sa.UniqueConstraint("webhook_id", "event_id"),
        sa.Index("ix_webhook_delivery_webhook", "webhook_id", "id"),
        sa.Index(
            "ix_webhook_delivery_due",
            "next_attempt_at",
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    webhook_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("webhook.id"), nullable=False)
    )
    event_id: int = Field(
        sa_column=sa.Column(
            sa.Integer,
            sa.ForeignKey("webhook_event.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        )
    )
    status: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    attempts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    claim: str | None = Field(default=None, sa_column=sa.Column(sa.String(40)))
    last_attempt_at: datetime | None = Field(
        default=None, sa_column=timestamp_column(nullable=True)
    )
    last_status_code: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.String(500)))
    last_response: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(RESPONSE_PREFIX_CHARS))
    )
    delivered_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


# --- API schemas ------------------------------------------------------------------------------


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: SafeStr = pydantic.Field(
        min_length=1,
        max_length=URL_MAX_LENGTH,
        description="http(s) URL the events are POSTed to. Loopback, link-local and private "
        "addresses are refused unless LABELWISE_WEBHOOKS_ALLOW_PRIVATE is true; redirects are "
        "not followed.",
        examples=["https://hooks.example.com/labelwise"],
    )
    events: list[EventType] = pydantic.Field(
        min_length=1, max_length=len(EventType), description="The event types to send."
    )
    project_id: DbId | None = pydantic.Field(
        default=None, description="Only this project's events; null: every project's."
    )
    description: SafeStr | None = pydantic.Field(default=None, max_length=1000)


class WebhookPublic(ResponseModel):
    id: int
    url: str
    events: list[EventType]
    project_id: int | None
    description: str | None
    status: WebhookStatus
    disabled_at: datetime | None
    disabled_reason: str | None = pydantic.Field(
        description="Why the endpoint was disabled; a delivery retry enables it again."
    )
    failing_since: datetime | None = pydantic.Field(
        description="The first failed attempt since the last success (null: not failing)."
    )
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, row: Webhook) -> "WebhookPublic":
        assert row.id is not None
        return cls(
            id=row.id,
            url=row.url,
            events=[EventType(e) for e in row.events],
            project_id=row.project_id,
            description=row.description,
            status="disabled" if row.disabled_at is not None else "active",
            disabled_at=row.disabled_at,
            disabled_reason=row.disabled_reason,
            failing_since=row.failing_since,
            created_by=row.created_by,
            created_at=row.created_at,
        )


class WebhookCreated(WebhookPublic):
    secret: str = pydantic.Field(
        description="The signing secret (whsec_ + base64, Standard Webhooks); shown only here.",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class WebhookDeliveryPublic(ResponseModel):
    id: int
    webhook_id: int
    message_id: str = pydantic.Field(
        description="The event's `webhook-id` header, the same on every attempt and endpoint."
    )
    event_type: EventType
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None = pydantic.Field(
        description="When a pending delivery is due (or its attempt in flight ends); null once "
        "it is finished."
    )
    last_attempt_at: datetime | None
    last_status_code: int | None = pydantic.Field(
        description="The HTTP status of the last attempt; null if none was received."
    )
    last_error: str | None = pydantic.Field(
        description="Why the last attempt failed (timeout, refused, status), if it did."
    )
    last_response: str | None = pydantic.Field(
        description=f"The first {RESPONSE_PREFIX_CHARS} characters of the last answer's body."
    )
    delivered_at: datetime | None
    created_at: datetime


# --- event payloads (the body a receiver gets) -------------------------------------------------


class JobEventData(ResponseModel):
    """job.succeeded, job.failed, job.cancelled."""

    job_id: int
    project_id: int | None
    kind: JobKind
    status: JobStatus
    result: JobResult | None = pydantic.Field(
        description="A succeeded job's typed result, by kind (as GET /v1/jobs/{id})."
    )
    error: Problem | None = pydantic.Field(description="A failed job's problem.")
    retry_of: int | None
    created_by: str
    created_at: datetime
    finished_at: datetime | None


class ModelActivatedData(ResponseModel):
    project_id: int
    version: int
    model_version: str = pydantic.Field(examples=["registry:3"])
    algorithm: str
    dataset_version: int | None
    accuracy: float | None
    macro_f1: float | None
    activated_at: datetime
    activated_by: str
    scoring_job_id: int | None = pydantic.Field(
        description="The pool scoring the activation queued."
    )


class DatasetVersionCreatedData(ResponseModel):
    project_id: int
    version: int
    name: str | None
    n_items: int
    label_distribution: dict[str, int]
    split_counts: dict[str, int]
    content_hash: str
    created_by: str | None
    created_at: datetime


class LabelIssuesReadyData(ResponseModel):
    project_id: int
    report_id: int
    job_id: int
    n_items: int
    n_issues: int
    counts: dict[str, int]


class ProjectPhaseChangedData(ResponseModel):
    project_id: int
    from_phase: Phase
    to_phase: Phase
    forced: bool
    reason: str | None
    krippendorff_alpha: float | None
    agreement_threshold: float
    changed_by: str
    changed_at: datetime


class LabeledItem(ResponseModel):
    id: int
    label: str
    resolved_by: str | None = pydantic.Field(
        description="review, consensus, model or user_behavior."
    )


class ItemsLabeledData(ResponseModel):
    """One event per request (or import chunk, or job step) that gave items a resolved label
    or changed it; never one per answer."""

    project_id: int
    count: int
    items: list[LabeledItem]


Data = TypeVar("Data", bound=BaseModel)


class EventPayload(ResponseModel, Generic[Data]):
    """The body of every delivery (Standard Webhooks: type, timestamp, data)."""

    type: EventType
    timestamp: datetime = pydantic.Field(description="When the change happened.")
    data: Data


class JobEventPayload(EventPayload[JobEventData]):
    """job.succeeded, job.failed, job.cancelled."""


class ModelActivatedPayload(EventPayload[ModelActivatedData]):
    """model.activated."""


class DatasetVersionCreatedPayload(EventPayload[DatasetVersionCreatedData]):
    """dataset_version.created."""


class LabelIssuesReadyPayload(EventPayload[LabelIssuesReadyData]):
    """label_issues.ready."""


class ProjectPhaseChangedPayload(EventPayload[ProjectPhaseChangedData]):
    """project.phase_changed."""


class ItemsLabeledPayload(EventPayload[ItemsLabeledData]):
    """items.labeled."""


# Each event type's body: the webhooks section of the spec, and docs/webhooks.md.
EVENT_PAYLOADS: dict[EventType, type[BaseModel]] = {
    EventType.job_succeeded: JobEventPayload,
    EventType.job_failed: JobEventPayload,
    EventType.job_cancelled: JobEventPayload,
    EventType.model_activated: ModelActivatedPayload,
    EventType.dataset_version_created: DatasetVersionCreatedPayload,
    EventType.label_issues_ready: LabelIssuesReadyPayload,
    EventType.project_phase_changed: ProjectPhaseChangedPayload,
    EventType.items_labeled: ItemsLabeledPayload,
}
