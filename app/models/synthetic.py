"""Synthetic generation: the request that starts an LLM job (its params and result are in
app/models/job_kinds.py).

No table of its own: generated items are ordinary items with `source: "synthetic"` and their
provenance in `metadata.synthetic`; the job row keeps the request and the result.
"""

import pydantic
from pydantic import BaseModel, ConfigDict

from app.models.base import SafeStr

# Why a generated text was not stored (the keys of a synthetic job's result.rejected,
# app/models/job_kinds.py).
REJECTION_REASONS = (
    "malformed_response",  # the answer was not a JSON array (the whole attempt is retried)
    "not_a_string",  # an entry that is neither a string nor {"text": string}
    "empty",  # blank after stripping
    "too_long",  # over the server's max_text_chars
    "invalid_text",  # e.g. a NUL character, which PostgreSQL cannot store
    "duplicate_in_response",  # the same normalized text twice in one answer
    "duplicate_existing",  # the normalized text is already an item of the project
    "over_cap",  # valid, but beyond what the cap (or the count) allows
)


class SyntheticRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: SafeStr = pydantic.Field(
        min_length=1, max_length=100, description="The project label the texts should have."
    )
    count: int = pydantic.Field(
        ge=1,
        le=1_000,
        description="How many items to generate; fewer are stored when the project's "
        "synthetic_max_ratio allows fewer.",
    )
    instructions: SafeStr | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=4_000,
        description="Extra guidance added to the prompt (style, length, topics to cover).",
    )
    temperature: float | None = pydantic.Field(
        default=None,
        ge=0.0,
        le=2.0,
        allow_inf_nan=False,
        description="Sampling temperature sent to the model (default 0.9).",
    )
