"""Quality reports: inter-annotator agreement with a plain-language reading, and consensus."""

from typing import Any, Literal

import pydantic
from typing_extensions import TypeAliasType

from app.models.base import ConsensusMethod, ResponseModel
from app.pagination import Page

AgreementBand = TypeAliasType(
    "AgreementBand", Literal["excellent", "good", "needs_work", "not_measurable"]
)
WarningCode = TypeAliasType(
    "WarningCode",
    Literal[
        "not_measurable",
        "below_threshold",
        "confused_labels",
        "disputed_items",
        "annotators_below_others",
        "high_abstain_rate",
    ],
)


class PairKappa(ResponseModel):
    a: str
    b: str
    kappa: float | None = pydantic.Field(
        description="Cohen's kappa on the items both labeled (null: one label used throughout)."
    )
    n: int = pydantic.Field(description="Items both annotators labeled.")


class LabelAgreement(ResponseModel):
    label: str
    agreement: float | None = pydantic.Field(
        description="Chance that a second annotator of an item also chose this label, given "
        "one did (specific agreement); null when no item with two labels has it."
    )
    n: int = pydantic.Field(description="Times it was chosen on items with two or more labels.")
    abstain_rate: float | None = pydantic.Field(
        description='Share of answers that were "I don\'t know" on items whose majority is '
        "this label."
    )


class AnnotatorAgreement(ResponseModel):
    annotator: str
    n_labels: int
    n_abstained: int
    abstain_rate: float
    agreement_with_others: float | None = pydantic.Field(
        description="Share of this annotator's labels equal to the majority of the others on "
        "the same item (items where the others tie or are absent are not counted)."
    )
    n_compared: int


class ConfidenceInterval(ResponseModel):
    statistic: Literal["krippendorff_alpha"] = "krippendorff_alpha"
    level: float
    low: float
    high: float
    method: Literal["percentile_bootstrap_over_items"] = "percentile_bootstrap_over_items"
    n_boot: int
    seed: int


class Interpretation(ResponseModel):
    band: AgreementBand = pydantic.Field(
        description="Krippendorff's alpha above 0.8 excellent, 0.6-0.8 good, below 0.6 the "
        "task definition needs work."
    )
    summary: str


class AgreementWarning(ResponseModel):
    code: WarningCode
    message: str
    evidence: dict[str, Any] = pydantic.Field(default_factory=dict)


class AgreementReport(ResponseModel):
    n_items: int = pydantic.Field(description="Items with at least one human label.")
    n_pairable_items: int = pydantic.Field(description="Items with two or more human labels.")
    n_annotators: int
    n_labels: int = pydantic.Field(description="Human labels counted (abstentions excluded).")
    krippendorff_alpha: float | None
    fleiss_kappa: float | None
    percent_agreement: float | None
    confidence_interval: ConfidenceInterval | None
    pairwise_cohen_kappa: list[PairKappa]
    per_label: list[LabelAgreement]
    per_annotator: list[AnnotatorAgreement]
    abstain_rate: float | None = pydantic.Field(description="Share of answers that abstained.")
    agreement_threshold: float
    interpretation: Interpretation
    warnings: list[AgreementWarning]


class ConsensusItem(ResponseModel):
    item_id: int
    label: str | None = pydantic.Field(
        description="The consensus label; null when undecided (a tie goes to review)."
    )
    quality: float | None = pydantic.Field(
        description="majority: the winning vote share; dawid_skene: posterior probability; "
        "crowdlab: cleanlab's consensus quality score."
    )
    votes: dict[str, int]
    abstentions: int
    complete: bool = pydantic.Field(
        description="The item has its required answers (annotators_per_item; two in the "
        "pilot), so under the project's method this label resolves it; otherwise it is "
        "provisional."
    )


class AnnotatorQuality(ResponseModel):
    annotator: str
    quality: float | None = pydantic.Field(
        description="majority: agreement with the others' majority; dawid_skene: estimated "
        "accuracy; crowdlab: cleanlab's annotator quality."
    )
    n: int = pydantic.Field(description="Labels given (abstentions excluded).")


class ConsensusPage(Page[ConsensusItem]):
    method: ConsensusMethod
    converged: bool = pydantic.Field(description="dawid_skene: EM converged within its limit.")
    iterations: int
    model_version: str | None = pydantic.Field(
        default=None, description="crowdlab: the model whose out-of-fold probabilities it used."
    )
    annotators: list[AnnotatorQuality]
