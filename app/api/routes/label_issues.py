"""Label-issue reports: start the cleanlab job, list the kept reports, read one worst first.

Reports show everyone's labels, so they are for admin and service keys; annotators label
blind and meet flagged items in the review queue instead.
"""

from typing import Annotated

from fastapi import Body, Path, Query, Response

from app.api.routes.jobs import ACCEPTED, accepted
from app.api.routing import PROJECT_PROBLEMS, ProblemRouter
from app.deps import NameQuery, PageDep, ProjectDep, RunnerDep, SessionDep, WriterDep
from app.errors import ReportInProgress, problem_responses
from app.models.base import MAX_DB_ID
from app.models.job import JobPublic
from app.models.label_issue import (
    IssueChange,
    IssueType,
    LabelIssueReportPublic,
    LabelIssueReportSummary,
    LabelIssueRequest,
)
from app.pagination import Page, make_page
from app.services import label_issues

router = ProblemRouter(
    prefix="/v1/projects/{project_id}/label-issues",
    tags=["label-issues"],
    responses=PROJECT_PROBLEMS,
)


@router.post("", status_code=202, responses={**ACCEPTED, **problem_responses(ReportInProgress)})
def create_label_issue_report(
    principal: WriterDep,
    session: SessionDep,
    runner: RunnerDep,
    project: ProjectDep,
    response: Response,
    body: Annotated[
        LabelIssueRequest,
        Body(examples=[{"near_duplicate_threshold": 0.8, "send_to_review": True}]),
    ] = LabelIssueRequest(),
) -> JobPublic:
    """Find suspected mislabels, near-duplicates and outliers (202: a job; its result holds
    report_id)."""
    job = label_issues.start_report(
        session, runner, project=project, principal=principal, request=body
    )
    return accepted(response, job)


@router.get("")
def list_label_issue_reports(
    principal: WriterDep, session: SessionDep, project: ProjectDep, page: PageDep
) -> Page[LabelIssueReportSummary]:
    """The project's reports, newest first."""
    rows = label_issues.list_reports(session, project=project, page=page)
    return make_page(rows, page, label_issues.report_summary)


@router.get("/{report_id}")
def get_label_issue_report(
    principal: WriterDep,
    session: SessionDep,
    project: ProjectDep,
    page: PageDep,
    report_id: Annotated[int, Path(ge=1, le=MAX_DB_ID)],
    issue_type: Annotated[IssueType | None, Query(description="Only this type.")] = None,
    label: NameQuery = None,
    min_severity: Annotated[
        float | None, Query(ge=0.0, le=1.0, description="Only issues with 1 - label_quality ≥.")
    ] = None,
    change: Annotated[
        IssueChange | None,
        Query(description="Against the previous report: new, persisting or fixed."),
    ] = None,
) -> LabelIssueReportPublic:
    """A report: findings, flag precision so far, and its issues worst first (filterable)."""
    return label_issues.get_report(
        session,
        project=project,
        report_id=report_id,
        page=page,
        issue_type=issue_type,
        label=label,
        min_severity=min_severity,
        change=change,
    )
