"""Model versions of the in-process registry, and their serialized artifacts."""

from datetime import datetime
from typing import Any, Literal

import pydantic
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import deferred
from sqlmodel import Field, SQLModel
from typing_extensions import TypeAliasType

from app.models.base import MAX_DB_ID, ResponseModel, timestamp_column, utcnow
from app.models.job import JobPublic
from app.models.job_kinds import ActivateIfBetter

_TRAIN_ITEM_IDS = sa.Column("train_item_ids", sa.JSON, nullable=False)
_TRAIN_LABELS = sa.Column("train_labels", sa.JSON, nullable=False)


class ModelVersion(SQLModel, table=True):
    __tablename__ = "model_version"
    __mapper_args__ = {
        "properties": {
            "train_item_ids": deferred(_TRAIN_ITEM_IDS),
            "train_labels": deferred(_TRAIN_LABELS),
        }
    }
    __table_args__ = (
        sa.UniqueConstraint("project_id", "version", name="uq_model_version_project_id_version"),
        sa.ForeignKeyConstraint(
            ["project_id", "dataset_version"],
            ["dataset_version.project_id", "dataset_version.version"],
            name="fk_model_version_dataset_version",
        ),
        # At most one active version per project.
        sa.Index(
            "uq_model_version_active_project",
            "project_id",
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("project.id"), nullable=False)
    )
    version: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    algorithm: str = Field(sa_column=sa.Column(sa.String(50), nullable=False))
    params: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    labels: list[str] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    n_train: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    # The exact training set: item ids in order, and a hash of the (id, label) pairs. The ids
    # and labels can be megabytes: deferred, so they load when read, never with the row.
    train_item_ids: list[int] = Field(sa_column=_TRAIN_ITEM_IDS)
    train_labels: list[str] = Field(sa_column=_TRAIN_LABELS)
    train_set_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    label_distribution: dict[str, int] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    metrics: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    training_seconds: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    active: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False))
    job_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, sa.ForeignKey("job.id"))
    )
    # The dataset version it was trained on (lineage); null for versions older than lineage.
    dataset_version: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    activated_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    # The pool scoring its latest activation queued: batches ask whether it is still running.
    scoring_job_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, sa.ForeignKey("job.id"))
    )


class ModelArtifact(SQLModel, table=True):
    """Bytes kept in the database so every replica can load every version."""

    __tablename__ = "model_artifact"

    model_version_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("model_version.id"), primary_key=True, nullable=False
        )
    )
    name: str = Field(sa_column=sa.Column(sa.String(30), primary_key=True, nullable=False))
    content: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


# How predictions, annotations and batches name a registry version: "registry:<number>". Any
# other model_version names an external model whose predictions were posted.
REGISTRY_PREFIX = "registry:"


def registry_version_name(version: int) -> str:
    """How predictions and annotations made by a registry version name it."""
    return f"{REGISTRY_PREFIX}{version}"


def names_the_registry(name: str) -> bool:
    """Whether a model_version name is in the registry's namespace (external models may not
    use it), well formed or not."""
    return name.startswith(REGISTRY_PREFIX)


def registry_version_number(name: str) -> int | None:
    """The N of "registry:N"; None for any other name, or when N is not a number."""
    number = name.removeprefix(REGISTRY_PREFIX)
    if not names_the_registry(name) or not number.isdecimal():
        return None
    return int(number)


class ModelTrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algorithm: str = pydantic.Field(
        # app.registry.algorithms.DEFAULT_ALGORITHM (models do not import the registry).
        default="hashed_tfidf_sgd",
        description="A registered algorithm; see GET /v1/algorithms.",
    )
    params: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="Overrides of the algorithm's default parameters."
    )
    activate: bool | ActivateIfBetter = pydantic.Field(
        default=False,
        description='Activate the new version as soon as it is registered; "if_better": only '
        "when it does at least as well as the active version on the same held-out items (its "
        "metrics.activation says how it compared).",
    )
    dataset_version: int | None = pydantic.Field(
        default=None,
        ge=1,
        le=MAX_DB_ID,
        description="Train on this dataset version's frozen labels and texts (to reproduce a "
        "model). Default: freeze the labels as they are now into a new dataset version, or "
        "reuse the latest one when nothing changed; the model version records which.",
    )


class LabelMetrics(ResponseModel):
    precision: float
    recall: float
    f1: float
    support: int


ActivationBasis = TypeAliasType("ActivationBasis", Literal["held_out", "cross_validation"])


class ActivationCheck(ResponseModel):
    """How an `activate: "if_better"` training compared the new version with the active one."""

    basis: ActivationBasis = pydantic.Field(
        description="held_out: both versions scored on the same items, labeled since the "
        "active version's training data (the new version by its out-of-fold predictions, "
        "the active one as it predicts them); cross_validation: too few such items, each "
        "version's own cross-validated macro-F1."
    )
    active_version: int
    n_items: int = pydantic.Field(description="Held-out items compared (0 for cross_validation).")
    new_score: float = pydantic.Field(description="Accuracy (held_out) or macro-F1.")
    active_score: float
    activated: bool = pydantic.Field(description="new_score >= active_score.")


class ModelMetrics(ResponseModel):
    accuracy: float
    macro_f1: float
    brier: float = pydantic.Field(description="Multi-class Brier score (lower is better).")
    per_label: dict[str, LabelMetrics]
    n_folds: int
    excluded_labels: dict[str, int] = pydantic.Field(
        default_factory=dict,
        description="Labels left out: fewer examples than folds, or (training on an older "
        "dataset version) labels the project no longer has.",
    )
    synthetic_dropped: int = pydantic.Field(
        default=0, description="Synthetic items left out by the project's synthetic_max_ratio."
    )
    n_user_behavior: int = pydantic.Field(
        default=0,
        description="Training examples resolved by an implicit label from user behaviour "
        "(weighted 0.5 against 1.0 for human labels).",
    )
    activation: ActivationCheck | None = pydantic.Field(
        default=None,
        description='How a training with activate "if_better" compared this version with the '
        "version active then (null: no comparison was made).",
    )


class ModelVersionPublic(ResponseModel):
    version: int
    model_version: str = pydantic.Field(
        description="The name its predictions and auto-accepted annotations carry."
    )
    algorithm: str
    params: dict[str, Any]
    labels: list[str]
    n_train: int
    train_set_hash: str
    label_distribution: dict[str, int]
    active: bool
    metrics: ModelMetrics
    training_seconds: float
    job_id: int | None
    dataset_version: int | None = pydantic.Field(
        description="The dataset version it was trained on: GET "
        ".../dataset-versions/{dataset_version} (null for versions trained before lineage)."
    )
    created_at: datetime
    activated_at: datetime | None
    scoring_job_id: int | None = pydantic.Field(
        description="The pool-scoring job its latest activation queued (null: never active)."
    )

    @classmethod
    def of(cls, version: ModelVersion) -> "ModelVersionPublic":
        return cls(
            model_version=registry_version_name(version.version),
            metrics=ModelMetrics.model_validate(version.metrics),
            **version.model_dump(
                include={
                    "version",
                    "algorithm",
                    "params",
                    "labels",
                    "n_train",
                    "train_set_hash",
                    "label_distribution",
                    "active",
                    "training_seconds",
                    "job_id",
                    "dataset_version",
                    "created_at",
                    "activated_at",
                    "scoring_job_id",
                }
            ),
        )


class AlgorithmPublic(ResponseModel):
    name: str
    description: str
    input: str = pydantic.Field(description='"text" or "features" (data.features, numbers).')
    default_params: dict[str, Any]


class Activation(ResponseModel):
    """The newly active version and the job scoring the pool with it."""

    model: ModelVersionPublic
    scoring_job: JobPublic
