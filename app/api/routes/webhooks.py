"""Signed webhooks (admin only): endpoints, their deliveries, and retrying one."""

from fastapi import Response

from app.api.routing import ProblemRouter
from app.deps import AdminDep, IdPath, PageDep, SessionDep, SettingsDep
from app.errors import (
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
    WebhookTargetRefused,
    problem_responses,
)
from app.models.webhook import (
    DeliveryStatus,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryPublic,
    WebhookPublic,
)
from app.pagination import Page, make_page
from app.services import webhooks

router = ProblemRouter(
    prefix="/v1/webhooks",
    tags=["webhooks"],
    responses=problem_responses(Unauthorized, Forbidden, ValidationFailed),
)


@router.post("", status_code=201, responses=problem_responses(WebhookTargetRefused, NotFound))
def create_webhook(
    principal: AdminDep, session: SessionDep, settings: SettingsDep, body: WebhookCreate
) -> WebhookCreated:
    """Subscribe an endpoint to events; the signing secret is in this response only."""
    row = webhooks.create_webhook(session, data=body, principal=principal, settings=settings)
    return WebhookCreated(**WebhookPublic.of(row).model_dump(), secret=row.secret)


@router.get("")
def list_webhooks(principal: AdminDep, session: SessionDep, page: PageDep) -> Page[WebhookPublic]:
    """List the endpoints (never their secrets), disabled ones with the reason."""
    rows = webhooks.list_webhooks(session, page=page)
    return make_page(rows, page, WebhookPublic.of)


@router.get("/{webhook_id}", responses=problem_responses(NotFound))
def get_webhook(principal: AdminDep, session: SessionDep, webhook_id: IdPath) -> WebhookPublic:
    """An endpoint: its events, and whether it is disabled and why."""
    return WebhookPublic.of(webhooks.get_webhook(session, webhook_id=webhook_id))


@router.delete("/{webhook_id}", status_code=204, responses=problem_responses(NotFound))
def delete_webhook(principal: AdminDep, session: SessionDep, webhook_id: IdPath) -> Response:
    """Delete an endpoint; its deliveries still pending are cancelled."""
    webhooks.delete_webhook(session, webhook_id=webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", responses=problem_responses(NotFound))
def list_deliveries(
    principal: AdminDep,
    session: SessionDep,
    page: PageDep,
    webhook_id: IdPath,
    status: DeliveryStatus | None = None,
) -> Page[WebhookDeliveryPublic]:
    """An endpoint's deliveries, newest first: status, attempts, the last answer's code."""
    rows = webhooks.list_deliveries(session, webhook_id=webhook_id, status=status, page=page)
    return make_page(rows, page, lambda row: row)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    responses=problem_responses(NotFound, Conflict),
)
def retry_delivery(
    principal: AdminDep, session: SessionDep, webhook_id: IdPath, delivery_id: IdPath
) -> WebhookDeliveryPublic:
    """Send a delivery again now (same webhook-id); enables a disabled endpoint again."""
    return webhooks.retry_delivery(session, webhook_id=webhook_id, delivery_id=delivery_id)
