"""Imports: files and SQL queries become items, and their labels annotations of a named
source annotator, in a job that commits chunk by chunk with progress.

The core, `import_rows`, takes chunks of `ImportRow`s (an item-shaped entry and an optional
label per source row) from any adapter: it upserts each chunk's items through the ingest
service (same dedupe rules as POST /items) and writes their labels through the annotation
service (as POST /annotations does, so statuses and resolved labels follow), both in one
transaction per chunk. Re-running an import is idempotent: the same external ids and texts
are `unchanged` items, the same labels of the same annotator `unchanged` annotations.

File uploads are kept in the database (import_upload_chunk) between the request and the job,
so the API replica that took the upload and the worker that reads it need share nothing but
the database; the chunks are deleted when the job ends.
"""

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import IO, Any, cast

import sqlalchemy as sa
from sqlmodel import Session, col, or_, select

from app.errors import AppError, ErrorDetail, Problem, ValidationFailed, make_problem
from app.jobs.context import JobContext, JobRunner
from app.models.annotation import AnnotationIn
from app.models.base import AnnotationSource, ItemSource, utcnow
from app.models.click_logs import ClickLogsImport
from app.models.imports import (
    MAX_ROW_ERRORS,
    ColumnMapping,
    FileImportFields,
    ImportResult,
    ImportUpload,
    ImportUploadChunk,
    ItemCounts,
    JsonImport,
    LabelCounts,
    RowError,
    SqlImport,
)
from app.models.item import IngestReport
from app.models.job import FINISHED, Job, JobKind
from app.models.project import Project
from app.services import annotations, click_logs, jobs
from app.services.api_keys import Principal
from app.services.items import IN_CLAUSE_CHUNK, ITEM_TABLE, ingest_items
from app.services.project_loading import load_project
from app.settings import Settings
from app.sources import files, sql
from app.sources.rows import RowChunk

UPLOAD_CHUNK_BYTES = 1024 * 1024
# Uploads whose job never read them to the end (cancelled while queued, interrupted) wait
# this long for a retry, then the next upload removes them.
UPLOAD_RETENTION = timedelta(days=1)
CHUNK_TABLE: sa.Table = ImportUploadChunk.__table__  # type: ignore[attr-defined]
UPLOAD_TABLE: sa.Table = ImportUpload.__table__  # type: ignore[attr-defined]
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.@-]+")


class UploadGone(AppError):
    status = 410
    slug = "import-upload-gone"


def _row_problem(detail: str) -> Problem:
    return make_problem(422, detail, slug="validation-error")


# --- rows: from source columns to items and labels -----------------------------------------------


@dataclass(slots=True)
class ImportRow:
    """A source row ready for the core: an ItemIn-shaped entry and its label, or why the row
    could not become one (`item` None). `label_problem`: the label alone is unusable."""

    number: int
    item: dict[str, Any] | None
    label: str | None = None
    problem: str | None = None
    label_problem: str | None = None


@dataclass(frozen=True, slots=True)
class RowMapping:
    text: str
    external_id: str | None = None
    label: str | None = None
    metadata: tuple[str, ...] = ()
    final_label: str | None = None
    stable_only: bool = False

    @classmethod
    def of(cls, mapping: ColumnMapping, *, stable_only: bool = False) -> "RowMapping":
        return cls(
            text=mapping.text,
            external_id=mapping.external_id,
            label=mapping.label,
            metadata=tuple(mapping.metadata),
            final_label=getattr(mapping, "final_label", None),
            stable_only=stable_only,
        )


class _BadValue(ValueError):
    pass


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _external_id(values: dict[str, Any], column: str) -> str | None:
    if column not in values:
        raise _BadValue(f"The row has no {column!r} (external_id) column.")
    value = values[column]
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    raise _BadValue(f"external_id: column {column!r} holds {_kind(value)}, not text or an integer.")


def _text(values: dict[str, Any], column: str) -> str:
    if column not in values:
        raise _BadValue(f"The row has no {column!r} (text) column.")
    value = values[column]
    if value is None:
        raise _BadValue(f"text: column {column!r} is empty.")
    if not isinstance(value, str):
        raise _BadValue(f"text: column {column!r} holds {_kind(value)}, not text.")
    return value


def _label(value: Any, column: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _BadValue(f"label: column {column!r} holds {_kind(value)}, not a label name.")
    return value.strip() or None


class RowMapper:
    """Turns source rows into ImportRows by a column mapping; drops unstable rows (stable_only)
    and counts what it read and dropped."""

    def __init__(self, mapping: RowMapping, *, item_source: ItemSource) -> None:
        self.mapping = mapping
        self.item_source = item_source.value
        self.rows_read = 0
        self.skipped_unstable = 0

    def _unstable(self, values: dict[str, Any]) -> bool:
        m = self.mapping
        assert m.label is not None and m.final_label is not None
        try:
            return _label(values.get(m.label), m.label) != _label(
                values.get(m.final_label), m.final_label
            )
        except _BadValue:
            return values.get(m.label) != values.get(m.final_label)

    def __call__(self, chunk: RowChunk) -> list[ImportRow]:
        m = self.mapping
        rows: list[ImportRow] = []
        for source_row in chunk:
            self.rows_read += 1
            values = source_row.values
            if values is None:
                rows.append(ImportRow(source_row.number, None, problem=source_row.problem))
                continue
            if m.stable_only and self._unstable(values):
                self.skipped_unstable += 1
                continue
            try:
                item: dict[str, Any] = {"text": _text(values, m.text), "source": self.item_source}
                if m.external_id is not None:
                    external_id = _external_id(values, m.external_id)
                    if external_id is not None:
                        item["external_id"] = external_id
            except _BadValue as error:
                rows.append(ImportRow(source_row.number, None, problem=str(error)))
                continue
            if m.metadata:
                item["metadata"] = {c: values[c] for c in m.metadata if c in values}
            row = ImportRow(source_row.number, item)
            if m.label is not None:
                try:
                    row.label = _label(values.get(m.label), m.label)
                except _BadValue as error:
                    row.label_problem = str(error)
            rows.append(row)
        return rows


# --- the core ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportSpec:
    """Where the rows go and under which name and provenance their labels are recorded."""

    project_id: int
    annotator: str
    provenance: dict[str, Any]
    annotation_source: AnnotationSource = AnnotationSource.import_


@dataclass(slots=True)
class ImportTally:
    items: ItemCounts = field(default_factory=ItemCounts)
    labels: LabelCounts = field(default_factory=LabelCounts)
    errors: list[RowError] = field(default_factory=list)
    errors_total: int = 0

    def add_errors(self, errors: list[RowError]) -> None:
        self.errors_total += len(errors)
        room = MAX_ROW_ERRORS - len(self.errors)
        if room > 0:
            self.errors.extend(sorted(errors, key=lambda e: e.row)[:room])


LabelOutcome = tuple[int, str, Problem | None]  # row number, status, problem


def import_rows(
    context: JobContext,
    *,
    chunks: Iterable[list[ImportRow]],
    spec: ImportSpec,
    fraction_done: Callable[[], float],
) -> ImportTally:
    """Import chunk after chunk, one transaction and one progress point each; then queue the
    jobs new labels call for (consensus, retraining), run once the import has succeeded."""
    tally = ImportTally()
    context.progress(0.0)
    for rows in chunks:
        if rows:
            _import_chunk(context, rows=rows, spec=spec, tally=tally)
        context.progress(min(fraction_done(), 0.99))
    if tally.labels.created or tally.labels.replaced:
        with context.database.session(write=True) as session:
            project = load_project(session, project_id=spec.project_id)
            follow_ups = annotations.queue_follow_ups(session, project=project)
            session.commit()
        context.follow_ups.extend(job.id for job in follow_ups if job.id is not None)
    return tally


def _import_chunk(
    context: JobContext, *, rows: list[ImportRow], spec: ImportSpec, tally: ImportTally
) -> None:
    errors: list[RowError] = []
    by_number: dict[int, ImportRow] = {}
    entries: list[tuple[int, Any]] = []
    for row in rows:
        if row.item is None:
            tally.items.failed += 1
            problem = _row_problem(row.problem or "The row cannot be read.")
            errors.append(RowError(row=row.number, part="row", problem=problem))
        else:
            by_number[row.number] = row
            entries.append((row.number, row.item))
    # Keyed by the rows a write covered: a replayed batch overwrites its own outcome.
    label_parts: dict[frozenset[int], list[LabelOutcome]] = {}
    if entries:
        with context.database.session(write=True) as session:

            def write_labels(report: IngestReport) -> None:
                outcome = _write_labels(session, spec=spec, report=report, rows=by_number)
                label_parts[frozenset(r.index for r in report.results)] = outcome

            report = ingest_items(
                session,
                project_id=spec.project_id,
                entries=entries,
                max_text_chars=context.settings.max_text_chars,
                then=write_labels,
            )
        for result in report.results:
            counts = tally.items
            if result.status == "duplicate":
                counts.duplicates += 1
            else:
                setattr(counts, result.status, getattr(counts, result.status) + 1)
            if result.problem is not None:
                problem = result.problem.model_copy(update={"errors": None})
                errors.append(RowError(row=result.index, part="item", problem=problem))
    for outcomes in label_parts.values():
        for number, status, label_problem in outcomes:
            setattr(tally.labels, status, getattr(tally.labels, status) + 1)
            if label_problem is not None:
                shown = label_problem.model_copy(update={"errors": None})
                errors.append(RowError(row=number, part="label", problem=shown))
    tally.add_errors(errors)


def _write_labels(
    session: Session, *, spec: ImportSpec, report: IngestReport, rows: dict[int, ImportRow]
) -> list[LabelOutcome]:
    """In the chunk's transaction: the provenance of the items this import created or changed,
    and the rows' labels as annotations. Returns each label's outcome."""
    project = load_project(session, project_id=spec.project_id)
    labels = set(project.labels)
    outcomes: list[LabelOutcome] = []
    entries: list[AnnotationIn] = []
    numbers: list[int] = []
    written: list[int] = []
    for result in report.results:
        row = rows[result.index]
        if result.id is None:
            continue  # the item failed: its row error says why
        if result.status in ("created", "updated"):
            written.append(result.id)
        if row.label_problem is not None:
            outcomes.append((row.number, "failed", _row_problem(row.label_problem)))
        elif row.label is None:
            continue
        elif row.label not in labels:
            detail = f"Unknown label {row.label!r}; the project's labels are {project.labels}."
            outcomes.append((row.number, "failed", _row_problem(detail)))
        else:
            entries.append(
                AnnotationIn(
                    item_id=result.id,
                    label=row.label,
                    annotator=spec.annotator,
                    source=spec.annotation_source,
                )
            )
            numbers.append(row.number)
    for start in range(0, len(written), IN_CLAUSE_CHUNK):
        session.execute(
            sa.update(ITEM_TABLE)
            .where(ITEM_TABLE.c.id.in_(written[start : start + IN_CLAUSE_CHUNK]))
            .values(provenance=spec.provenance)
        )
    if entries:
        report_ = annotations.write_annotations(
            session,
            project=project,
            default_annotator=spec.annotator,
            entries=entries,
            provenance=spec.provenance,
        )
        outcomes.extend((numbers[r.index], r.status, r.problem) for r in report_.results)
    session.flush()
    return outcomes


def _result(
    *, mapper: RowMapper, tally: ImportTally, spec: ImportSpec, capped: bool = False
) -> dict[str, Any]:
    return ImportResult(
        rows_read=mapper.rows_read,
        skipped_unstable=mapper.skipped_unstable,
        capped=capped,
        items=tally.items,
        labels=tally.labels,
        errors=tally.errors,
        errors_total=tally.errors_total,
        annotator=spec.annotator,
        provenance=spec.provenance,
    ).model_dump(mode="json", exclude_none=True)


# --- request time --------------------------------------------------------------------------------


def default_annotator(name: str) -> str:
    """ "import:<name>", with what an annotator name cannot hold replaced by "-"."""
    cleaned = _UNSAFE_NAME.sub("-", name).strip("-._@") or "file"
    return f"import:{cleaned}"[:100]


def _require_columns(available: list[str], mapping: ColumnMapping, *, where: str) -> None:
    """422 naming each mapped column that `available` lacks."""
    named: list[tuple[list[str | int], str]] = [(["text"], mapping.text)]
    for key in ("external_id", "label", "final_label"):
        column = getattr(mapping, key, None)
        if isinstance(column, str):
            named.append(([key], column))
    named += [(["metadata", i], column) for i, column in enumerate(mapping.metadata)]
    present = set(available)
    errors = [
        ErrorDetail(loc=["body", "mapping", *loc], msg=f"{where} has no column {column!r}")
        for loc, column in named
        if column not in present
    ]
    if errors:
        shown = ", ".join(repr(c) for c in available[:50]) + (
            ", ..." if len(available) > 50 else ""
        )
        raise ValidationFailed(
            f"mapping: {'; '.join(e.msg for e in errors)} (its columns: {shown}).", errors=errors
        )


def start_file_import(
    session: Session,
    runner: JobRunner,
    *,
    project: Project,
    principal: Principal,
    fields: FileImportFields,
    file: IO[bytes],
    file_name: str | None,
    settings: Settings,
) -> Job:
    """Check the file's format and columns, store it in the database in chunks, and queue its
    import; a bad format, an empty file or a mapped column the file lacks is a 422 and
    nothing is stored."""
    assert project.id is not None
    name = "".join(c for c in files.base_name(file_name or "") if c.isprintable()) or "upload"
    file_format = fields.format or files.format_from_name(name)
    if file_format is None:
        raise ValidationFailed(
            f"format: cannot tell the format from the file name {name!r}; send a format "
            "field (jsonl, csv or parquet).",
            errors=[ErrorDetail(loc=["body", "format"], msg="give jsonl, csv or parquet")],
        )
    columns = files.read_columns(file_format, file, max_line_bytes=settings.max_ndjson_line_bytes)
    if columns is not None:
        what = "the CSV header" if file_format == "csv" else "the Parquet schema"
        _require_columns(columns, fields.mapping, where=what)
    annotator = fields.annotator or default_annotator(files.stem(name))
    _purge_stale_uploads(session)
    upload = ImportUpload(
        project_id=project.id,
        file_name=name[:255],
        format=file_format,
        size_bytes=0,
        sha256="",
        n_chunks=0,
    )
    session.add(upload)
    session.flush()
    assert upload.id is not None
    digest = hashlib.sha256()
    file.seek(0)
    while data := file.read(UPLOAD_CHUNK_BYTES):
        session.execute(
            sa.insert(CHUNK_TABLE).values(upload_id=upload.id, seq=upload.n_chunks, data=data)
        )
        digest.update(data)
        upload.size_bytes += len(data)
        upload.n_chunks += 1
    upload.sha256 = digest.hexdigest()
    job = jobs.new_job(
        session,
        project_id=project.id,
        kind=JobKind.import_file,
        params={
            "kind": "file",
            "upload_id": upload.id,
            "file_name": upload.file_name,
            "format": file_format,
            "size_bytes": upload.size_bytes,
            "file_sha256": upload.sha256,
            "mapping": fields.mapping.model_dump(mode="json", exclude_none=True),
            "annotator": annotator,
            "source": fields.source.value,
        },
        created_by=principal.name,
    )
    upload.job_id = job.id
    session.add(upload)
    session.commit()
    assert job.id is not None
    runner.enqueue(job.id)
    return job


def start_json_import(
    session: Session,
    runner: JobRunner,
    *,
    project: Project,
    principal: Principal,
    request: JsonImport,
    settings: Settings,
) -> Job:
    """Queue an import given as JSON, by its kind."""
    match request:
        case SqlImport():
            return start_sql_import(
                session,
                runner,
                project=project,
                principal=principal,
                request=request,
                settings=settings,
            )
        case ClickLogsImport():
            return click_logs.start_click_logs_import(
                session, runner, project=project, principal=principal, request=request
            )


def start_sql_import(
    session: Session,
    runner: JobRunner,
    *,
    project: Project,
    principal: Principal,
    request: SqlImport,
    settings: Settings,
) -> Job:
    """Queue a SQL import: an unknown connection is a 404, placeholders and params that do
    not match a 422, and nothing is queued."""
    sql.resolve_source(settings.sql_sources, request.connection)
    sql.check_params(request.query, request.params)
    params = request.model_dump(mode="json", exclude_none=True)
    params["annotator"] = request.annotator or default_annotator(request.connection)
    params["query_sha256"] = hashlib.sha256(request.query.encode()).hexdigest()
    return jobs.submit_job(
        session,
        runner,
        project_id=project.id,
        kind=JobKind.import_sql,
        params=params,
        created_by=principal.name,
    )


# --- uploads -------------------------------------------------------------------------------------


def _purge_stale_uploads(session: Session) -> None:
    """Remove uploads that no job will read: their job ended (or never existed) more than
    UPLOAD_RETENTION ago without reading them to the end (flushes)."""
    cutoff = utcnow() - UPLOAD_RETENTION
    stale = list(
        session.exec(
            select(ImportUpload.id)
            .outerjoin(Job, col(Job.id) == col(ImportUpload.job_id))
            .where(
                col(ImportUpload.created_at) < cutoff,
                or_(
                    col(Job.id).is_(None),
                    col(Job.status).in_(FINISHED) & (col(Job.finished_at) < cutoff),
                ),
            )
        )
    )
    for upload_id in stale:
        if upload_id is not None:
            _delete_upload_rows(session, upload_id)


def _delete_upload_rows(session: Session, upload_id: int) -> None:
    session.execute(sa.delete(CHUNK_TABLE).where(CHUNK_TABLE.c.upload_id == upload_id))
    session.execute(sa.delete(UPLOAD_TABLE).where(UPLOAD_TABLE.c.id == upload_id))


def _gone(upload_id: int) -> UploadGone:
    return UploadGone(
        f"The uploaded file of this import (upload {upload_id}) is no longer stored: its "
        "import already ran to its end, or it waited too long. Upload the file again."
    )


def _claim_upload(context: JobContext, upload_id: int) -> ImportUpload:
    """The upload, now read by this job (a retry takes it over from the failed job)."""
    with context.database.session(write=True) as session:
        upload = session.get(ImportUpload, upload_id)
        if upload is None:
            raise _gone(upload_id)
        upload.job_id = context.job_id
        session.add(upload)
        session.commit()
        return upload


def _upload_bytes(context: JobContext, upload: ImportUpload) -> Iterator[bytes]:
    """The upload's bytes, one stored chunk at a time, each in its own short read."""
    assert upload.id is not None
    for seq in range(upload.n_chunks):
        with context.database.session() as session:
            data = session.execute(
                sa.select(CHUNK_TABLE.c.data).where(
                    CHUNK_TABLE.c.upload_id == upload.id, CHUNK_TABLE.c.seq == seq
                )
            ).scalar()
        if data is None:
            raise _gone(upload.id)
        yield bytes(data)


def _release_upload(context: JobContext, upload_id: int) -> None:
    """Delete the upload once its job has ended, unless a newer job has taken it over."""
    with context.database.session(write=True) as session:
        owner = session.execute(
            sa.select(UPLOAD_TABLE.c.job_id).where(UPLOAD_TABLE.c.id == upload_id)
        ).first()
        if owner is not None and owner[0] in (None, context.job_id):
            _delete_upload_rows(session, upload_id)
        session.commit()


# --- the jobs ------------------------------------------------------------------------------------


def _provenance(context: JobContext, **fields: Any) -> dict[str, Any]:
    return {**fields, "job_id": context.job_id, "imported_at": utcnow().isoformat()}


def run_file_import(context: JobContext) -> dict[str, Any]:
    """Job function: read the uploaded file chunk by chunk into items and labels; the upload
    is deleted when the job ends, whichever way."""
    p = context.params
    upload_id = int(p["upload_id"])
    assert context.project_id is not None
    try:
        upload = _claim_upload(context, upload_id)
        mapping = ColumnMapping.model_validate(p["mapping"])
        spec = ImportSpec(
            project_id=context.project_id,
            annotator=p["annotator"],
            provenance=_provenance(
                context, kind="file", name=upload.file_name, file_sha256=upload.sha256
            ),
        )
        reader = files.FileRows(
            cast(files.FileFormat, upload.format),  # checked when the file was uploaded
            _upload_bytes(context, upload),
            total_bytes=upload.size_bytes,
            chunk_size=context.settings.ingest_chunk_size,
            max_line_bytes=context.settings.max_ndjson_line_bytes,
            columns=mapping.columns() if upload.format == "parquet" else None,
        )
        mapper = RowMapper(RowMapping.of(mapping), item_source=ItemSource(p["source"]))
        tally = import_rows(
            context,
            chunks=(mapper(chunk) for chunk in reader),
            spec=spec,
            fraction_done=lambda: reader.fraction_done,
        )
    finally:
        _release_upload(context, upload_id)
    return _result(mapper=mapper, tally=tally, spec=spec)


def run_sql_import(context: JobContext) -> dict[str, Any]:
    """Job function: stream the query's rows from the read-only connection into items and
    labels, at most max_rows of them."""
    assert context.project_id is not None
    request = SqlImport.model_validate(
        {k: v for k, v in context.params.items() if k in SqlImport.model_fields}
    )
    source = sql.resolve_source(context.settings.sql_sources, request.connection)
    spec = ImportSpec(
        project_id=context.project_id,
        annotator=context.params["annotator"],
        provenance=_provenance(
            context,
            kind="sql",
            name=request.connection,
            query_sha256=context.params["query_sha256"],
        ),
    )
    mapper = RowMapper(
        RowMapping.of(request.mapping, stable_only=request.stable_only),
        item_source=request.source,
    )
    with sql.open_query(
        source,
        query=request.query,
        params=request.params,
        max_rows=request.max_rows,
        chunk_size=context.settings.ingest_chunk_size,
    ) as result:
        repeated = sorted({c for c in result.columns if result.columns.count(c) > 1})
        ambiguous = [c for c in request.mapping.columns() if c in repeated]
        if ambiguous:
            raise ValidationFailed(
                f"mapping: the query's result has more than one column named {ambiguous[0]!r}; "
                "give them distinct names (AS ...)."
            )
        _require_columns(result.columns, request.mapping, where="the query's result")
        tally = import_rows(
            context,
            chunks=(mapper(chunk) for chunk in result),
            spec=spec,
            fraction_done=lambda: result.rows_read / request.max_rows,
        )
    return _result(mapper=mapper, tally=tally, spec=spec, capped=result.capped)
