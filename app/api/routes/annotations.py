"""Annotations: bulk submit (own name for annotators) and listing."""

from typing import Annotated

from fastapi import Body, Query

from app.api.routing import PROJECT_PROBLEMS, ProblemRouter
from app.deps import AnyRoleDep, IdQuery, NameQuery, PageDep, ProjectDep, RunnerDep, SessionDep
from app.errors import refuse_if_all_failed
from app.models.annotation import AnnotationIn, AnnotationPublic, AnnotationReport
from app.models.base import AnnotationSource
from app.pagination import Page, make_page
from app.services import annotations

router = ProblemRouter(
    prefix="/v1/projects/{project_id}/annotations",
    tags=["annotations"],
    responses=PROJECT_PROBLEMS,
)

MAX_ANNOTATIONS_PER_REQUEST = 10_000


@router.post("")
def create_annotations(
    principal: AnyRoleDep,
    session: SessionDep,
    runner: RunnerDep,
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
        session, runner, project=project, principal=principal, entries=body
    )
    refuse_if_all_failed(report.results, total=len(report.results), noun="annotations")
    return report


@router.get("")
def list_annotations(
    principal: AnyRoleDep,
    session: SessionDep,
    project: ProjectDep,
    page: PageDep,
    annotator: NameQuery = None,
    item_id: IdQuery = None,
    source: AnnotationSource | None = None,
    include_history: Annotated[bool, Query(description="Add replaced annotations.")] = False,
) -> Page[AnnotationPublic]:
    """List annotations in id order; an annotator key sees only its own."""
    assert project.id is not None
    rows = annotations.list_annotations(
        session,
        viewer=principal,
        project_id=project.id,
        annotator=annotator,
        item_id=item_id,
        source=source,
        include_history=include_history,
        page=page,
    )
    return make_page(rows, page, lambda r: AnnotationPublic.model_validate(r.model_dump()))
