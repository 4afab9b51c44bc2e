"""Click-log imports: search sessions in, query-document items with implicit labels out.

No table of its own: each (query, doc_id) pair is an ordinary item with `source:
"user_behavior"`, its implicit label an annotation with `source: "user_behavior"`, both with
their provenance; the job row keeps the request and the result.
"""

from typing import Annotated, Literal

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict

from app.models.api_key import NAME_PATTERN
from app.models.base import SafeStr

MAX_SESSIONS = 10_000  # per request
MAX_RESULTS_PER_SESSION = 1_000
MAX_QUERY_CHARS = 2_000
MAX_DOC_ID_CHARS = 500
DEFAULT_MIN_DWELL_SECONDS = 30.0
DEFAULT_MAX_POSITION = 3
DEFAULT_ANNOTATOR = "user_behavior"
# The labels an import writes; the project must have both.
RELEVANT = "relevant"
NOT_RELEVANT = "not_relevant"
REQUIRED_LABELS = (RELEVANT, NOT_RELEVANT)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain more than whitespace")
    return value


NonBlank = Annotated[SafeStr, AfterValidator(_not_blank)]


class ClickResult(BaseModel):
    """One document shown in a session's result list."""

    model_config = ConfigDict(extra="forbid")

    doc_id: NonBlank = pydantic.Field(
        min_length=1, max_length=MAX_DOC_ID_CHARS, description="Your id of the document shown."
    )
    position: int = pydantic.Field(ge=1, le=1_000_000, description="Rank shown, 1 = top.")
    clicked: bool
    dwell_time: float = pydantic.Field(
        default=0.0,
        ge=0,
        le=10_000_000,
        allow_inf_nan=False,
        description="Seconds spent on the document after the click (ignored without a click).",
    )


class ClickSession(BaseModel):
    """One search: the query and the results the user was shown."""

    model_config = ConfigDict(extra="forbid")

    query: NonBlank = pydantic.Field(min_length=1, max_length=MAX_QUERY_CHARS)
    results: list[ClickResult] = pydantic.Field(max_length=MAX_RESULTS_PER_SESSION)


class ClickLogsImport(BaseModel):
    """`POST .../imports` with `kind: "click_logs"`."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["click_logs"]
    sessions: list[ClickSession] = pydantic.Field(min_length=1, max_length=MAX_SESSIONS)
    min_dwell_seconds: float = pydantic.Field(
        default=DEFAULT_MIN_DWELL_SECONDS,
        ge=0,
        le=86_400,
        allow_inf_nan=False,
        description="A click with at least this dwell time is a long click: relevant.",
    )
    max_position: int = pydantic.Field(
        default=DEFAULT_MAX_POSITION,
        ge=0,
        le=1_000,
        description="A result shown at this position or higher and not clicked is skipped: "
        "not_relevant (0 turns the rule off).",
    )
    annotator: str = pydantic.Field(
        default=DEFAULT_ANNOTATOR,
        pattern=NAME_PATTERN,
        description="The name the implicit labels are recorded under (one per log source; "
        "a later import under the same name replaces its labels).",
    )
