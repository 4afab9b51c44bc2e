"""API keys: hashed secrets with a role; the key's name is the annotator identity."""

from datetime import datetime

import pydantic
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel

from app.models.base import ResponseModel, Role, SafeStr, timestamp_column, utcnow

# ":" lets import annotators be named after their source, e.g. "import:crm-2024".
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,99}$"


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"
    __table_args__ = (
        # A name is unique among live keys; revoking a key frees its name for rotation.
        sa.Index(
            "uq_api_key_live_name",
            "name",
            unique=True,
            sqlite_where=sa.text("revoked_at IS NULL"),
            postgresql_where=sa.text("revoked_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    role: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    tier: str | None = Field(default=None, sa_column=sa.Column(sa.String(50), nullable=True))
    key_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    key_prefix: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    revoked_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = pydantic.Field(
        pattern=NAME_PATTERN,
        description="Unique among live keys; for annotators it is the annotator identity.",
        examples=["alice"],
    )
    role: Role
    tier: SafeStr | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=50,
        description="Workforce tier for cost reports, e.g. in_house, crowd, offshore.",
    )


class ApiKeyPublic(ResponseModel):
    id: int
    name: str
    role: Role
    tier: str | None
    key_prefix: str = pydantic.Field(
        description="The first characters of the key, to tell keys apart."
    )
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = pydantic.Field(description="The secret; shown once, stored only as a hash.")


class Me(ResponseModel):
    """The calling key, as a front-end needs it to greet its user and show what they may do."""

    name: str = pydantic.Field(
        description="The key's name: for an annotator key, the name its annotations are kept "
        "under.",
        examples=["alice"],
    )
    role: Role = pydantic.Field(
        description="admin: everything; service: projects, data in and out, training and "
        "jobs, no key management; annotator: read projects and items, fetch batches and "
        "answer in its own name."
    )
    tier: str | None = pydantic.Field(
        description="Workforce tier for cost reports (e.g. in_house, crowd); null if unset."
    )
    key_id: int = pydantic.Field(description="The key's id in GET /v1/api-keys.")
    created_at: datetime
