"""Items: bulk upsert (JSON array or streamed NDJSON), listing with filters, and detail."""

import asyncio
from typing import Annotated

from fastapi import Query, Request
from starlette.concurrency import run_in_threadpool

from app.api.routing import PROJECT_PROBLEMS, ProblemRouter
from app.deps import (
    AnyRoleDep,
    IdPath,
    NameQuery,
    PageDep,
    ProjectDep,
    SessionDep,
    SettingsDep,
    WriterDep,
)
from app.errors import Conflict, UnsupportedMediaType, problem_responses, refuse_if_all_failed
from app.models.base import ItemSource, ItemStatus
from app.models.item import IngestReport, IngestResults, ItemDetail, ItemPublic
from app.pagination import Page, make_page
from app.services import items
from app.sources.json_bodies import NDJSON_MEDIA_TYPES, ndjson_chunks, parse_json_array

router = ProblemRouter(
    prefix="/v1/projects/{project_id}/items",
    tags=["items"],
    responses=PROJECT_PROBLEMS,
)

JSON = "application/json"
NDJSON = "application/x-ndjson"

INGEST_BODY = {
    "required": True,
    "description": f"A JSON array of items, or {NDJSON}: one item per line, streamed, with no "
    "size limit and committed every chunk (docs/clients.md shows the raw call).",
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
        NDJSON: {"schema": {"$ref": "#/components/schemas/ItemIn"}},
    },
}

ResultsQuery = Annotated[
    IngestResults,
    Query(
        description="`errors`: results only for failed and duplicate entries (for large streams)."
    ),
]


@router.post(
    "",
    openapi_extra={"requestBody": INGEST_BODY},
    responses=problem_responses(Conflict, UnsupportedMediaType),
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
    if media_type != JSON and media_type not in NDJSON_MEDIA_TYPES:
        raise UnsupportedMediaType(f"Send items as {JSON} (an array) or {NDJSON} (one per line).")
    # The body may be slow to arrive: hold no transaction (on SQLite, no write lock) meanwhile.
    await run_in_threadpool(session.commit)

    def ingest(entries: list[tuple[int, object]]) -> IngestReport:
        return items.ingest_items(
            session,
            project_id=project.id or 0,
            entries=entries,
            max_text_chars=settings.max_text_chars,
        )

    report = IngestReport()
    if media_type == JSON:
        body = parse_json_array(await request.body(), max_items=settings.max_items_per_request)
        report.absorb(
            await run_in_threadpool(ingest, list(enumerate(body))), keep_all=results == "all"
        )
    else:
        chunks = ndjson_chunks(
            request.stream(),
            chunk_size=settings.ingest_chunk_size,
            max_line_bytes=settings.max_ndjson_line_bytes,
        )
        # Pipelined: while one chunk is written (in a worker thread), the next is read and
        # parsed. One chunk at a time touches the session, so it is never shared.
        writing: asyncio.Future[IngestReport] | None = None
        async for chunk in chunks:
            if writing is not None:
                report.absorb(await writing, keep_all=results == "all")
            writing = asyncio.ensure_future(run_in_threadpool(ingest, chunk))
        if writing is not None:
            report.absorb(await writing, keep_all=results == "all")
    refuse_if_all_failed(report.results, total=report.total, noun="items")
    return report


@router.get("")
def list_items(
    principal: AnyRoleDep,
    session: SessionDep,
    project: ProjectDep,
    page: PageDep,
    status: ItemStatus | None = None,
    source: ItemSource | None = None,
    label: Annotated[
        NameQuery, Query(description="Resolved label (not for annotator keys).")
    ] = None,
) -> Page[ItemPublic]:
    """List a project's items in id order, filtered by status, source and resolved label."""
    assert project.id is not None
    rows = items.list_items(
        session,
        viewer=principal,
        project_id=project.id,
        status=status,
        source=source,
        label=label,
        page=page,
    )
    return make_page(rows, page, lambda item: items.item_public(item, viewer=principal))


@router.get("/{item_id}")
def get_item(
    principal: AnyRoleDep, session: SessionDep, project: ProjectDep, item_id: IdPath
) -> ItemDetail:
    """An item with its current annotations and resolved label."""
    assert project.id is not None
    return items.item_detail(session, viewer=principal, project_id=project.id, item_id=item_id)
