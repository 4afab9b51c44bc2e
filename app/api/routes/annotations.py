"""Annotations: bulk submit (own name for annotators) and listing."""

from typing import Annotated

from fastapi import APIRouter, Body, Query

from app.deps import AnyRoleDep, CursorQuery, LimitQuery, ProjectDep, SessionDep, SettingsDep
from app.errors import Forbidden, ValidationFailed, problem_responses
from app.models.annotation import AnnotationIn, AnnotationPublic, AnnotationReport
from app.models.base import AnnotationSource, Role
from app.pagination import Page, clamp_limit, cut_page, decode_cursor
from app.services import annotations

router = APIRouter(
    prefix="/v1/projects/{project_id}/annotations",
    tags=["annotations"],
    responses=problem_responses(401, 403, 404, 422),
)

MAX_ANNOTATIONS_PER_REQUEST = 10_000


@router.post("", responses=problem_responses(413))
def create_annotations(
    principal: AnyRoleDep,
    session: SessionDep,
    project: ProjectDep,
    body: Annotated[
        list[AnnotationIn],
        Body(
            max_length=MAX_ANNOTATIONS_PER_REQUEST,
            examples=[
                [{"item_id": 1, "label": "devel"}, {"item_id": 2, "label": None, "abstain": True}]
            ],
        ),
    ],
) -> AnnotationReport:
    """Submit annotations; resubmitting replaces yours and keeps the old one as history."""
    report = annotations.submit_annotations(
        session, project=project, principal=principal, entries=body
    )
    if report.results and report.failed == len(report.results):
        errors = [e for r in report.results if r.problem for e in (r.problem.errors or [])]
        raise ValidationFailed(
            f"All {report.failed} annotations failed; nothing was written.", errors=errors
        )
    return report


@router.get("")
def list_annotations(
    principal: AnyRoleDep,
    session: SessionDep,
    settings: SettingsDep,
    project: ProjectDep,
    annotator: str | None = None,
    item_id: int | None = None,
    source: AnnotationSource | None = None,
    include_history: Annotated[bool, Query(description="Add replaced annotations.")] = False,
    limit: LimitQuery = None,
    cursor: CursorQuery = None,
) -> Page[AnnotationPublic]:
    """List annotations in id order; an annotator key sees only its own."""
    assert project.id is not None
    if principal.role == Role.annotator:
        if annotator not in (None, principal.name):
            raise Forbidden("An annotator key lists only its own annotations.")
        annotator = principal.name
    size = clamp_limit(limit, default=settings.default_page_size, maximum=settings.max_page_size)
    rows = annotations.list_annotations(
        session,
        project_id=project.id,
        annotator=annotator,
        item_id=item_id,
        source=source,
        include_history=include_history,
        after_id=decode_cursor(cursor),
        limit=size,
    )
    page, next_cursor = cut_page(rows, limit=size, key=lambda r: r.id or 0)
    return Page(
        items=[AnnotationPublic.model_validate(r.model_dump()) for r in page],
        next_cursor=next_cursor,
    )
