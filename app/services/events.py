"""Emit an event: write it to the webhook outbox, one delivery per endpoint subscribed to it,
inside the caller's transaction (docs/webhooks.md).

The change and its event commit together or not at all, so a crash loses no event and no
event reports a change that was rolled back. Delivery is someone else's business
(`services/webhook_delivery`, a loop off the request path). With no endpoint subscribed,
emitting costs one read of the small `webhook` table and writes nothing; the annotation
writer asks only when a request gave items a label.
"""

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import uuid4

from pydantic import BaseModel, TypeAdapter
from sqlalchemy import insert
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from app.errors import Problem
from app.models.base import utcnow
from app.models.job import Job, JobKind, JobStatus
from app.models.job_kinds import RESULT_MODELS
from app.models.webhook import (
    DeliveryStatus,
    EventType,
    ItemsLabeledData,
    JobEventData,
    LabeledItem,
    Webhook,
    WebhookDelivery,
    WebhookEvent,
)

EVENT_TABLE = WebhookEvent.__table__  # type: ignore[attr-defined]
DELIVERY_TABLE = WebhookDelivery.__table__  # type: ignore[attr-defined]
# Built once: every emit runs it (docs/design.md, "Hot paths").
LIVE_SUBSCRIPTIONS = sa_select(col(Webhook.id), col(Webhook.events), col(Webhook.project_id)).where(
    col(Webhook.deleted_at).is_(None), col(Webhook.disabled_at).is_(None)
)
INSERT_EVENT = insert(EVENT_TABLE).returning(EVENT_TABLE.c.id)
INSERT_DELIVERY = insert(DELIVERY_TABLE)
_TIMESTAMP = TypeAdapter(datetime)
JOB_EVENTS = {
    JobStatus.succeeded: EventType.job_succeeded,
    JobStatus.failed: EventType.job_failed,
    JobStatus.cancelled: EventType.job_cancelled,
}


def new_message_id() -> str:
    """A `webhook-id`: unique per event, the same on every attempt and endpoint."""
    return f"msg_{uuid4().hex}"


def subscribers(session: Session, event_type: EventType, project_id: int | None) -> list[int]:
    """The live endpoints (not disabled, not deleted) that want this event of this project."""
    return [
        webhook_id
        for webhook_id, events, scope in session.execute(LIVE_SUBSCRIPTIONS)
        if event_type in events and (scope is None or scope == project_id)
    ]


def emit(
    session: Session,
    event_type: EventType,
    *,
    project_id: int | None,
    data: BaseModel | Callable[[], BaseModel],
    at: datetime | None = None,
) -> int:
    """Add the event to the outbox with a delivery per subscribed endpoint (flushes only; the
    caller's commit sends it on its way). `data` may be a function that builds it, called only
    when an endpoint is subscribed. Returns the number of deliveries queued."""
    targets = subscribers(session, event_type, project_id)
    if not targets:
        return 0
    if not isinstance(data, BaseModel):
        data = data()
    now = at or utcnow()
    body = {
        "type": event_type.value,
        "timestamp": _TIMESTAMP.dump_python(now, mode="json"),
        "data": data.model_dump(mode="json"),
    }
    event_id = session.execute(
        INSERT_EVENT,
        {
            "message_id": new_message_id(),
            "type": event_type.value,
            "project_id": project_id,
            "body": _json(body),
            "created_at": now,
        },
    ).scalar_one()
    session.execute(
        INSERT_DELIVERY,
        [
            {
                "webhook_id": webhook_id,
                "event_id": event_id,
                "status": DeliveryStatus.pending.value,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for webhook_id in targets
        ],
    )
    return len(targets)


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def emit_job_finished(session: Session, job: Job) -> None:
    """job.succeeded, job.failed or job.cancelled for a job that has just ended (in the
    transaction that records its end)."""
    status = JobStatus(job.status)
    event_type = JOB_EVENTS.get(status)
    if event_type is None or job.id is None:
        return
    result = job.result
    data = JobEventData(
        job_id=job.id,
        project_id=job.project_id,
        kind=JobKind(job.kind),
        status=status,
        result=None if result is None else RESULT_MODELS[job.kind].model_validate(result),
        error=Problem.model_validate(job.error) if job.error else None,
        retry_of=job.retry_of,
        created_by=job.created_by,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )
    emit(session, event_type, project_id=job.project_id, data=data, at=job.finished_at)


def emit_items_labeled(
    session: Session, *, project_id: int | None, items: Sequence[tuple[int, str, str | None]]
) -> None:
    """items.labeled: one event for every item a request (or a job step) gave a resolved
    label or a new one, as (id, label, resolved_by); nothing when there is none."""
    if not items or project_id is None:
        return

    def data() -> ItemsLabeledData:
        labeled = [LabeledItem(id=i, label=label, resolved_by=by) for i, label, by in items]
        return ItemsLabeledData(project_id=project_id, count=len(labeled), items=labeled)

    emit(session, EventType.items_labeled, project_id=project_id, data=data)
