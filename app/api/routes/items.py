"""Items: bulk upsert (JSON array or streamed NDJSON), listing with filters, and detail."""

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from app.deps import (
    AnyRoleDep,
    PageDep,
    ProjectDep,
    SessionDep,
    SettingsDep,
    WriterDep,
)
from app.errors import (
    ErrorDetail,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    make_problem,
    problem_responses,
    refuse_if_all_failed,
)
from app.models.annotation import AnnotationPublic
from app.models.base import ItemSource, ItemStatus, Role
from app.models.item import IngestReport, ItemDetail, ItemPublic
from app.pagination import Page, make_page
from app.services import items
from app.services.items import InvalidEntry

router = APIRouter(
    prefix="/v1/projects/{project_id}/items",
    tags=["items"],
    responses=problem_responses(401, 403, 404, 422),
)

JSON = "application/json"
NDJSON = "application/x-ndjson"

INGEST_BODY = {
    "required": True,
    "content": {
        JSON: {
            "schema": {"type": "array", "items": {"$ref": "#/components/schemas/ItemIn"}},
            "example": [
                {
                    "external_id": "pkg-0xffff",
                    "text": "Open Free Fiasco Firmware Flasher",
                    "source": "manual",
                }
            ],
        },
        NDJSON: {
            "schema": {"$ref": "#/components/schemas/ItemIn"},
            "description": "One item per line, streamed; no size limit; committed every chunk.",
        },
    },
}

ResultsQuery = Annotated[
    Literal["all", "errors"],
    Query(
        description="`errors`: results only for failed and duplicate entries (for large streams)."
    ),
]


@router.post(
    "",
    openapi_extra={"requestBody": INGEST_BODY},
    responses=problem_responses(409, 413, 415),
)
async def create_items(
    principal: WriterDep,
    session: SessionDep,
    settings: SettingsDep,
    project: ProjectDep,
    request: Request,
    results: ResultsQuery = "all",
) -> IngestReport:
    """Bulk upsert: same external_id updates, same text is a duplicate, bad entries fail alone."""
    assert project.id is not None
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == NDJSON:
        report = IngestReport()
        chunks = _ndjson_chunks(request, settings.ingest_chunk_size, settings.max_ndjson_line_bytes)
        async for entries in chunks:
            part = await run_in_threadpool(
                items.ingest_items,
                session,
                project_id=project.id,
                entries=entries,
                max_text_chars=settings.max_text_chars,
            )
            _merge(report, part, keep_all=results == "all")
    elif media_type == JSON:
        entries = await run_in_threadpool(
            _parse_json_array, await request.body(), settings.max_items_per_request
        )
        report = await run_in_threadpool(
            items.ingest_items,
            session,
            project_id=project.id,
            entries=list(enumerate(entries)),
            max_text_chars=settings.max_text_chars,
        )
        if results == "errors":
            report.results = [r for r in report.results if r.status in ("failed", "duplicate")]
    else:
        raise UnsupportedMediaType(f"Send items as {JSON} (an array) or {NDJSON} (one per line).")
    total = report.created + report.updated + report.unchanged + report.duplicates + report.failed
    failures = [(r.index, r.problem) for r in report.results if r.problem is not None]
    refuse_if_all_failed(failures, total=total, noun="items")
    return report


def _parse_json_array(body: bytes, max_items: int) -> list[Any]:
    try:
        entries = json.loads(body)
    except ValueError as error:
        raise ValidationFailed(
            f"The body is not valid JSON: {error}.",
            errors=[ErrorDetail(loc=["body"], msg=str(error))],
        ) from None
    if not isinstance(entries, list):
        raise ValidationFailed(
            "Send a JSON array of items.",
            errors=[ErrorDetail(loc=["body"], msg="expected an array")],
        )
    if len(entries) > max_items:
        raise PayloadTooLarge(
            f"{len(entries)} items in one JSON request; the limit is {max_items}. "
            f"Split the request, or stream any number as {NDJSON}."
        )
    return entries


async def _ndjson_chunks(
    request: Request, chunk_size: int, max_line_bytes: int
) -> AsyncIterator[list[tuple[int, Any]]]:
    """Yield chunks of (index, entry); an entry's index is its line number - 1.

    Blank lines are skipped (but counted); a line over max_line_bytes is dropped as it
    streams in and reported as a failed entry, so memory stays bounded per line.
    """
    chunk: list[tuple[int, Any]] = []
    line_number = 0
    buffer = b""
    overlong = False

    def take(line: bytes) -> None:
        too_long = overlong or len(line) > max_line_bytes
        chunk.append((line_number, _overlong(max_line_bytes) if too_long else _parse_line(line)))

    async for data in request.stream():
        buffer += data
        while (newline := buffer.find(b"\n")) >= 0:
            line, buffer = buffer[:newline], buffer[newline + 1 :]
            if overlong or line.strip():
                take(line)
            overlong = False
            line_number += 1
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
        if len(buffer) > max_line_bytes:
            overlong, buffer = True, b""
    if overlong or buffer.strip():
        take(buffer)
    if chunk:
        yield chunk


def _parse_line(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError as error:
        return InvalidEntry(
            make_problem(422, f"This line is not JSON: {error}.", slug="validation-error")
        )


def _overlong(max_line_bytes: int) -> InvalidEntry:
    return InvalidEntry(
        make_problem(413, f"This line is over {max_line_bytes} bytes.", slug="payload-too-large")
    )


def _merge(report: IngestReport, part: IngestReport, *, keep_all: bool) -> None:
    report.created += part.created
    report.updated += part.updated
    report.unchanged += part.unchanged
    report.duplicates += part.duplicates
    report.failed += part.failed
    report.results.extend(
        part.results
        if keep_all
        else [r for r in part.results if r.status in ("failed", "duplicate")]
    )


@router.get("", responses=problem_responses())
def list_items(
    principal: AnyRoleDep,
    session: SessionDep,
    project: ProjectDep,
    page: PageDep,
    status: ItemStatus | None = None,
    source: ItemSource | None = None,
    label: Annotated[str | None, Query(description="Resolved label.")] = None,
) -> Page[ItemPublic]:
    """List a project's items in id order, filtered by status, source and resolved label."""
    assert project.id is not None
    rows = items.list_items(
        session, project_id=project.id, status=status, source=source, label=label, page=page
    )
    return make_page(rows, page, ItemPublic.of)


@router.get("/{item_id}")
def get_item(
    principal: AnyRoleDep, session: SessionDep, project: ProjectDep, item_id: int
) -> ItemDetail:
    """An item with its current annotations and resolved label."""
    assert project.id is not None
    item = items.get_item(session, project_id=project.id, item_id=item_id)
    assert item.id is not None
    # Annotators label blind: they see their own answers, never their colleagues'.
    only = principal.name if principal.role == Role.annotator else None
    annotations = items.current_annotations(session, item_id=item.id, annotator=only)
    return ItemDetail(
        **ItemPublic.of(item).model_dump(),
        annotations=[AnnotationPublic.model_validate(a.model_dump()) for a in annotations],
    )
