"""The project statistics report."""

from pydantic import Field

from app.models.base import ResponseModel


class LabelCount(ResponseModel):
    label: str
    count: int
    share: float


class AnnotatorCount(ResponseModel):
    annotator: str
    tier: str | None
    annotations: int = Field(description="Current annotations, abstentions included.")
    abstains: int
    replaced: int = Field(description="Earlier answers this annotator later changed.")


class CostLine(ResponseModel):
    tier: str | None
    annotations: int
    unit_cost: float | None
    cost: float


class SourceShare(ResponseModel):
    source: str
    count: int
    share: float = Field(description="Of the project's resolved labels.")


class LabelSources(ResponseModel):
    """Where the resolved labels came from, to see selection bias at a glance."""

    n_resolved: int = Field(description="Items with a resolved label.")
    by_resolution: list[SourceShare] = Field(
        description="Who decided each label: review, consensus (of human or imported answers), "
        "model (an auto-accept) or user_behavior (an implicit label, e.g. from clicks)."
    )
    by_item_source: list[SourceShare] = Field(
        description="Where the labeled items came from: manual, existing_db, user_behavior, "
        "public, synthetic, production."
    )


class ProjectStats(ResponseModel):
    project_id: int
    n_items: int
    items_by_status: dict[str, int]
    items_by_source: dict[str, int]
    label_distribution: list[LabelCount] = Field(
        description="Resolved labels of items, largest first (unused labels have count 0)."
    )
    annotation_label_distribution: list[LabelCount] = Field(
        description="Labels of current non-abstaining annotations, largest first."
    )
    imbalance_ratio: float | None = Field(
        description="Largest over smallest non-zero resolved-label count."
    )
    label_sources: LabelSources
    warnings: list[str] = Field(
        description="Plain-language warnings: class imbalance, a biased label or item source "
        "dominating the resolved labels, unpriced work."
    )
    n_annotations: int
    annotations_per_annotator: list[AnnotatorCount]
    abstain_rate: float | None
    cost: list[CostLine]
    cost_total: float
