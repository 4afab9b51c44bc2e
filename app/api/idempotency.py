"""`Idempotency-Key` on POSTs: a retry of a request that was applied gets the first response
again instead of doing the work twice (docs/hardening.md, "Retrying safely").

`run_idempotently` wraps a POST's handler. Before it runs: a request this caller already
sent with the key is answered from its record (`Idempotent-Replayed: true`), or refused
when the key came with another request (422) or its response is not recorded (409). Then the
handler runs with a pending claim in this context; `_claim_before_commit` writes the claim in
the request's transaction just before its first write commits, so the claim exists exactly
when the request's writes do. After the handler, the response is recorded for replays.
"""

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session

from app.db import WRITE_OPTION, Database
from app.errors import ErrorDetail, IdempotencyKeyInUse, IdempotencyKeyReused, ValidationFailed
from app.models.base import utcnow
from app.models.idempotency import (
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    IdempotentRequest,
)
from app.services import idempotency
from app.services.api_keys import authenticate, hash_key
from app.services.idempotency import RequestKey

logger = logging.getLogger("labelwise.idempotency")

REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass
class PendingClaim:
    key: RequestKey
    request: Request
    committed: bool = False  # a committed transaction carried the claim


# session.info key: the claim written in the session's current transaction.
_CLAIMING = "labelwise_idempotency_claim"


_PENDING: ContextVar[PendingClaim | None] = ContextVar("labelwise_idempotency", default=None)


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key (a bare token or a quoted string), validated."""
    raw = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH or not all(
        "\x21" <= char <= "\x7e" for char in key
    ):
        loc: list[str | int] = ["header", IDEMPOTENCY_KEY_HEADER]
        message = f"1 to {IDEMPOTENCY_KEY_MAX_LENGTH} visible ASCII characters, e.g. a UUID"
        raise ValidationFailed(
            f"{IDEMPOTENCY_KEY_HEADER}: {message}.", errors=[ErrorDetail(loc=loc, msg=message)]
        )
    return key


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _fingerprint(request: Request, body: bytes | None) -> str:
    return idempotency.fingerprint(request.method, request.url.path, request.url.query, body)


async def run_idempotently(
    request: Request, key: str, handle: Callable[[], Awaitable[Response]]
) -> Response:
    token = _bearer(request)
    if token is None:
        return await handle()  # no caller: the handler answers 401
    request_key = RequestKey(key_hash=hash_key(token), idempotency_key=key)
    database: Database = request.app.state.database
    earlier = await run_in_threadpool(_find, database, token, request_key)
    if earlier is not None:
        return await _replay(request, earlier)
    pending = PendingClaim(key=request_key, request=request)
    context = _PENDING.set(pending)
    try:
        response = await handle()
    finally:
        _PENDING.reset(context)
    if pending.committed and hasattr(response, "body"):
        await run_in_threadpool(_record, database, request_key, response)
    return response


def _find(database: Database, token: str, key: RequestKey) -> IdempotentRequest | None:
    with database.session() as session:
        earlier = idempotency.find(session, key, now=utcnow())
        if earlier is not None:
            authenticate(session, presented=token)  # a revoked key gets no replay
        return earlier


async def _replay(request: Request, earlier: IdempotentRequest) -> Response:
    stored_with_body = earlier.fingerprint.startswith("b:")
    body = await request.body() if stored_with_body else None
    if _fingerprint(request, body) != earlier.fingerprint:
        raise IdempotencyKeyReused(
            f"This {IDEMPOTENCY_KEY_HEADER} was sent with a different request "
            f"({earlier.created_at.isoformat()}); use a new key for a new request."
        )
    if earlier.response_status is None:
        raise IdempotencyKeyInUse(
            f"A request with this {IDEMPOTENCY_KEY_HEADER} was applied (its changes are "
            "stored) but its response is not recorded yet: it is still running, or its process "
            "stopped before answering. Retry shortly; if this persists, read the resource's "
            "state instead. Nothing was done twice."
        )
    headers = {REPLAYED_HEADER: "true"}
    if earlier.response_location:
        headers["Location"] = earlier.response_location
    return Response(
        content=earlier.response_body or b"",
        status_code=earlier.response_status,
        media_type=earlier.response_media_type,
        headers=headers,
    )


def _record(database: Database, key: RequestKey, response: Response) -> None:
    try:
        with database.session(write=True) as session:
            idempotency.record_response(
                session,
                key,
                status=response.status_code,
                media_type=response.media_type,
                location=response.headers.get("location"),
                body=bytes(response.body),
            )
    except SQLAlchemyError:
        # The request's changes are stored; a replay answers 409 idempotency-key-in-use.
        logger.warning("the response of an idempotent request was not recorded", exc_info=True)


@event.listens_for(OrmSession, "before_commit")
def _claim_before_commit(session: OrmSession) -> None:
    """Write the pending claim in the transaction about to commit: the request's first write
    transaction (a SQLite write request's dependencies commit a read of their own first).
    Another request that claimed the key meanwhile makes this one fail, rolled back: an
    AppError, which no service mistakes for its own IntegrityError."""
    pending = _PENDING.get()
    if pending is None or pending.committed or not isinstance(session, Session):
        return
    if not session.in_transaction() or _CLAIMING in session.info:
        return
    if not session.connection().get_execution_options().get(WRITE_OPTION, False):
        return
    body = pending.request.__dict__.get("_body")
    claimed = idempotency.claim(
        session, pending.key, fingerprint=_fingerprint(pending.request, body), now=utcnow()
    )
    if not claimed:
        raise IdempotencyKeyInUse(
            f"Another request with this {IDEMPOTENCY_KEY_HEADER} was applied while this one "
            "ran, so this one was rolled back. Retry shortly to get its response."
        )
    session.info[_CLAIMING] = pending


@event.listens_for(OrmSession, "after_commit")
def _claim_committed(session: OrmSession) -> None:
    pending = session.info.pop(_CLAIMING, None)
    if isinstance(pending, PendingClaim):
        pending.committed = True


@event.listens_for(OrmSession, "after_rollback")
def _claim_rolled_back(session: OrmSession) -> None:
    session.info.pop(_CLAIMING, None)
