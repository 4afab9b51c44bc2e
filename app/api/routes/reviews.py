"""Reviews (adjudication): a reviewer's final word on an item, and the list of decisions."""

from typing import Annotated

from fastapi import Body, Query

from app.api.routing import PROJECT_PROBLEMS, ProblemRouter
from app.deps import AnyRoleDep, IdQuery, NameQuery, PageDep, ProjectDep, SessionDep
from app.models.review import ReviewCreate, ReviewPublic
from app.pagination import Page, make_page
from app.services import reviews

router = ProblemRouter(
    prefix="/v1/projects/{project_id}/reviews",
    tags=["reviews"],
    responses=PROJECT_PROBLEMS,
)


@router.post("", status_code=201)
def create_review(
    principal: AnyRoleDep,
    session: SessionDep,
    project: ProjectDep,
    body: Annotated[
        ReviewCreate,
        Body(examples=[{"item_id": 1, "label": "devel", "note": "a compiler, not a library"}]),
    ],
) -> ReviewPublic:
    """Decide an item: the label overrides consensus and auto-accepts; a new review replaces
    the previous one, which stays as history. Admin and service keys decide any item; an
    annotator key only items it holds from the review queue (403 otherwise)."""
    review = reviews.submit_review(session, project=project, principal=principal, data=body)
    return reviews.review_public(review, viewer=principal)


@router.get("")
def list_reviews(
    principal: AnyRoleDep,
    session: SessionDep,
    project: ProjectDep,
    page: PageDep,
    item_id: IdQuery = None,
    reviewer: NameQuery = None,
    include_history: Annotated[bool, Query(description="Add replaced reviews.")] = False,
) -> Page[ReviewPublic]:
    """List reviews in id order; an annotator key sees only its own, without what the item
    resolved to before."""
    assert project.id is not None
    rows = reviews.list_reviews(
        session,
        viewer=principal,
        project_id=project.id,
        item_id=item_id,
        reviewer=reviewer,
        include_history=include_history,
        page=page,
    )
    return make_page(rows, page, lambda r: reviews.review_public(r, viewer=principal))
