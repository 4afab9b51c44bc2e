"""The import jobs (file, SQL): source rows become items, and their labels annotations of a
named source annotator, chunk by chunk with progress.

The core, `import_rows`, takes chunks of `ImportRow`s (app/sources/mapping.py) from any
adapter: it upserts each chunk's items through the ingest service (same dedupe rules as POST
/items) and writes their labels through the annotation service (as POST /annotations does, so
statuses and resolved labels follow), both in one transaction per chunk. Re-running an import
is idempotent: the same external ids and texts are `unchanged` items, the same labels of the
same annotator `unchanged` annotations.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlmodel import Session

from app.errors import Problem, ValidationFailed
from app.jobs.context import JobContext
from app.models.annotation import AnnotationIn
from app.models.base import AnnotationSource, utcnow
from app.models.imports import MAX_ROW_ERRORS, ImportResult, ItemCounts, LabelCounts, RowError
from app.models.item import IngestReport
from app.models.job_kinds import (
    ImportFileParams,
    ImportFileResult,
    ImportSqlParams,
    ImportSqlResult,
)
from app.services import annotation_writer, annotations, uploads
from app.services.imports import require_columns
from app.services.items import ingest_items, record_provenance
from app.services.project_loading import load_project
from app.sources import files, sql
from app.sources.mapping import ImportRow, RowMapper, RowMapping

Result = TypeVar("Result", bound=ImportResult)


def _row_problem(detail: str) -> Problem:
    return ValidationFailed.problem(detail)


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
    for result in report.results:
        row = rows[result.index]
        if result.id is None:
            continue  # the item failed: its row error says why
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
    record_provenance(session, report=report, provenance=spec.provenance)
    if entries:
        report_ = annotation_writer.write_annotations(
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
    model: type[Result],
    *,
    mapper: RowMapper,
    tally: ImportTally,
    spec: ImportSpec,
    capped: bool = False,
) -> Result:
    return model(
        rows_read=mapper.rows_read,
        skipped_unstable=mapper.skipped_unstable,
        capped=capped,
        items=tally.items,
        labels=tally.labels,
        errors=tally.errors,
        errors_total=tally.errors_total,
        annotator=spec.annotator,
        provenance=spec.provenance,
    )


# --- the jobs ------------------------------------------------------------------------------------


def _provenance(context: JobContext, **fields: Any) -> dict[str, Any]:
    return {**fields, "job_id": context.job_id, "imported_at": utcnow().isoformat()}


def run_file_import(context: JobContext) -> ImportFileResult:
    """Job function: read the uploaded file chunk by chunk into items and labels; the upload
    is deleted when the job ends, whichever way."""
    asked = context.read_params(ImportFileParams)
    upload_id = asked.upload_id
    assert context.project_id is not None
    try:
        upload = uploads.claim_upload(context.database, upload_id=upload_id, job_id=context.job_id)
        mapping = asked.mapping
        spec = ImportSpec(
            project_id=context.project_id,
            annotator=asked.annotator,
            provenance=_provenance(
                context, kind="file", name=upload.file_name, file_sha256=upload.sha256
            ),
        )
        reader = files.FileRows(
            cast(files.FileFormat, upload.format),  # checked when the file was uploaded
            uploads.upload_bytes(context.database, upload),
            total_bytes=upload.size_bytes,
            chunk_size=context.settings.ingest_chunk_size,
            max_line_bytes=context.settings.max_ndjson_line_bytes,
            columns=mapping.columns() if upload.format == "parquet" else None,
        )
        mapper = RowMapper(RowMapping.of(mapping), item_source=asked.source)
        tally = import_rows(
            context,
            chunks=(mapper(chunk) for chunk in reader),
            spec=spec,
            fraction_done=lambda: reader.fraction_done,
        )
    finally:
        uploads.release_upload(context.database, upload_id=upload_id, job_id=context.job_id)
    return _result(ImportFileResult, mapper=mapper, tally=tally, spec=spec)


def run_sql_import(context: JobContext) -> ImportSqlResult:
    """Job function: stream the query's rows from the read-only connection into items and
    labels, at most max_rows of them."""
    assert context.project_id is not None
    request = context.read_params(ImportSqlParams)
    source = sql.resolve_source(context.settings.sql_sources, request.connection)
    spec = ImportSpec(
        project_id=context.project_id,
        annotator=request.annotator,
        provenance=_provenance(
            context,
            kind="sql",
            name=request.connection,
            query_sha256=request.query_sha256,
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
        timeout_seconds=context.settings.sql_source_timeout_seconds,
    ) as result:
        repeated = sorted({c for c in result.columns if result.columns.count(c) > 1})
        ambiguous = [c for c in request.mapping.columns() if c in repeated]
        if ambiguous:
            raise ValidationFailed(
                f"mapping: the query's result has more than one column named {ambiguous[0]!r}; "
                "give them distinct names (AS ...)."
            )
        require_columns(result.columns, request.mapping, where="the query's result")
        tally = import_rows(
            context,
            chunks=(mapper(chunk) for chunk in result),
            spec=spec,
            fraction_done=lambda: result.rows_read / request.max_rows,
        )
    return _result(ImportSqlResult, mapper=mapper, tally=tally, spec=spec, capped=result.capped)
