"""Dataset versions: freeze, list, read, export (streamed) and diff."""

from typing import Annotated

from fastapi import Body, Path, Query
from fastapi.responses import StreamingResponse

from app.api.routing import PROJECT_PROBLEMS, ProblemRouter
from app.deps import DatabaseDep, PageDep, ProjectDep, SessionDep, WriterDep
from app.errors import NothingToFreeze, SplitChanged, problem_responses
from app.models.base import MAX_DB_ID
from app.models.dataset_version import (
    Balance,
    DatasetDiff,
    DatasetVersionCreate,
    DatasetVersionPublic,
    DiffChange,
    ExportFormat,
    SplitFilter,
    public,
)
from app.pagination import Page, make_page
from app.services import dataset_versions
from app.sources.exports import MEDIA_TYPES

router = ProblemRouter(
    prefix="/v1/projects/{project_id}/dataset-versions",
    tags=["dataset-versions"],
    responses=PROJECT_PROBLEMS,
)

VersionPath = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="The version number.")]


@router.post("", status_code=201, responses=problem_responses(SplitChanged, NothingToFreeze))
def create_dataset_version(
    principal: WriterDep,
    session: SessionDep,
    project: ProjectDep,
    body: Annotated[
        DatasetVersionCreate,
        Body(examples=[{"name": "before-relabel", "note": "first cut for the baseline"}]),
    ] = DatasetVersionCreate(),
) -> DatasetVersionPublic:
    """Freeze the resolved labels as a new immutable version."""
    version = dataset_versions.create_version(
        session, project=project, data=body, created_by=principal.name
    )
    return public(version, trained_models=[])


@router.get("")
def list_dataset_versions(
    principal: WriterDep, session: SessionDep, project: ProjectDep, page: PageDep
) -> Page[DatasetVersionPublic]:
    """List dataset versions, newest first."""
    rows = dataset_versions.list_versions(session, project=project, page=page)
    trained = dataset_versions.trained_models(session, versions=rows)
    return make_page(rows, page, lambda v: public(v, trained.get(v.id or 0, [])))


@router.get("/{version}")
def get_dataset_version(
    principal: WriterDep, session: SessionDep, project: ProjectDep, version: VersionPath
) -> DatasetVersionPublic:
    """Get one version: counts, label and source shares, split, lineage, content hash."""
    found = dataset_versions.get_version(session, project=project, version=version)
    trained = dataset_versions.trained_models(session, versions=[found])
    return public(found, trained[found.id or 0])


@router.get(
    "/{version}/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The rows in item order, streamed.",
            "content": {
                "application/x-ndjson": {},
                "text/csv": {},
                "application/vnd.apache.parquet": {},
            },
        }
    },
)
def export_dataset_version(
    principal: WriterDep,
    session: SessionDep,
    database: DatabaseDep,
    project: ProjectDep,
    version: VersionPath,
    format: Annotated[ExportFormat, Query(description="jsonl, csv or parquet.")] = (
        ExportFormat.jsonl
    ),
    split: Annotated[SplitFilter, Query(description="all, train or test.")] = SplitFilter.all,
    balance: Annotated[
        Balance,
        Query(
            description="none; weight: a weight column, n / (classes x class count); "
            "oversample: minority-class rows repeated up to the largest class's count."
        ),
    ] = Balance.none,
) -> StreamingResponse:
    """Stream a version's rows as JSON lines, CSV or Parquet; the same request, the same bytes."""
    found = dataset_versions.get_version(session, project=project, version=version)
    chunks = dataset_versions.export_stream(
        database, version=found, file_format=format, split=split, balance=balance
    )
    name = f"project-{project.id}-dataset-v{found.version}"
    if split != SplitFilter.all:
        name += f"-{split.value}"
    return StreamingResponse(
        chunks,
        media_type=MEDIA_TYPES[format.value],
        headers={
            "Content-Disposition": f'attachment; filename="{name}.{format.value}"',
            "X-Dataset-Content-Hash": found.content_hash,
        },
    )


@router.get("/{version}/diff")
def diff_dataset_versions(
    principal: WriterDep,
    session: SessionDep,
    project: ProjectDep,
    version: VersionPath,
    page: PageDep,
    against: Annotated[
        int, Query(ge=1, le=MAX_DB_ID, description="The version to compare with (the old one).")
    ],
    change: Annotated[DiffChange | None, Query(description="Only this kind of change.")] = None,
) -> DatasetDiff:
    """What changed from `against` to this version: counts and a page of changed items."""
    new = dataset_versions.get_version(session, project=project, version=version)
    old = dataset_versions.get_version(session, project=project, version=against)
    return dataset_versions.diff(session, version=new, against=old, change=change, page=page)
