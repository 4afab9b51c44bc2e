"""Imports, request side: check a file upload or a SQL query and queue its import job; a
click-log import is queued by app/services/click_logs.py.

The job (app/tasks/imports.py) maps each source row to an item and its label
(app/sources/mapping.py), upserts the items through the ingest service (same dedupe rules as
POST /items) and writes their labels through the annotation service, one transaction per
chunk. Re-running an import is idempotent. A file waits in the database between the request
and the job (app/services/uploads.py).
"""

import hashlib
import re
from typing import IO

from sqlmodel import Session

from app.errors import ErrorDetail, ValidationFailed
from app.jobs.context import JobRunner
from app.models.click_logs import ClickLogsImport
from app.models.imports import ColumnMapping, FileImportFields, JsonImport, SqlImport
from app.models.job import Job, JobKind
from app.models.job_kinds import ImportFileParams, ImportSqlParams
from app.models.project import Project
from app.services import click_logs, jobs, uploads
from app.services.api_keys import Principal
from app.settings import Settings
from app.sources import files, sql

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.@-]+")


def default_annotator(name: str) -> str:
    """ "import:<name>", with what an annotator name cannot hold replaced by "-"."""
    cleaned = _UNSAFE_NAME.sub("-", name).strip("-._@") or "file"
    return f"import:{cleaned}"[:100]


def require_columns(available: list[str], mapping: ColumnMapping, *, where: str) -> None:
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
        require_columns(columns, fields.mapping, where=what)
    annotator = fields.annotator or default_annotator(files.stem(name))
    upload = uploads.store_upload(
        session, project_id=project.id, file_name=name[:255], file_format=file_format, file=file
    )
    assert upload.id is not None
    job = jobs.new_job(
        session,
        project_id=project.id,
        kind=JobKind.import_file,
        params=ImportFileParams(
            upload_id=upload.id,
            file_name=upload.file_name,
            format=file_format,
            size_bytes=upload.size_bytes,
            file_sha256=upload.sha256,
            mapping=fields.mapping,
            annotator=annotator,
            source=fields.source,
        ),
        created_by=principal.name,
    )
    upload.job_id = job.id
    session.add(upload)
    return jobs.commit_and_enqueue(session, runner, job)


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
    params = ImportSqlParams(
        **request.model_dump(exclude_none=True, exclude={"annotator"}),
        annotator=request.annotator or default_annotator(request.connection),
        query_sha256=hashlib.sha256(request.query.encode()).hexdigest(),
    )
    return jobs.submit_job(
        session,
        runner,
        project_id=project.id,
        kind=JobKind.import_sql,
        params=params,
        created_by=principal.name,
    )
