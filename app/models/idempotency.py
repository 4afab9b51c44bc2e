"""A POST sent with an `Idempotency-Key`: stored in the same transaction as the request's own
writes, so it exists exactly when they do; its response is kept for replays (docs/hardening.md,
"Retrying safely")."""

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.models.base import timestamp_column, utcnow

IDEMPOTENCY_KEY_MAX_LENGTH = 255
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"


class IdempotentRequest(SQLModel, table=True):
    __tablename__ = "idempotent_request"
    __table_args__ = (
        sa.UniqueConstraint("key_hash", "idempotency_key", name="uq_idempotent_request_key"),
        sa.Index("ix_idempotent_request_created_at", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # The caller: the digest of its API key (api_key.key_hash), so keys are per caller.
    key_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    idempotency_key: str = Field(
        sa_column=sa.Column(sa.String(IDEMPOTENCY_KEY_MAX_LENGTH), nullable=False)
    )
    # sha256 of the method, path, query and body: a replay must be the same request.
    fingerprint: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    # The response, recorded once the request's transaction committed; NULL until then (or
    # for good if the process stopped in between).
    response_status: int | None = Field(default=None)
    response_media_type: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(100), nullable=True)
    )
    response_location: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(2000), nullable=True)
    )
    response_body: bytes | None = Field(
        default=None, sa_column=sa.Column(sa.LargeBinary, nullable=True)
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
