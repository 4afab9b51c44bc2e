"""POSTs sent with an `Idempotency-Key`: found, claimed and answered again (docs/hardening.md,
"Retrying safely").

The claim (the `idempotent_request` row) is written in the request's own transaction, just
before its first write commits: it exists exactly when the request's writes do. A retry with
the same key then finds it and gets the recorded response instead of doing the work twice,
while a request whose transaction failed left no claim and runs again.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from app.models.idempotency import IdempotentRequest

# How long a key is remembered; a later request with it is a new request.
RETENTION = timedelta(hours=24)


@dataclass(frozen=True)
class RequestKey:
    key_hash: str  # the caller's API key digest
    idempotency_key: str


def fingerprint(method: str, path: str, query: str, body: bytes | None) -> str:
    """What makes two requests the same: method, path, query and, when the route read it
    whole, the body (`b:` prefix; `n:` for a streamed body, compared without it)."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode()):
        digest.update(len(part).to_bytes(8, "big") + part)
    if body is None:
        return "n:" + digest.hexdigest()[:62]
    digest.update(body)
    return "b:" + digest.hexdigest()[:62]


def find(session: Session, key: RequestKey, *, now: datetime) -> IdempotentRequest | None:
    """The request sent earlier with this key by this caller, unless it has expired."""
    row = session.exec(
        select(IdempotentRequest).where(
            col(IdempotentRequest.key_hash) == key.key_hash,
            col(IdempotentRequest.idempotency_key) == key.idempotency_key,
        )
    ).first()
    if row is None or now - row.created_at > RETENTION:
        return None
    return row


def claim(session: Session, key: RequestKey, *, fingerprint: str, now: datetime) -> bool:
    """Write the claim in the session's transaction (forgetting expired ones first); False if
    another request with the same key claimed it first (on PostgreSQL this waits for that
    request's transaction to end; on SQLite the write lock already serialized them)."""
    session.execute(
        delete(IdempotentRequest).where(col(IdempotentRequest.created_at) < now - RETENTION)
    )
    table = IdempotentRequest.__table__  # type: ignore[attr-defined]
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(table)
        .values(
            key_hash=key.key_hash,
            idempotency_key=key.idempotency_key,
            fingerprint=fingerprint,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["key_hash", "idempotency_key"])
        .returning(table.c.id)
    )
    return session.execute(statement).first() is not None


def record_response(
    session: Session,
    key: RequestKey,
    *,
    status: int,
    media_type: str | None,
    location: str | None,
    body: bytes,
) -> None:
    """Keep the response of a claimed request, for its replays."""
    session.execute(
        update(IdempotentRequest)
        .where(
            col(IdempotentRequest.key_hash) == key.key_hash,
            col(IdempotentRequest.idempotency_key) == key.idempotency_key,
        )
        .values(
            response_status=status,
            response_media_type=media_type,
            response_location=location,
            response_body=body,
        )
    )
    session.commit()
