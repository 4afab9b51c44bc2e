"""Dataset versions: immutable snapshots of a project's resolved labels, their rows and the
texts they name, with exports and diffs between any two."""

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

import pydantic
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel

from app.models.base import ResponseModel, SafeStr, timestamp_column, utcnow

Split = Literal["train", "test"]
DEFAULT_TEST_SHARE = 0.2


class DatasetVersion(SQLModel, table=True):
    """One frozen version; its rows are DatasetRow, never updated after the version commits."""

    __tablename__ = "dataset_version"
    __table_args__ = (
        sa.UniqueConstraint("project_id", "version", name="uq_dataset_version_project_id_version"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("project.id"), nullable=False)
    )
    version: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    name: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    note: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    n_items: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    label_distribution: dict[str, int] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    # Who decided the labels (review, consensus, model, user_behavior) and where the items
    # came from (manual, import, synthetic, ...): counts.
    label_sources: dict[str, int] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    item_sources: dict[str, int] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    synthetic_share: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    test_share: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    split_counts: dict[str, int] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    # The model versions whose auto-accepted labels are in this version (names, sorted).
    auto_accept_models: list[str] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    content_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    created_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class DatasetRow(SQLModel, table=True):
    """One item of one version as it was frozen. item_id has no foreign key on purpose: a
    version stays whole whatever later happens to the items."""

    __tablename__ = "dataset_row"

    dataset_version_id: int = Field(
        sa_column=sa.Column(
            sa.Integer,
            sa.ForeignKey("dataset_version.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    item_id: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    external_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    text_sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    label: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    label_source: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    item_source: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    n_annotators: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    agreement: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
    model_version: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    split: str = Field(sa_column=sa.Column(sa.String(5), nullable=False))
    # The item's position in its split's hash order (oversampling picks extra rows by it).
    split_hash: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


class DatasetText(SQLModel, table=True):
    """Texts by SHA-256, shared by every version of a project: an unchanged text is stored
    once however many versions name it, and a changed one keeps its old form for old
    versions."""

    __tablename__ = "dataset_text"

    project_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("project.id"), primary_key=True, autoincrement=False
        )
    )
    sha256: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    text: str = Field(sa_column=sa.Column(sa.Text, nullable=False))


class DatasetVersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeStr | None = pydantic.Field(default=None, min_length=1, max_length=100)
    note: SafeStr | None = pydantic.Field(default=None, max_length=10_000)
    test_share: float | None = pydantic.Field(
        default=None,
        gt=0.0,
        lt=1.0,
        allow_inf_nan=False,
        description="Share of items in the test split (default: the previous version's, "
        "else 0.2). An item's split is decided by a hash of its id, so it never moves "
        "between versions; a share different from the previous version's is a 409.",
    )


class DatasetVersionPublic(ResponseModel):
    id: int
    project_id: int
    version: int
    name: str | None
    note: str | None
    n_items: int = pydantic.Field(description="Items with a resolved label when frozen.")
    label_distribution: dict[str, int]
    label_sources: dict[str, int] = pydantic.Field(
        description="Who decided the labels: review, consensus, model (auto-accepted), "
        "user_behavior (implicit)."
    )
    item_sources: dict[str, int] = pydantic.Field(description="Where the items came from.")
    synthetic_share: float = pydantic.Field(description="Share of synthetic items, 0..1.")
    test_share: float
    split_counts: dict[str, int] = pydantic.Field(description="Items in train and in test.")
    auto_accept_models: list[str] = pydantic.Field(
        description="Model versions whose auto-accepted labels are in this version."
    )
    trained_models: list[int] = pydantic.Field(
        description="Registry model versions trained on this dataset version."
    )
    content_hash: str = pydantic.Field(
        description="SHA-256 of the rows (item, external id, text hash, label, label source, "
        "split): two versions with the same hash hold the same data."
    )
    created_by: str | None
    created_at: datetime


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"


class Balance(StrEnum):
    none = "none"
    weight = "weight"
    oversample = "oversample"


class SplitFilter(StrEnum):
    all = "all"
    train = "train"
    test = "test"


class DiffChange(StrEnum):
    added = "added"
    removed = "removed"
    relabeled = "relabeled"
    text_changed = "text_changed"


class DiffEntry(ResponseModel):
    item_id: int
    change: DiffChange
    old_label: str | None = pydantic.Field(description="The label in `against` (null: added).")
    new_label: str | None = pydantic.Field(description="The label in this version (null: removed).")


class DatasetDiff(ResponseModel):
    version: int
    against: int
    added: int = pydantic.Field(description="Items in this version and not in `against`.")
    removed: int = pydantic.Field(description="Items in `against` and not in this version.")
    relabeled: int = pydantic.Field(description="Items in both with different labels.")
    text_changed: int = pydantic.Field(
        description="Items in both with the same label whose text changed."
    )
    unchanged: int
    items: list[DiffEntry]
    next_cursor: str | None


def public(version: DatasetVersion, trained_models: list[int]) -> DatasetVersionPublic:
    data: dict[str, Any] = version.model_dump()
    return DatasetVersionPublic(**data, trained_models=trained_models)
