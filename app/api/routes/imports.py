"""Imports: a JSON body to `.../imports` is an import of the kind it names (sql, click_logs);
a multipart upload to `.../imports/upload` is a file import. Either answers 202 with the job.

Two operations, one body type each, so generated clients get one typed method per kind of
body. A multipart upload to `.../imports` (how file imports were sent before the split) is
still served as a file import; the spec lists only the JSON body there.

Admin and service keys only: an import writes items and labels in another annotator's name.
"""

from typing import Any

import pydantic
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from app.api.routes.jobs import ACCEPTED, accepted
from app.api.routing import PROJECT_PROBLEMS, ProblemRouter
from app.deps import ProjectDep, RunnerDep, SessionDep, SettingsDep, WriterDep
from app.errors import (
    ErrorDetail,
    LabelsMissing,
    SqlSourceMisconfigured,
    UnreadableFile,
    UnsupportedMediaType,
    ValidationFailed,
    problem_responses,
)
from app.models.imports import FileImportFields, JsonImport
from app.models.job import JobPublic
from app.services import imports
from app.sources.json_bodies import strict_loads

router = ProblemRouter(
    prefix="/v1/projects/{project_id}/imports",
    tags=["imports"],
    responses=PROJECT_PROBLEMS,
)

JSON = "application/json"
MULTIPART = "multipart/form-data"
FORM_FIELDS = set(FileImportFields.model_fields) | {"file"}
JSON_IMPORT: pydantic.TypeAdapter[JsonImport] = pydantic.TypeAdapter(JsonImport)

FILE_IMPORT_BODY = {
    "required": True,
    "description": "A JSONL, CSV or Parquet file and its column mapping (`mapping` is a JSON "
    "part).",
    "content": {
        MULTIPART: {
            "schema": {"$ref": "#/components/schemas/FileImportForm"},
            "encoding": {"mapping": {"contentType": JSON}},
        },
    },
}

JSON_IMPORT_BODY = {
    "required": True,
    "description": "A SQL query's rows (`kind: sql`) or search click logs (`kind: click_logs`).",
    "content": {
        JSON: {
            "schema": {"$ref": "#/components/schemas/JsonImport"},
            "examples": {
                "sql": {
                    "value": {
                        "kind": "sql",
                        "connection": "crm",
                        "query": "SELECT id, body, category FROM tickets "
                        "WHERE created_at >= :since",
                        "params": {"since": "2024-01-01"},
                        "mapping": {"external_id": "id", "text": "body", "label": "category"},
                        "max_rows": 100000,
                    }
                },
                "click_logs": {
                    "value": {
                        "kind": "click_logs",
                        "sessions": [
                            {
                                "query": "running shoes",
                                "results": [
                                    {
                                        "doc_id": "doc-17",
                                        "position": 1,
                                        "clicked": False,
                                        "dwell_time": 0,
                                    },
                                    {
                                        "doc_id": "doc-42",
                                        "position": 2,
                                        "clicked": True,
                                        "dwell_time": 95.5,
                                    },
                                ],
                            }
                        ],
                        "min_dwell_seconds": 30,
                        "max_position": 3,
                    }
                },
            },
        },
    },
}


def _invalid(error: pydantic.ValidationError, *, strip: Any = None) -> RequestValidationError:
    """A pydantic error as the request's 422, its locations under "body" (without a leading
    `strip`: the discriminator tag a union adds)."""
    errors = []
    for e in error.errors(include_url=False, include_context=False, include_input=False):
        loc = tuple(e["loc"])
        if strip is not None and loc[:1] == (strip,):
            loc = loc[1:]
        errors.append({**e, "loc": ("body", *loc)})
    return RequestValidationError(errors)


def _file_fields(form: FormData) -> tuple[FileImportFields, UploadFile]:
    """Validate the form: its fields (mapping is JSON text), once each, and one file."""
    unknown = sorted(set(form.keys()) - FORM_FIELDS)
    repeated = sorted(k for k in set(form.keys()) if len(form.getlist(k)) > 1)
    errors = [ErrorDetail(loc=["body", k], msg="not a field of a file import") for k in unknown]
    errors += [ErrorDetail(loc=["body", k], msg="given more than once") for k in repeated]
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        msg = "send the file as a file part" if upload is not None else "Field required"
        errors.append(ErrorDetail(loc=["body", "file"], msg=msg))
    fields: dict[str, Any] = {}
    for key, value in form.items():
        if key == "file" or key not in FORM_FIELDS:
            continue
        if not isinstance(value, str):
            errors.append(ErrorDetail(loc=["body", key], msg="send a text field, not a file"))
        elif key == "mapping":
            try:
                fields[key] = strict_loads(value)
            except ValueError as error:
                errors.append(ErrorDetail(loc=["body", key], msg=f"not valid JSON: {error}"))
        else:
            fields[key] = value
    if errors:
        raise ValidationFailed(
            "; ".join(f"{'.'.join(map(str, e.loc[1:]))}: {e.msg}" for e in errors), errors=errors
        )
    try:
        parsed = FileImportFields.model_validate(fields)
    except pydantic.ValidationError as error:
        raise _invalid(error) from None
    assert isinstance(upload, UploadFile)
    return parsed, upload


def _json_request(body: bytes) -> JsonImport:
    try:
        value = strict_loads(body)
    except ValueError as error:
        raise ValidationFailed(
            f"The body is not valid JSON: {error}.",
            errors=[ErrorDetail(loc=["body"], msg=str(error))],
        ) from None
    if isinstance(value, dict) and value.get("kind") == "file":
        raise ValidationFailed(
            "kind: a file import is uploaded as multipart/form-data to .../imports/upload "
            "(fields mapping, file).",
            errors=[
                ErrorDetail(
                    loc=["body", "kind"], msg="file imports are multipart/form-data uploads"
                )
            ],
        )
    try:
        return JSON_IMPORT.validate_python(value)
    except pydantic.ValidationError as error:
        # A discriminated union puts the kind first in each location; the body has no such key.
        kind = value.get("kind") if isinstance(value, dict) else None
        raise _invalid(error, strip=kind) from None


@router.post(
    "",
    status_code=202,
    openapi_extra={"requestBody": JSON_IMPORT_BODY},
    responses={
        **ACCEPTED,
        **problem_responses(
            UnsupportedMediaType, UnreadableFile, LabelsMissing, SqlSourceMisconfigured
        ),
    },
)
async def create_import(
    principal: WriterDep,
    session: SessionDep,
    runner: RunnerDep,
    settings: SettingsDep,
    project: ProjectDep,
    request: Request,
    response: Response,
) -> JobPublic:
    """Import a SQL query's rows or search click logs (202: a job). Files are uploaded to
    `.../imports/upload` (a multipart upload sent here is still served as a file import)."""
    media_type = _media_type(request)
    if media_type not in (MULTIPART, JSON):
        raise UnsupportedMediaType(
            f"Send a SQL or click_logs import as {JSON} (a file import as {MULTIPART} to "
            f"{request.url.path.rstrip('/')}/upload); not {_named(media_type)}."
        )
    # The body may be slow to arrive: hold no transaction (on SQLite, no write lock) meanwhile.
    await run_in_threadpool(session.commit)
    if media_type == MULTIPART:
        return await _file_import(request, response, principal, session, runner, settings, project)
    json_request = _json_request(await request.body())
    job = await run_in_threadpool(
        imports.start_json_import,
        session,
        runner,
        project=project,
        principal=principal,
        request=json_request,
        settings=settings,
    )
    return accepted(response, job)


@router.post(
    "/upload",
    status_code=202,
    openapi_extra={"requestBody": FILE_IMPORT_BODY},
    responses={**ACCEPTED, **problem_responses(UnsupportedMediaType, UnreadableFile)},
)
async def create_file_import(
    principal: WriterDep,
    session: SessionDep,
    runner: RunnerDep,
    settings: SettingsDep,
    project: ProjectDep,
    request: Request,
    response: Response,
) -> JobPublic:
    """Import a file: JSONL, CSV or Parquet, JSONL and CSV optionally gzipped (202: a job)."""
    media_type = _media_type(request)
    if media_type != MULTIPART:
        raise UnsupportedMediaType(
            f"Upload a file import as {MULTIPART} (fields mapping, file; a SQL or click_logs "
            f"import is {JSON} to .../imports); not {_named(media_type)}."
        )
    await run_in_threadpool(session.commit)
    return await _file_import(request, response, principal, session, runner, settings, project)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _named(media_type: str) -> str:
    return media_type or "a body without a content type"


async def _file_import(
    request: Request,
    response: Response,
    principal: WriterDep,
    session: SessionDep,
    runner: RunnerDep,
    settings: SettingsDep,
    project: ProjectDep,
) -> JobPublic:
    """Read the form and queue the file import. Files are spooled to a temporary file as they
    arrive (in memory up to 1 MiB)."""
    async with request.form(max_files=1, max_fields=len(FORM_FIELDS)) as form:
        fields, upload = _file_fields(form)
        job = await run_in_threadpool(
            imports.start_file_import,
            session,
            runner,
            project=project,
            principal=principal,
            fields=fields,
            file=upload.file,
            file_name=upload.filename,
            settings=settings,
        )
    return accepted(response, job)
