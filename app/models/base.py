"""Shared table machinery: constraint naming convention, UTC timestamps, enums."""

import math
import unicodedata
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import pydantic
import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel
from typing_extensions import TypeAliasType

# Named constraints let SQLite batch migrations find and drop them.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


MAX_DB_ID = 2**31 - 1  # INTEGER is 32-bit on PostgreSQL
DbId = Annotated[int, pydantic.Field(ge=1, le=MAX_DB_ID)]


def reject_nul(value: str) -> str:
    """PostgreSQL cannot store NUL characters in text; refuse them on every database."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


SafeStr = Annotated[str, AfterValidator(reject_nul)]


def reject_control_characters(value: str) -> str:
    """Names people read (labels) hold no control characters: no newline, tab, escape or DEL."""
    found = sorted({f"U+{ord(c):04X}" for c in value if unicodedata.category(c) == "Cc"})
    if found:
        raise ValueError(f"must not contain control characters ({', '.join(found)})")
    return value


# Free-form JSON (item data and metadata) deeper than this is refused: no honest payload
# needs it, and every reader of it (serializers, the databases' JSON functions) recurses.
MAX_JSON_DEPTH = 32


def check_json_object(value: dict[str, Any]) -> dict[str, Any]:
    """A storable JSON object: at most MAX_JSON_DEPTH levels of objects and arrays, and no NaN
    or Infinity (bodies FastAPI parses let them through; no database stores them faithfully).
    Walked iteratively, so hostile nesting cannot exhaust the stack."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
            children = node.values() if isinstance(node, dict) else node
            pending.extend((child, depth + 1) for child in children)
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError("NaN and Infinity are not valid JSON")
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(check_json_object)]


class ResponseModel(BaseModel):
    """A body the API answers with, every field always sent (a field with a default too, as
    null or its value). Its serialization schema, the one the spec shows for responses, so
    lists every field as required: generated clients read them without checks for absent
    keys, while a request body that reuses the model keeps its defaulted fields optional
    (FastAPI then names the two `X-Input` and `X-Output`).

    A model that leaves fields out when it serializes (a job's params and result, `Problem`,
    a column mapping) must not derive from it: the spec would promise keys it omits.
    tests/test_openapi.py checks both ways."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both databases (SQLite drops the offset on read)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def timestamp_column(*, nullable: bool = False) -> Any:
    return sa.Column(UTCDateTime(), nullable=nullable)


class Role(StrEnum):
    admin = "admin"
    service = "service"
    annotator = "annotator"


class ItemSource(StrEnum):
    manual = "manual"
    existing_db = "existing_db"
    user_behavior = "user_behavior"
    public = "public"
    synthetic = "synthetic"
    production = "production"


class ItemStatus(StrEnum):
    unlabeled = "unlabeled"
    in_progress = "in_progress"
    labeled = "labeled"
    needs_review = "needs_review"


class AnnotationSource(StrEnum):
    human = "human"
    model = "model"
    import_ = "import"
    user_behavior = "user_behavior"


# The annotation sources that are votes: a person decided the label (now, or in the past answers
# an import brings in). A model's auto-accept and an implicit label inferred from user behaviour
# (clicks) are not: they resolve an item only while no vote has settled it, and never count in
# consensus, agreement, annotator quality or the annotators-per-item overlap.
VOTE_SOURCES: tuple[AnnotationSource, ...] = (AnnotationSource.human, AnnotationSource.import_)

# Labels people decided: a reviewer's decision or the human consensus, never a model's. They
# alone lift the synthetic cap and calibrate thresholds.
HUMAN_RESOLUTIONS = ("review", "consensus")
# Labels a model may learn from: the human ones, and implicit labels from user behaviour
# (clicks), which for click data are most of the training set. Never a model's own.
USER_BEHAVIOR_RESOLUTION = "user_behavior"
TRAINABLE_RESOLUTIONS = (*HUMAN_RESOLUTIONS, USER_BEHAVIOR_RESOLUTION)
# What resolved an item's label: a review, the human consensus, a model's auto-accept, or an
# implicit label from user behaviour.
ResolvedBy = TypeAliasType("ResolvedBy", Literal["review", "consensus", "model", "user_behavior"])


class Phase(StrEnum):
    pilot = "pilot"
    production = "production"


class ConsensusMethod(StrEnum):
    """How an item's human answers become one label (docs/quality.md compares them)."""

    majority = "majority"
    dawid_skene = "dawid_skene"
    crowdlab = "crowdlab"


# Annotators per item during the pilot round, whatever annotators_per_item says.
PILOT_MIN_ANNOTATORS = 2
