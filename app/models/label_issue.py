"""Label-issue reports: suspected mislabels, near-duplicates, outliers and class imbalance,
kept with the parameters, library versions and label snapshot they ran on."""

from datetime import datetime
from typing import Any, Literal

import pydantic
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlmodel import Field, SQLModel
from typing_extensions import TypeAliasType

from app.models.base import ResponseModel, timestamp_column, utcnow
from app.pagination import Page

IssueType = TypeAliasType("IssueType", Literal["label", "near_duplicate", "outlier"])
ISSUE_TYPES: tuple[IssueType, ...] = ("label", "near_duplicate", "outlier")
# How an item's suspected mislabel compares with the project's previous report: new,
# persisting, or gone: fixed (its label changed), dismissed (a reviewer kept the label), or
# cleared (the model no longer doubts it).
IssueChange = TypeAliasType(
    "IssueChange", Literal["new", "persisting", "fixed", "dismissed", "cleared"]
)
GONE: tuple[IssueChange, ...] = ("fixed", "dismissed", "cleared")


class LabelIssueReport(SQLModel, table=True):
    __tablename__ = "label_issue_report"
    __table_args__ = (sa.Index("ix_label_issue_report_project", "project_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("project.id"), nullable=False)
    )
    job_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, sa.ForeignKey("job.id"), nullable=True)
    )
    previous_report_id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("label_issue_report.id"), nullable=True),
    )
    params: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    library_versions: dict[str, str] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    # Where the out-of-fold probabilities came from: "registry:N" or "cross_validation".
    probabilities_source: str = Field(sa_column=sa.Column(sa.String(50), nullable=False))
    # The labels the report ran on: an (n, 2) int64 array of item id and label code (codes
    # index snapshot_labels), stored with numpy's .npy format; and the sha256 of the
    # (item id, given label) pairs in id order.
    snapshot: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    snapshot_labels: list[str] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    snapshot_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    n_items: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    n_issues: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    counts: dict[str, int] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    findings: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    comparison: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON))
    seconds: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    # Set when the job finished (flags included); reports without it are invisible.
    completed_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class LabelIssueRow(SQLModel, table=True):
    """An item of a report that is an issue, or whose suspected mislabel of the previous
    report is gone (change fixed, dismissed or cleared). The other judged items are only in
    the report's snapshot."""

    __tablename__ = "label_issue_item"
    __table_args__ = (
        sa.Index("ix_label_issue_item_rank", "report_id", "rank", unique=True),
        sa.Index("ix_label_issue_item_item", "item_id", "report_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    report_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("label_issue_report.id"), nullable=False)
    )
    item_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("item.id"), nullable=False))
    # 1 = the lowest label quality of the report: the order a reviewer should follow.
    rank: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    given_label: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    suggested_label: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    label_quality: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    suggestion_confidence: float = Field(sa_column=sa.Column(sa.Float, nullable=False))
    is_issue: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    is_label_issue: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    is_near_duplicate: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    is_outlier: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    change: str | None = Field(default=None, sa_column=sa.Column(sa.String(12)))
    # Flagged into the review queue by this report: what its measured precision is over.
    sent_to_review: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False))


class LabelIssueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algorithm: str | None = pydantic.Field(
        default=None,
        max_length=50,
        description="The model whose out-of-fold probabilities judge the labels (see GET "
        "/v1/algorithms). Default: the active version's algorithm and params (its stored "
        "out-of-fold probabilities are reused when it was trained on exactly the current "
        "labels), else hashed_tfidf_sgd.",
    )
    params: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="Overrides of the algorithm's params."
    )
    near_duplicate_threshold: float = pydantic.Field(
        default=0.8,
        ge=0.5,
        le=1.0,
        description="Word-shingle Jaccard similarity at or above which two texts are "
        "near-duplicates.",
    )
    outlier_share: float = pydantic.Field(
        default=0.01, ge=0.0, le=0.2, description="Share of items reported as outliers."
    )
    send_to_review: bool = pydantic.Field(
        default=True,
        description="Send suspected mislabels to needs_review with the suggestion, worst "
        "first in the review queue. Nothing is ever relabeled by the report.",
    )


class LabelIssue(ResponseModel):
    item_id: int
    rank: int = pydantic.Field(description="1 = the worst label in the report.")
    given_label: str
    suggested_label: str = pydantic.Field(description="The model's most likely label.")
    label_quality: float = pydantic.Field(
        description="cleanlab's label quality score in [0, 1]: the out-of-fold probability "
        "of the given label. Low = likely wrong."
    )
    severity: float = pydantic.Field(description="1 - label_quality.")
    suggestion_confidence: float
    issue_types: list[IssueType]
    change: IssueChange | None = pydantic.Field(
        description="The suspected mislabel against the previous report: new, persisting; or "
        "gone: fixed (its label changed), dismissed (a reviewer kept it), cleared (no longer "
        "doubted). Null for the first report and for other issue types."
    )


class FlagReview(ResponseModel):
    """What reviewers decided about this report's suspected mislabels."""

    flagged: int = pydantic.Field(description="Suspected mislabels sent to the review queue.")
    reviewed: int = pydantic.Field(description="Flagged items a reviewer decided since.")
    confirmed: int = pydantic.Field(description="Reviewed flags whose label was changed.")
    precision: float | None = pydantic.Field(
        description="confirmed / reviewed: the measured precision of the flags here."
    )
    ci_low: float | None = pydantic.Field(description="95% Wilson interval.")
    ci_high: float | None


class LabelIssueReportPublic(Page[LabelIssue]):
    id: int
    project_id: int
    job_id: int | None
    created_at: datetime
    completed_at: datetime | None
    params: dict[str, Any]
    library_versions: dict[str, str]
    probabilities_source: str
    snapshot_hash: str
    n_items: int = pydantic.Field(description="Labeled items the report judged.")
    n_issues: int
    counts: dict[str, int] = pydantic.Field(description="Issues per type.")
    findings: dict[str, Any] = pydantic.Field(
        description="class_imbalance, noise_matrix, near_duplicate_groups, outliers."
    )
    comparison: dict[str, Any] | None = pydantic.Field(
        description="Against the previous report: its id and the count of each change."
    )
    flag_review: FlagReview
    seconds: float


class LabelIssueReportSummary(ResponseModel):
    id: int
    job_id: int | None
    created_at: datetime
    completed_at: datetime | None
    probabilities_source: str
    n_items: int
    n_issues: int
    counts: dict[str, int]
    comparison: dict[str, Any] | None
