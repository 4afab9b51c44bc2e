"""Each job kind's params (what it was asked to do) and result (what it reports), typed.

A service builds the params model when it queues a job; the job function reads it back
(`JobContext.read_params`) and returns its result model; both are stored as JSON in the job
row. `JobParams` and `JobResult` are unions told apart by `kind`, so `GET /v1/jobs/{id}` hands
a generated client e.g. a training job's `version` as a typed field.

Two rules keep every row readable, old or new:
- A model serializes the fields it was given (or read) and its `kind`, nothing else: a stored
  row keeps the exact shape the job wrote (a field some runs leave out stays out, not null).
- Rows written before `kind` was stored validate too: `kind` has a default, and
  `JobPublic.of` picks the model by the row's job kind.

The three import kinds' params carried a `kind` before (the import kind of
`POST .../imports`: file, sql, click_logs); it stays, and tells them apart in the union.
"""

from enum import StrEnum
from typing import Annotated, Any, Literal

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    GetJsonSchemaHandler,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from typing_extensions import TypeAliasType

from app.ml.selection import Strategy
from app.models.base import ConsensusMethod, ItemSource, ResponseModel
from app.models.click_logs import ClickSession
from app.models.imports import ColumnMapping, FileFormat, ImportResult, SqlImport


class KindTagged(BaseModel):
    """Base of every params and result model: tagged by `kind`, stored with the fields given."""

    # No return annotation on purpose: pydantic would take it as the serialized schema, and
    # the spec must show each model's own fields.
    @model_serializer(mode="wrap")
    def _given_fields(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        data = handler(self)
        return {k: v for k, v in data.items() if k == "kind" or k in self.model_fields_set}

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """`kind` is always there (serialized even when defaulted): required in the spec, as a
        discriminator must be."""
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        required: list[str] = target.setdefault("required", [])
        if "kind" not in required:
            required.insert(0, "kind")
        return schema


# --- train_model -------------------------------------------------------------------------------


class ActivateIfBetter(StrEnum):
    """A training job's `activate` besides true and false (auto-retraining). An enum, not a
    literal: generated clients parse a boolean-or-enum union, not a boolean-or-const one."""

    if_better = "if_better"


class TrainModelParams(KindTagged):
    kind: Literal["train_model"] = "train_model"
    algorithm: str
    params: dict[str, Any] = pydantic.Field(description="The algorithm's resolved params.")
    activate: bool | ActivateIfBetter = pydantic.Field(
        description='"if_better" (auto-retraining, the hands-off loop): activate when it does '
        "at least as well as the active version on the same held-out items (the labels the "
        "active version never saw), else by cross-validated macro-F1; the version's metrics "
        "record the comparison under `activation`."
    )
    dataset_version: int | None = pydantic.Field(
        default=None,
        description="The dataset version to train on; null or absent: freeze the labels now.",
    )


class TrainModelResult(KindTagged):
    kind: Literal["train_model"] = "train_model"
    version: int = pydantic.Field(description="The new model version's number.")
    model_version: str = pydantic.Field(description='Its name, "registry:<version>".')
    n_train: int
    n_user_behavior: int = pydantic.Field(description="Training examples from implicit labels.")
    dataset_version: int = pydantic.Field(description="The dataset version it was trained on.")
    accuracy: float
    macro_f1: float
    training_seconds: float
    activated: bool
    scoring_job_id: int | None = pydantic.Field(
        description="The pool-scoring job its activation queued."
    )


# --- prelabel ----------------------------------------------------------------------------------

PrelabelMode = TypeAliasType(
    "PrelabelMode", Literal["target_precision", "threshold", "target_pool_accuracy"]
)


class PrelabelParams(KindTagged):
    kind: Literal["prelabel"] = "prelabel"
    model_version: str
    threshold: float | None
    target_precision: float | None
    item_ids: list[int] | None
    limit: int | None
    audit_share: float
    target_pool_accuracy: float | None = None
    # False: a prediction not accepted stays a suggestion and the item stays in the label
    # queue (the hands-off loop), instead of going to the review queue as low_confidence.
    unsure_to_review: bool = True


class ExpectedPrecision(ResponseModel):
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    n_calibration: int


class PoolBudget(ResponseModel):
    """The error budget of a target_pool_accuracy run (app/ml/completion.py)."""

    target_pool_accuracy: float
    pool_size: int = pydantic.Field(description="Items of the project.")
    human_answered: int = pydantic.Field(description="Items with a human answer: correct.")
    error_budget: float = pydantic.Field(description="(1 - target) * pool_size.")
    committed_errors: float = pydantic.Field(
        description="Expected errors of earlier auto-accepts this run did not re-decide."
    )
    expected_errors: float = pydantic.Field(
        description="Expected errors of this run's auto-accepts (calibrated)."
    )
    expected_pool_accuracy: float | None = pydantic.Field(
        description="If every item were now settled: 1 - expected errors / pool_size, null "
        "while items remain neither answered nor auto-accepted."
    )
    unsettled: int = pydantic.Field(
        description="Items neither answered by a human nor auto-accepted after this run."
    )


class PrelabelResult(KindTagged):
    kind: Literal["prelabel"] = "prelabel"
    model_version: str
    mode: PrelabelMode
    target_precision: float | None
    thresholds: dict[str, float | None] = pydantic.Field(
        description="Per label; null: never auto-accepted."
    )
    considered: int
    auto_accepted: int
    needs_review: int
    suggested: int = pydantic.Field(description="Pilot projects: suggestions only.")
    pilot: bool
    audited: int
    skipped: int = pydantic.Field(description="Candidates without a prediction, or left alone.")
    expected_precision: ExpectedPrecision
    pool_budget: PoolBudget | None = pydantic.Field(
        default=None, description="Mode target_pool_accuracy only: how the budget was spent."
    )


# --- score_pool --------------------------------------------------------------------------------


class ScorePoolParams(KindTagged):
    kind: Literal["score_pool"] = "score_pool"
    version: int
    item_ids: list[int] | None = pydantic.Field(
        default=None,
        description="Score only these unsettled items (the hands-off loop scoring items "
        "ingested since the pool was scored); absent: the whole unsettled pool.",
    )


class ScorePoolResult(KindTagged):
    kind: Literal["score_pool"] = "score_pool"
    version: int
    scored: int
    model_version: str | None = pydantic.Field(default=None, description="Absent if superseded.")
    superseded: bool = pydantic.Field(
        default=False,
        description="Present (true) when the version was no longer active: nothing scored.",
    )


# --- simulate_active_learning ------------------------------------------------------------------


class SimulateActiveLearningParams(KindTagged):
    kind: Literal["simulate_active_learning"] = "simulate_active_learning"
    strategies: list[Strategy]
    folds: int
    seed_size: int
    batch_size: int
    budget: int
    at_labels: int
    algorithm: str
    params: dict[str, Any]
    target_pool_accuracy: float | None = pydantic.Field(
        default=None, description="The pool-completion replay's target; absent: not replayed."
    )
    completion_seeds: int | None = None
    own_strategy: Strategy | None = pydantic.Field(
        default=None, description="The own loop's batch strategy in the completion replay."
    )
    own_random_share: float | None = None


class CompletionPoint(ResponseModel):
    labels: int = pydantic.Field(description="Human answers spent.")
    accepted: int = pydantic.Field(description="Items the rule would auto-accept now.")
    accepted_accuracy: float | None = pydantic.Field(
        description="Their realized accuracy; null: none accepted."
    )
    pool_accuracy: float = pydantic.Field(
        description="The pool's realized accuracy if the model labeled every item humans have "
        "not answered now."
    )


CompletionArmName = TypeAliasType(
    "CompletionArmName", Literal["own_loop", "random_prelabels", "all_human"]
)


class CompletionArm(ResponseModel):
    name: CompletionArmName
    strategy: str | None = pydantic.Field(description="Batch strategy; null: all by hand.")
    random_share: float
    runs: int = pydantic.Field(description="Replays (seeds).")
    completed: int = pydantic.Field(description="Replays that completed the pool.")
    human_answers: float | None = pydantic.Field(
        description="Mean human answers needed to complete the pool (null: none completed)."
    )
    human_share: float | None = pydantic.Field(description="The same, as a share of the pool.")
    auto_accepted: float | None
    auto_accept_accuracy: float | None = pydantic.Field(
        description="Realized accuracy of the auto-accepts at completion (mean over replays)."
    )
    pool_accuracy: float | None = pydantic.Field(
        description="Realized accuracy of the completed pool (mean over replays)."
    )
    worst_pool_accuracy: float | None
    met_target: bool = pydantic.Field(
        description="Every replay completed and every completed pool reached the target."
    )
    curve: list[CompletionPoint] = pydantic.Field(description="Per round, mean over replays.")


class PoolCompletion(ResponseModel):
    target_accuracy: float
    pool_size: int
    seeds: int
    seed_size: int
    batch_size: int
    arms: list[CompletionArm] = pydantic.Field(
        description="own_loop (the strategy + auto-accept), random_prelabels (random batches "
        "+ the same auto-accept), all_human."
    )
    summary: str


class SimulateActiveLearningResult(KindTagged):
    kind: Literal["simulate_active_learning"] = "simulate_active_learning"
    algorithm: str
    n_items: int
    folds: int
    seed_size: int
    batch_size: int
    budget: int
    baseline: str
    at_labels: int
    target_accuracy: float | None = pydantic.Field(
        description="The baseline's accuracy at at_labels."
    )
    curves: dict[str, list[tuple[int, float]]] = pydantic.Field(
        description="Per strategy, [labels, accuracy] points."
    )
    labels_needed: dict[str, int | None]
    label_share: dict[str, float | None]
    summary: str
    completion: PoolCompletion | None = pydantic.Field(
        default=None,
        description="Human answers to complete the pool at the target accuracy; absent when "
        "not asked.",
    )


# --- apply_consensus ---------------------------------------------------------------------------


class ApplyConsensusParams(KindTagged):
    kind: Literal["apply_consensus"] = "apply_consensus"


class ApplyConsensusResult(KindTagged):
    """A skipped run (majority, or superseded by a newer job) holds method, changed, skipped."""

    kind: Literal["apply_consensus"] = "apply_consensus"
    method: ConsensusMethod
    changed: int
    skipped: str | None = pydantic.Field(default=None, description="Why nothing was applied.")
    model_version: str | None = None
    items_considered: int | None = None
    undecided: int | None = None
    converged: bool | None = None
    iterations: int | None = None


# --- label_issues ------------------------------------------------------------------------------


class LabelIssuesParams(KindTagged):
    kind: Literal["label_issues"] = "label_issues"
    algorithm: str
    params: dict[str, Any]
    near_duplicate_threshold: float
    outlier_share: float
    send_to_review: bool
    # Fixed by the code; recorded so a report says everything it ran with.
    n_folds: int
    fold_seed: int
    near_duplicate_shingles: str
    near_duplicate_num_perm: int
    near_duplicate_seed: int
    outlier_method: str


class LabelIssuesResult(KindTagged):
    kind: Literal["label_issues"] = "label_issues"
    report_id: int
    n_items: int
    n_issues: int
    counts: dict[str, int] = pydantic.Field(description="Items per issue type.")
    probabilities_source: str
    sent_to_review: int
    comparison: dict[str, int] | None = pydantic.Field(
        description="Against the previous report; null for a project's first."
    )


# --- synthetic ---------------------------------------------------------------------------------


class SyntheticParams(KindTagged):
    kind: Literal["synthetic"] = "synthetic"
    label: str
    count: int
    instructions: str | None
    temperature: float


class SyntheticResult(KindTagged):
    kind: Literal["synthetic"] = "synthetic"
    requested: int
    allowed: int = pydantic.Field(
        description="floor(ratio * human_labeled / (1 - ratio)) - existing_synthetic, at "
        "least 0 (the count itself when synthetic_max_ratio is 1)."
    )
    created: int
    capped: bool = pydantic.Field(description="True when the cap allowed fewer than requested.")
    item_ids: list[int]
    label: str
    human_labeled: int
    existing_synthetic: int
    synthetic_max_ratio: float
    rejected: dict[str, int] = pydantic.Field(description="Texts not stored, by reason.")
    llm_calls: int
    llm_retries: int
    model: str
    temperature: float
    prompt_sha256: list[str]
    stopped: str | None = pydantic.Field(
        description="Why generation stopped before the target: attempts_exhausted, or the "
        "problem of an LLM call that failed after some items were stored."
    )


# --- import_file, import_sql -------------------------------------------------------------------


class ImportFileParams(KindTagged):
    kind: Literal["file"] = "file"
    upload_id: int
    file_name: str
    format: FileFormat
    size_bytes: int
    file_sha256: str
    mapping: ColumnMapping
    annotator: str
    source: ItemSource


class ImportFileResult(ImportResult, KindTagged):
    kind: Literal["import_file"] = "import_file"


class ImportSqlParams(SqlImport, KindTagged):
    """The request as sent, with its annotator filled in and the query's hash."""

    model_config = ConfigDict(extra="ignore")

    annotator: str
    query_sha256: str


class ImportSqlResult(ImportResult, KindTagged):
    kind: Literal["import_sql"] = "import_sql"


# --- import_click_logs -------------------------------------------------------------------------


class ImportClickLogsParams(KindTagged):
    """The sessions themselves are the job's payload, not part of its public params."""

    kind: Literal["click_logs"] = "click_logs"
    min_dwell_seconds: float
    max_position: int
    annotator: str
    sessions: int = pydantic.Field(description="Sessions sent.")
    impressions: int = pydantic.Field(description="Results shown, over all sessions.")


class ClickLogsPayload(BaseModel):
    """The bulk input of a click-log import, kept in the job row for the job (and a retry)."""

    sessions: list[ClickSession]


class SkippedPair(ResponseModel):
    query: str
    doc_id: str
    item_id: int | None = pydantic.Field(description="The item that already has this text.")


class ImportClickLogsResult(KindTagged):
    kind: Literal["import_click_logs"] = "import_click_logs"
    sessions: int
    impressions: int = pydantic.Field(description="Results shown, over all sessions.")
    pairs: int = pydantic.Field(description="Distinct (query, doc_id) pairs: one item each.")
    rules: dict[str, int] = pydantic.Field(
        description="Pairs per outcome: relevant_long_click, not_relevant_skipped, "
        "ignored_short_click, ignored_low_position (they add up to pairs)."
    )
    impressions_by_kind: dict[str, int] = pydantic.Field(
        description="Impressions per kind: long_click, short_click, skipped_at_top, "
        "not_clicked_below."
    )
    conflicts: int = pydantic.Field(
        description="Pairs with a long click in one session and a skip at the top in another "
        "(labeled relevant)."
    )
    min_dwell_seconds: float
    max_position: int
    annotator: str
    items: dict[str, int] = pydantic.Field(
        description="created, updated, unchanged, and skipped_duplicate_text (a pair whose "
        "text another item already has)."
    )
    labels: dict[str, int] = pydantic.Field(description="created, replaced, unchanged.")
    skipped: list[SkippedPair] = pydantic.Field(
        description="The first pairs skipped for their duplicate text."
    )


# --- the unions --------------------------------------------------------------------------------

AnyJobParams = (
    TrainModelParams
    | PrelabelParams
    | ScorePoolParams
    | SimulateActiveLearningParams
    | ApplyConsensusParams
    | LabelIssuesParams
    | SyntheticParams
    | ImportFileParams
    | ImportSqlParams
    | ImportClickLogsParams
)
AnyJobResult = (
    TrainModelResult
    | PrelabelResult
    | ScorePoolResult
    | SimulateActiveLearningResult
    | ApplyConsensusResult
    | LabelIssuesResult
    | SyntheticResult
    | ImportFileResult
    | ImportSqlResult
    | ImportClickLogsResult
)
JobParams = Annotated[AnyJobParams, pydantic.Field(discriminator="kind")]
JobResult = Annotated[AnyJobResult, pydantic.Field(discriminator="kind")]

# By job kind (JobKind's values): the model a row's params and result are read with.
PARAMS_MODELS: dict[str, type[AnyJobParams]] = {
    "train_model": TrainModelParams,
    "prelabel": PrelabelParams,
    "score_pool": ScorePoolParams,
    "simulate_active_learning": SimulateActiveLearningParams,
    "apply_consensus": ApplyConsensusParams,
    "label_issues": LabelIssuesParams,
    "synthetic": SyntheticParams,
    "import_file": ImportFileParams,
    "import_sql": ImportSqlParams,
    "import_click_logs": ImportClickLogsParams,
}
RESULT_MODELS: dict[str, type[AnyJobResult]] = {
    "train_model": TrainModelResult,
    "prelabel": PrelabelResult,
    "score_pool": ScorePoolResult,
    "simulate_active_learning": SimulateActiveLearningResult,
    "apply_consensus": ApplyConsensusResult,
    "label_issues": LabelIssuesResult,
    "synthetic": SyntheticResult,
    "import_file": ImportFileResult,
    "import_sql": ImportSqlResult,
    "import_click_logs": ImportClickLogsResult,
}
