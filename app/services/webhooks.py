"""Webhook endpoints as a resource: create (the secret shown once), list, read, delete; their
deliveries, and retrying one. Sending is `webhook_delivery`'s; emitting is `events`'."""

import base64
import secrets

from sqlalchemy import update
from sqlmodel import Session, col, select

from app.errors import Conflict, NotFound
from app.models.base import utcnow
from app.models.webhook import (
    DeliveryStatus,
    Webhook,
    WebhookCreate,
    WebhookDelivery,
    WebhookDeliveryPublic,
    WebhookEvent,
)
from app.pagination import PageRequest, keyset
from app.services import project_loading
from app.services.api_keys import Principal
from app.settings import Settings
from app.sources.webhook_http import check_target

SECRET_BYTES = 32  # Standard Webhooks: 24 to 64 random bytes


def new_secret() -> str:
    """`whsec_` + base64 of random bytes, as the Standard Webhooks spec and libraries expect."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def create_webhook(
    session: Session, *, data: WebhookCreate, principal: Principal, settings: Settings
) -> Webhook:
    """Check the target (422 webhook-target-refused) and the project (404), then store it."""
    check_target(data.url, allow_private=settings.webhooks_allow_private)
    if data.project_id is not None:
        project_loading.load_project(session, project_id=data.project_id)
    webhook = Webhook(
        url=data.url.strip(),
        events=sorted({event.value for event in data.events}),
        project_id=data.project_id,
        description=data.description,
        secret=new_secret(),
        created_by=principal.name,
    )
    session.add(webhook)
    session.commit()
    return webhook


def list_webhooks(session: Session, *, page: PageRequest) -> list[Webhook]:
    query = select(Webhook).where(col(Webhook.deleted_at).is_(None))
    return list(session.exec(keyset(query, col(Webhook.id), page)))


def get_webhook(session: Session, *, webhook_id: int) -> Webhook:
    webhook = session.get(Webhook, webhook_id)
    if webhook is None or webhook.deleted_at is not None:
        raise NotFound(f"No webhook with id {webhook_id}.")
    return webhook


def delete_webhook(session: Session, *, webhook_id: int) -> None:
    """Stop sending to the endpoint: its pending deliveries are cancelled. The row stays (as
    deleted) so that an event emitted concurrently still finds what its delivery refers to."""
    webhook = get_webhook(session, webhook_id=webhook_id)
    now = utcnow()
    webhook.deleted_at = now
    session.add(webhook)
    session.exec(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.webhook_id) == webhook_id,
            col(WebhookDelivery.status) == DeliveryStatus.pending,
        )
        .values(status=DeliveryStatus.cancelled, claim=None)
    )
    session.commit()


def list_deliveries(
    session: Session, *, webhook_id: int, status: DeliveryStatus | None, page: PageRequest
) -> list[WebhookDeliveryPublic]:
    """The endpoint's deliveries, newest first, with their events' ids and types."""
    get_webhook(session, webhook_id=webhook_id)
    query = (
        select(WebhookDelivery, WebhookEvent)
        .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
        .where(col(WebhookDelivery.webhook_id) == webhook_id)
    )
    if status is not None:
        query = query.where(col(WebhookDelivery.status) == status)
    if page.after_id is not None:
        query = query.where(col(WebhookDelivery.id) < page.after_id)
    query = query.order_by(col(WebhookDelivery.id).desc()).limit(page.limit + 1)
    return [delivery_public(delivery, event) for delivery, event in session.exec(query)]


def retry_delivery(session: Session, *, webhook_id: int, delivery_id: int) -> WebhookDeliveryPublic:
    """Send a delivery again now, whatever its state (a succeeded one is sent again, with the
    same `webhook-id`), unless an attempt is in flight (409). A disabled endpoint is enabled
    again: retrying says its receiver is back."""
    webhook = get_webhook(session, webhook_id=webhook_id)
    delivery = session.exec(
        select(WebhookDelivery)
        .where(
            col(WebhookDelivery.id) == delivery_id,
            col(WebhookDelivery.webhook_id) == webhook_id,
        )
        .with_for_update()
    ).first()
    if delivery is None:
        raise NotFound(f"Webhook {webhook_id} has no delivery {delivery_id}.")
    now = utcnow()
    if delivery.claim is not None and delivery.next_attempt_at > now:
        raise Conflict(
            f"Delivery {delivery_id} is being sent right now; see its outcome in a moment at "
            f"GET /v1/webhooks/{webhook_id}/deliveries, and retry it then if it failed."
        )
    delivery.status = DeliveryStatus.pending
    delivery.next_attempt_at = now
    delivery.claim = None
    session.add(delivery)
    if webhook.disabled_at is not None:
        webhook.disabled_at = webhook.disabled_reason = webhook.failing_since = None
        session.add(webhook)
    session.commit()
    event = session.get(WebhookEvent, delivery.event_id)
    assert event is not None
    return delivery_public(delivery, event)


def delivery_public(delivery: WebhookDelivery, event: WebhookEvent) -> WebhookDeliveryPublic:
    assert delivery.id is not None
    return WebhookDeliveryPublic(
        id=delivery.id,
        webhook_id=delivery.webhook_id,
        message_id=event.message_id,
        event_type=event.type,
        status=DeliveryStatus(delivery.status),
        attempts=delivery.attempts,
        next_attempt_at=(
            delivery.next_attempt_at if delivery.status == DeliveryStatus.pending else None
        ),
        last_attempt_at=delivery.last_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        last_response=delivery.last_response,
        delivered_at=delivery.delivered_at,
        created_at=delivery.created_at,
    )
