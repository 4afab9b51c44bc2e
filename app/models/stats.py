"""The project statistics report."""

from pydantic import BaseModel, Field


class LabelCount(BaseModel):
    label: str
    count: int
    share: float


class AnnotatorCount(BaseModel):
    annotator: str
    tier: str | None
    annotations: int = Field(description="Current annotations, abstentions included.")
    abstains: int
    replaced: int = Field(description="Earlier answers this annotator later changed.")


class CostLine(BaseModel):
    tier: str | None
    annotations: int
    unit_cost: float | None
    cost: float


class ProjectStats(BaseModel):
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
    warnings: list[str]
    n_annotations: int
    annotations_per_annotator: list[AnnotatorCount]
    abstain_rate: float | None
    cost: list[CostLine]
    cost_total: float
