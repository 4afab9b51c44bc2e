"""Deliver the webhook outbox, off the request path: a sender loop in every API process claims
due deliveries, POSTs each one signed (`sources/webhook_http`) on a thread of its own, and
records the outcome: delivered, due again after an exponential backoff, or failed for good;
an endpoint that has failed for `LABELWISE_WEBHOOKS_DISABLE_AFTER_DAYS` is disabled.

Claiming is one short transaction: on PostgreSQL `FOR UPDATE SKIP LOCKED`, so senders of
several processes never take the same delivery; on SQLite the write transaction (BEGIN
IMMEDIATE) serialises them. A claim moves the delivery's `next_attempt_at` past the attempt
(a lease) and tags it, so nobody else sends it meanwhile, and a sender that dies mid-attempt
leaves it due again once the lease ends: at least once, with the same `webhook-id`.
"""

import logging
import random
import threading
from collections import Counter
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
from sqlalchemy import delete, exists, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from app.db import Database
from app.db_faults import classify
from app.models.base import utcnow
from app.models.webhook import (
    RESPONSE_PREFIX_CHARS,
    DeliveryStatus,
    Webhook,
    WebhookDelivery,
    WebhookEvent,
)
from app.settings import Settings
from app.sources.webhook_http import Outcome, new_client, post

logger = logging.getLogger("labelwise.webhooks")

PRUNE_EVERY_SECONDS = 3600.0


@dataclass(frozen=True)
class Claimed:
    """A delivery this sender holds: what it needs to send it, and its claim tag."""

    delivery_id: int
    claim: str
    attempts: int  # made before this one
    webhook_id: int
    url: str
    secret: str
    message_id: str
    body: str


def lease_seconds(settings: Settings) -> float:
    """How long a claim keeps a delivery from other senders: longer than any attempt can
    take (connect, send, read the answer's first bytes, each within the timeout)."""
    return 4 * settings.webhooks_timeout_seconds + 10


def backoff_seconds(attempts: int, settings: Settings, rng: random.Random) -> float:
    """The wait after the `attempts`-th failed attempt: base * 2^(attempts-1), capped, plus up
    to 10% jitter so that endpoints recovering together are not hit in lockstep."""
    base = settings.webhooks_retry_base_seconds * 2.0 ** min(attempts - 1, 40)
    return min(base, settings.webhooks_retry_max_seconds) * (1 + 0.1 * rng.random())


def _due(now: datetime) -> list[object]:
    return [
        col(WebhookDelivery.status) == DeliveryStatus.pending,
        col(WebhookDelivery.next_attempt_at) <= now,
        col(Webhook.disabled_at).is_(None),
        col(Webhook.deleted_at).is_(None),
    ]


def claim_due(
    database: Database,
    settings: Settings,
    *,
    limit: int,
    busy: Collection[int] = (),
    per_webhook: int | None = None,
) -> list[Claimed]:
    """Take up to `limit` due deliveries of live endpoints, oldest due first: none of the
    endpoints in `busy`, at most `per_webhook` of any one endpoint. A read first, so that an
    idle sender never takes SQLite's write lock."""
    now = utcnow()
    joined = sa_select(col(WebhookDelivery.id), col(WebhookDelivery.webhook_id)).join(
        Webhook, col(Webhook.id) == col(WebhookDelivery.webhook_id)
    )
    due = _due(now)
    if busy:
        due.append(col(WebhookDelivery.webhook_id).not_in(sorted(busy)))
    with database.session() as session:
        if session.execute(joined.where(*due).limit(1)).first() is None:  # type: ignore[arg-type]
            return []
    # Candidates beyond `limit`, so that an endpoint with many due deliveries does not hide
    # the others; the ones not chosen are unlocked again at the commit.
    candidates = limit if per_webhook is None else limit * 8
    with database.session(write=True) as session:
        rows = session.execute(
            joined.where(*due)  # type: ignore[arg-type]
            .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id))
            .limit(candidates)
            .with_for_update(skip_locked=True, of=WebhookDelivery)
        ).all()
        ids = _chosen(rows, limit=limit, per_webhook=per_webhook)
        if not ids:
            return []
        tag = uuid4().hex
        session.execute(
            update(WebhookDelivery)
            .where(col(WebhookDelivery.id).in_(ids))
            .values(claim=tag, next_attempt_at=now + timedelta(seconds=lease_seconds(settings)))
        )
        rows = session.execute(
            sa_select(
                col(WebhookDelivery.id),
                col(WebhookDelivery.attempts),
                col(Webhook.id),
                col(Webhook.url),
                col(Webhook.secret),
                col(WebhookEvent.message_id),
                col(WebhookEvent.body),
            )
            .join(Webhook, col(Webhook.id) == col(WebhookDelivery.webhook_id))
            .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
            .where(col(WebhookDelivery.id).in_(ids))
            .order_by(col(WebhookDelivery.id))
        ).all()
        session.commit()
    return [
        Claimed(delivery_id, tag, attempts, webhook_id, url, secret, message_id, body)
        for delivery_id, attempts, webhook_id, url, secret, message_id, body in rows
    ]


def _chosen(rows: Sequence[Any], *, limit: int, per_webhook: int | None) -> list[int]:
    """The first `limit` (delivery id, webhook id) rows, at most `per_webhook` per endpoint."""
    taken: Counter[int] = Counter()
    chosen: list[int] = []
    for delivery_id, webhook_id in rows:
        if per_webhook is not None and taken[webhook_id] >= per_webhook:
            continue
        taken[webhook_id] += 1
        chosen.append(delivery_id)
        if len(chosen) == limit:
            break
    return chosen


def record(
    database: Database,
    settings: Settings,
    claimed: Claimed,
    outcome: Outcome,
    *,
    rng: random.Random,
) -> None:
    """Store one attempt's outcome, unless the claim was lost meanwhile (the lease ran out
    and another sender took the delivery, or it was retried or cancelled)."""
    now = utcnow()
    attempts = claimed.attempts + 1
    values: dict[str, object] = {
        "attempts": attempts,
        "claim": None,
        "last_attempt_at": now,
        "last_status_code": outcome.status_code,
        "last_error": outcome.error,
        "last_response": outcome.response_prefix,
    }
    if outcome.ok:
        values |= {"status": DeliveryStatus.succeeded, "delivered_at": now}
    elif attempts >= settings.webhooks_max_attempts:
        values |= {"status": DeliveryStatus.failed}
    else:
        delay = timedelta(seconds=backoff_seconds(attempts, settings, rng))
        values |= {"next_attempt_at": now + delay}
    with database.session(write=True) as session:
        stored = session.exec(
            update(WebhookDelivery)
            .where(
                col(WebhookDelivery.id) == claimed.delivery_id,
                col(WebhookDelivery.claim) == claimed.claim,
            )
            .values(**values)
        ).rowcount
        if stored:
            _endpoint_health(session, settings, claimed.webhook_id, outcome, now)
        session.commit()


def _endpoint_health(
    session: Session, settings: Settings, webhook_id: int, outcome: Outcome, now: datetime
) -> None:
    """A success clears the endpoint's failure streak; a failure starts one, or disables the
    endpoint once the streak is older than the setting."""
    if outcome.ok:
        session.execute(
            update(Webhook)
            .where(col(Webhook.id) == webhook_id, col(Webhook.failing_since).is_not(None))
            .values(failing_since=None)
        )
        return
    webhook = session.get(Webhook, webhook_id, with_for_update=True)
    if webhook is None or webhook.disabled_at is not None:
        return
    if webhook.failing_since is None:
        webhook.failing_since = now
    elif now - webhook.failing_since >= timedelta(days=settings.webhooks_disable_after_days):
        webhook.disabled_at = now
        webhook.disabled_reason = (
            f"Every attempt since {webhook.failing_since.isoformat(timespec='seconds')} failed "
            f"(LABELWISE_WEBHOOKS_DISABLE_AFTER_DAYS={settings.webhooks_disable_after_days:g}); "
            f"the last: {outcome.error}. Retry a delivery to enable the endpoint again."
        )
        logger.warning("webhook %s disabled: %s", webhook_id, webhook.disabled_reason)
    session.add(webhook)


def prune(database: Database, settings: Settings) -> int:
    """Delete events older than the retention whose deliveries are all finished (their
    deliveries go with them); returns how many."""
    cutoff = utcnow() - timedelta(days=settings.webhooks_retention_days)
    pending = exists().where(
        col(WebhookDelivery.event_id) == col(WebhookEvent.id),
        col(WebhookDelivery.status) == DeliveryStatus.pending,
    )
    with database.session(write=True) as session:
        deleted = session.exec(
            delete(WebhookEvent).where(col(WebhookEvent.created_at) < cutoff, ~pending)
        ).rowcount
        session.commit()
    return int(deleted or 0)


class WebhookSender:
    """The loop one process runs: every `LABELWISE_WEBHOOKS_POLL_SECONDS` (and whenever an
    attempt ends) it claims as many due deliveries as it has free sending threads
    (`LABELWISE_WEBHOOKS_CONCURRENCY`), one per endpoint at a time, so a slow receiver holds
    one thread of one process, never a request nor the other endpoints' deliveries."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: Counter[int] = Counter()  # attempts in flight, by endpoint
        self._local = threading.local()
        self._rng = random.Random()
        self._pool = ThreadPoolExecutor(
            max_workers=settings.webhooks_concurrency, thread_name_prefix="webhook-send"
        )
        self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Take no new delivery; attempts in flight end within their timeout (one cut short
        is sent again after its lease)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        next_prune = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            self._claim_and_send()
            next_prune = self._maybe_prune(next_prune)
            self._wake.wait(self.settings.webhooks_poll_seconds)

    def _claim_and_send(self) -> None:
        with self._lock:
            free = self.settings.webhooks_concurrency - self._in_flight.total()
            busy = {webhook_id for webhook_id, n in self._in_flight.items() if n > 0}
        if free <= 0:
            return
        try:
            # One attempt per endpoint at a time: a slow endpoint holds one thread, and the
            # others' deliveries still go out.
            claimed = claim_due(self.database, self.settings, limit=free, busy=busy, per_webhook=1)
        except Exception:  # the database may be briefly unreachable, or not migrated
            if not self._failing:
                logger.warning("webhook sender: claiming failed", exc_info=True)
            self._failing = True
            return
        self._failing = False
        for delivery in claimed:
            with self._lock:
                self._in_flight[delivery.webhook_id] += 1
            self._pool.submit(self._send, delivery)

    def _maybe_prune(self, next_prune: float) -> float:
        now = utcnow().timestamp()
        if now < next_prune:
            return next_prune
        try:
            prune(self.database, self.settings)
        except Exception:
            logger.warning("webhook sender: pruning old events failed", exc_info=True)
        return now + PRUNE_EVERY_SECONDS

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = new_client(self.settings.webhooks_timeout_seconds)
            self._local.client = client
        return client

    def _send(self, claimed: Claimed) -> None:
        try:
            outcome = post(
                self._client(),
                url=claimed.url,
                secret=claimed.secret,
                message_id=claimed.message_id,
                body=claimed.body,
                allow_private=self.settings.webhooks_allow_private,
                prefix_chars=RESPONSE_PREFIX_CHARS,
            )
            record(self.database, self.settings, claimed, outcome, rng=self._rng)
        except Exception as error:  # never lose the thread; the lease makes it due again
            if (fault := classify(error)) is not None:
                logger.warning(
                    "webhook delivery %s: its attempt is not recorded (database fault %s); "
                    "it will be sent again",
                    claimed.delivery_id,
                    fault.value,
                )
            else:
                logger.exception(
                    "webhook delivery %s: recording its attempt failed", claimed.delivery_id
                )
        finally:
            with self._lock:
                self._in_flight[claimed.webhook_id] -= 1
            self._wake.set()
