"""Imports: the requests that start a file or SQL import job, the result it reports, and the
uploaded file's bytes kept in the database until its job ends.

A file import is multipart/form-data; every other kind is a JSON body whose `kind` picks a
model of the `JsonImport` union, so a new kind is one more member there.
"""

from datetime import datetime
from typing import Annotated, Any, Literal, Self

import pydantic
import sqlalchemy as sa
from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from sqlmodel import Field, SQLModel
from typing_extensions import TypeAliasType

from app.errors import Problem
from app.models.api_key import NAME_PATTERN
from app.models.base import ItemSource, ResponseModel, SafeStr, timestamp_column, utcnow
from app.models.click_logs import ClickLogsImport

FileFormat = TypeAliasType("FileFormat", Literal["jsonl", "csv", "parquet"])
RowErrorPart = TypeAliasType("RowErrorPart", Literal["row", "item", "label"])
ColumnName = Annotated[SafeStr, pydantic.Field(min_length=1, max_length=255)]
AnnotatorName = Annotated[
    str,
    pydantic.Field(
        pattern=NAME_PATTERN,
        description="The source annotator the labels are recorded under, e.g. import:crm-2024.",
    ),
]
# Names of the server's SQL connections (LABELWISE_SQL_SOURCES keys), also used in the default
# annotator name "import:<connection>".
CONNECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ParamName = Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
FiniteFloat = Annotated[float, pydantic.Field(allow_inf_nan=False)]
ParamValue = Annotated[
    pydantic.StrictStr | pydantic.StrictBool | pydantic.StrictInt | FiniteFloat | None,
    pydantic.Field(union_mode="left_to_right"),
]

DEFAULT_MAX_ROWS = 100_000
MAX_MAX_ROWS = 10_000_000
MAX_ROW_ERRORS = 100  # row errors kept in a job's result


class ImportUpload(SQLModel, table=True):
    """An uploaded file waiting for (or read by) its import job. Its bytes are in
    ImportUploadChunk rows, so any API replica can accept it and any worker can read it."""

    __tablename__ = "import_upload"

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("project.id"), nullable=False)
    )
    # The job reading it; a retry of that job takes the upload over when it starts.
    job_id: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, sa.ForeignKey("job.id"))
    )
    file_name: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    format: str = Field(sa_column=sa.Column(sa.String(10), nullable=False))
    size_bytes: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    n_chunks: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class ImportUploadChunk(SQLModel, table=True):
    """One slice (at most UPLOAD_CHUNK_BYTES) of an uploaded file, in order of `seq`."""

    __tablename__ = "import_upload_chunk"

    upload_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("import_upload.id"), primary_key=True, nullable=False
        )
    )
    seq: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, nullable=False))
    data: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


# --- requests ---------------------------------------------------------------------------------


class ColumnMapping(BaseModel):
    """Which source columns become the item's fields (and its label)."""

    model_config = ConfigDict(extra="forbid")

    text: ColumnName = pydantic.Field(description="The column holding the text to label.")
    external_id: ColumnName | None = pydantic.Field(
        default=None, description="Your id: importing the same id again updates the item."
    )
    label: ColumnName | None = pydantic.Field(
        default=None,
        description="A column of labels, recorded as annotations of the import's annotator; "
        "an empty cell means no label.",
    )
    metadata: list[ColumnName] = pydantic.Field(
        default_factory=list,
        max_length=100,
        description="Columns copied into the item's metadata under their own names.",
    )

    @model_validator(mode="after")
    def _distinct_metadata(self) -> Self:
        if len(set(self.metadata)) != len(self.metadata):
            raise ValueError("metadata names a column twice")
        return self

    # Echoed in an import job's params as it was sent: without the columns it leaves unused.
    # No return annotation: pydantic would take it as the serialized schema.
    @model_serializer(mode="wrap")
    def _without_unused(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        return {k: v for k, v in handler(self).items() if v is not None}

    def columns(self) -> list[str]:
        """Every column the mapping reads, each once, in a stable order."""
        named = [self.text, self.external_id, self.label, *self.metadata]
        return list(dict.fromkeys(c for c in named if c is not None))


class SqlColumnMapping(ColumnMapping):
    final_label: ColumnName | None = pydantic.Field(
        default=None,
        description="With stable_only: the column holding the label an item ended up with; rows "
        "whose label differs from it are skipped.",
    )

    def columns(self) -> list[str]:
        extra = [self.final_label] if self.final_label is not None else []
        return list(dict.fromkeys([*super().columns(), *extra]))


class FileImportFields(BaseModel):
    """The form fields of a file import (besides `file`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["file"] = pydantic.Field(
        default="file", description="Optional: the upload path makes every import a file one."
    )
    mapping: ColumnMapping
    format: FileFormat | None = pydantic.Field(
        default=None,
        description="jsonl, csv or parquet; by default from the file name's extension "
        "(.jsonl/.ndjson, .csv, .parquet, optionally followed by .gz for jsonl and csv).",
    )
    annotator: AnnotatorName | None = pydantic.Field(
        default=None, description='Default "import:<file name without extension>".'
    )
    source: ItemSource = pydantic.Field(
        default=ItemSource.existing_db, description="The source recorded on the items."
    )


class FileImportForm(FileImportFields):
    """multipart/form-data of a file import (documentation of the request body)."""

    file: bytes = pydantic.Field(description="The file: JSON lines, CSV with a header, or Parquet.")


class SqlImport(BaseModel):
    """Read rows from a database configured on the server, with a parameterised query."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sql"]
    connection: str = pydantic.Field(
        pattern=CONNECTION_PATTERN,
        description="The name of a connection in the server's LABELWISE_SQL_SOURCES; never a URL.",
        examples=["crm"],
    )
    query: SafeStr = pydantic.Field(
        min_length=1,
        max_length=100_000,
        description="One SELECT; `:name` placeholders are bound from params, never interpolated.",
    )
    params: dict[ParamName, ParamValue] = pydantic.Field(default_factory=dict, max_length=100)
    mapping: SqlColumnMapping
    max_rows: int = pydantic.Field(
        default=DEFAULT_MAX_ROWS,
        ge=1,
        le=MAX_MAX_ROWS,
        description="Read at most this many rows; the result says whether the cap cut the query.",
    )
    stable_only: bool = pydantic.Field(
        default=False,
        description="Import only rows whose label equals their final_label (labels that were "
        "not changed later); needs mapping.label and mapping.final_label.",
    )
    annotator: AnnotatorName | None = pydantic.Field(
        default=None, description='Default "import:<connection>".'
    )
    source: ItemSource = pydantic.Field(
        default=ItemSource.existing_db, description="The source recorded on the items."
    )

    @model_validator(mode="after")
    def _stability_needs_both_labels(self) -> Self:
        if self.stable_only and (self.mapping.label is None or self.mapping.final_label is None):
            raise ValueError("stable_only needs mapping.label and mapping.final_label")
        if self.mapping.final_label is not None and not self.stable_only:
            raise ValueError("mapping.final_label is used only with stable_only: true")
        return self


# The JSON-bodied kinds, told apart by `kind` (an unknown kind is a 422).
JsonImport = Annotated[SqlImport | ClickLogsImport, pydantic.Field(discriminator="kind")]


# --- the result -------------------------------------------------------------------------------


class ItemCounts(ResponseModel):
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    failed: int = 0


class LabelCounts(ResponseModel):
    created: int = 0
    replaced: int = 0
    unchanged: int = 0
    failed: int = 0


class RowError(ResponseModel):
    row: int = pydantic.Field(
        description="1-based: the line of a JSONL file, the record after a CSV header, the "
        "row of a Parquet file or of the query's result."
    )
    part: RowErrorPart = pydantic.Field(
        description="row: unreadable or unmapped, nothing stored; item: the item failed; "
        "label: the item was stored but its label was not."
    )
    problem: Problem


class ImportResult(BaseModel):
    """What an import job's `result` holds."""

    rows_read: int = pydantic.Field(description="Rows read from the source.")
    skipped_unstable: int = pydantic.Field(
        default=0, description="Rows skipped by stable_only (label differs from final_label)."
    )
    capped: bool = pydantic.Field(
        default=False, description="True when max_rows stopped the query before its end."
    )
    items: ItemCounts = pydantic.Field(default_factory=ItemCounts)
    labels: LabelCounts = pydantic.Field(default_factory=LabelCounts)
    errors: list[RowError] = pydantic.Field(
        default_factory=list, description=f"The first {MAX_ROW_ERRORS} row errors, by row."
    )
    errors_total: int = 0
    annotator: str
    provenance: dict[str, Any] = pydantic.Field(
        description="What each imported item and label records: kind, name, query_sha256 or "
        "file_sha256, job_id, imported_at."
    )
