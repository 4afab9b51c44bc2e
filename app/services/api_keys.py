"""Create, list, revoke and authenticate API keys. Keys are stored as SHA-256 hashes."""

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from app.errors import Conflict, NotFound, Unauthorized
from app.models.api_key import ApiKey, ApiKeyCreate
from app.models.base import Role, utcnow
from app.pagination import PageRequest, keyset

logger = logging.getLogger(__name__)

KEY_PREFIX = "lw_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the authenticated key, without its secret."""

    key_id: int
    name: str
    role: Role
    tier: str | None


def hash_key(key: str) -> str:
    # Keys are 256-bit random secrets, so a fast hash is enough; no salt or KDF needed.
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_api_key(
    session: Session, *, data: ApiKeyCreate, key: str | None = None
) -> tuple[ApiKey, str]:
    """Store a new key; returns the row and the secret, which is never stored."""
    secret = key or generate_key()
    row = ApiKey(
        name=data.name,
        role=data.role,
        tier=data.tier,
        key_hash=hash_key(secret),
        key_prefix=secret[:10],
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(
            f"A live API key named {data.name!r} already exists; revoke it first."
        ) from None
    return row, secret


def list_api_keys(session: Session, *, page: PageRequest) -> list[ApiKey]:
    return list(session.exec(keyset(select(ApiKey), col(ApiKey.id), page)))


def describe_caller(session: Session, *, principal: Principal) -> ApiKey:
    """The calling key's row. A key revoked by another process since this one authenticated
    it (within LABELWISE_AUTH_CACHE_SECONDS) is refused here already."""
    row = session.get(ApiKey, principal.key_id)
    if row is None or row.revoked_at is not None:
        raise Unauthorized("The API key is unknown or revoked.")
    return row


def revoke_api_key(session: Session, *, key_id: int, by: Principal) -> None:
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        raise NotFound(f"No live API key with id {key_id}.")
    if row.id == by.key_id:
        raise Conflict("A key cannot revoke itself; use another admin key.")
    row.revoked_at = utcnow()
    session.add(row)
    session.commit()


class PrincipalCache:
    """Keys this process authenticated in the last `ttl` seconds, by the hash of the secret.

    Every request authenticates; the cache spares a database read and a thread hop for all
    but one request per key and `ttl` (LABELWISE_AUTH_CACHE_SECONDS, 5 s). Only successes are
    kept, so a new key works at once; revoking forgets the key here at once, and other
    processes stop trusting it within `ttl`.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    def put(self, digest: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + self.ttl, principal)

    def forget(self, key_id: int) -> None:
        for digest, (_, principal) in list(self._entries.items()):
            if principal.key_id == key_id:
                self._entries.pop(digest, None)


def authenticate(session: Session, *, presented: str) -> Principal:
    """The key's principal. Every request asks, so it reads the columns, not an ApiKey."""
    digest = hash_key(presented)
    row = session.execute(
        sa_select(
            col(ApiKey.id),
            col(ApiKey.name),
            col(ApiKey.role),
            col(ApiKey.tier),
            col(ApiKey.key_hash),
            col(ApiKey.revoked_at),
        ).where(col(ApiKey.key_hash) == digest)
    ).first()
    # The lookup is by hash, so timing reveals nothing about the secret; compare anyway.
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
        raise Unauthorized("The API key is unknown or revoked.")
    return Principal(key_id=row.id, name=row.name, role=Role(row.role), tier=row.tier)


def ensure_bootstrap_admin(session: Session, *, configured_key: str | None) -> str | None:
    """On an empty key table, create the first admin key. Returns a generated secret to print."""
    if session.exec(select(func.count()).select_from(ApiKey)).one() > 0:
        return None
    try:
        _, secret = create_api_key(
            session, data=ApiKeyCreate(name="admin", role=Role.admin), key=configured_key
        )
    except Conflict:
        return None  # another replica bootstrapped first
    return None if configured_key else secret
