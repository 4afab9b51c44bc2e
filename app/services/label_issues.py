"""Label-issue reports: which labels are probably wrong, ranked so a reviewer's first hour goes
to the worst ones, with the dataset-level findings (class imbalance, the estimated noise
between labels, near-duplicate groups, outliers).

The report job judges every trainable label (human-resolved, and implicit labels from user
behaviour, which are the noisiest) with out-of-fold probabilities (the active
model's, when it was trained on exactly the current labels; otherwise a fresh K-fold
cross-validation of the same algorithm) and cleanlab (`ml.label_issues`). It stores the
report and one row per judged item (the label snapshot), then sends suspected mislabels to
`needs_review` with the suggestion. Nothing is relabeled: a reviewer decides, and the report
measures how often its flags were confirmed. The job is app/tasks/label_issues.py; this
module queues it, judges the labels and reads the reports.
"""

import numpy as np
from sqlalchemy import case
from sqlmodel import Session, col, func, select

from app.errors import NotFound, ReportInProgress
from app.jobs.context import JobRunner
from app.ml import label_issues
from app.ml.thresholds import wilson_interval
from app.models.job import Job, JobKind
from app.models.job_kinds import LabelIssuesParams
from app.models.label_issue import (
    GONE,
    ISSUE_TYPES,
    FlagReview,
    IssueChange,
    IssueType,
    LabelIssue,
    LabelIssueReport,
    LabelIssueReportPublic,
    LabelIssueReportSummary,
    LabelIssueRequest,
    LabelIssueRow,
)
from app.models.project import Project
from app.models.review import Review
from app.pagination import PageRequest, encode_cursor, keyset
from app.registry.algorithms import get_algorithm
from app.registry.training import FOLD_SEED, N_FOLDS
from app.services import jobs, model_versions
from app.services.api_keys import Principal

# Dataset-level lists are capped in the stored report; the per-item rows hold everything.
MAX_LISTED_GROUPS = 200
MAX_LISTED_OUTLIERS = 200
NUM_PERM = 128  # MinHash permutations for near-duplicates (duplicates.near_duplicate_groups)


def start_report(
    session: Session,
    runner: JobRunner,
    *,
    project: Project,
    principal: Principal,
    request: LabelIssueRequest,
) -> Job:
    """Queue a report job. Unknown algorithms or params are a 422 now, a report already on its
    way a 409; too few labels make the job fail with a problem (labels may change before it
    runs). One report at a time per project keeps the chain of comparisons and flags linear."""
    pending = session.exec(
        select(Job.id).where(
            col(Job.project_id) == project.id,
            col(Job.kind) == JobKind.label_issues,
            col(Job.status).in_(("queued", "running")),
        )
    ).first()
    if pending is not None:
        raise ReportInProgress(
            f"A label-issue report is already on its way for this project (job {pending}); "
            "wait for it (GET /v1/jobs/{id}) or cancel it first.",
        )
    name, params = model_versions.default_algorithm(session, project=project)
    if request.algorithm is not None and request.algorithm != name:
        name, params = request.algorithm, {}
    algorithm = get_algorithm(name)
    params = algorithm.resolve_params({**params, **request.params})
    return jobs.submit_job(
        session,
        runner,
        project_id=project.id,
        kind=JobKind.label_issues,
        params=LabelIssuesParams(
            algorithm=name,
            params=params,
            near_duplicate_threshold=request.near_duplicate_threshold,
            outlier_share=request.outlier_share,
            send_to_review=request.send_to_review,
            # Fixed by the code today; recorded so a report says everything it ran with.
            n_folds=N_FOLDS,
            fold_seed=FOLD_SEED,
            near_duplicate_shingles="word unigrams and bigrams",
            near_duplicate_num_perm=NUM_PERM,
            near_duplicate_seed=0,
            outlier_method="cleanlab OutOfDistribution on pred_probs",
        ),
        created_by=principal.name,
    )


def judge(
    *,
    item_ids: np.ndarray,
    given: list[str],
    classes: list[str],
    oof: np.ndarray,
    texts: list[str],
    near_duplicate_threshold: float,
    outlier_share: float,
    reviewed: np.ndarray,
) -> label_issues.Judged:
    """`ml.label_issues.judge` with this service's fixed settings (recorded in each report's
    params by start_report)."""
    return label_issues.judge(
        item_ids=item_ids,
        given=given,
        classes=classes,
        oof=oof,
        texts=texts,
        near_duplicate_threshold=near_duplicate_threshold,
        outlier_share=outlier_share,
        reviewed=reviewed,
        num_perm=NUM_PERM,
        max_listed_groups=MAX_LISTED_GROUPS,
        max_listed_outliers=MAX_LISTED_OUTLIERS,
    )


def list_reports(
    session: Session, *, project: Project, page: PageRequest
) -> list[LabelIssueReport]:
    """Completed reports, newest first."""
    query = select(LabelIssueReport).where(
        col(LabelIssueReport.project_id) == project.id,
        col(LabelIssueReport.completed_at).is_not(None),
    )
    return list(session.exec(keyset(query, col(LabelIssueReport.id), page, descending=True)))


def report_summary(report: LabelIssueReport) -> LabelIssueReportSummary:
    return LabelIssueReportSummary.model_validate(report.model_dump())


def get_report(
    session: Session,
    *,
    project: Project,
    report_id: int,
    page: PageRequest,
    issue_type: IssueType | None,
    label: str | None,
    min_severity: float | None,
    change: IssueChange | None,
) -> LabelIssueReportPublic:
    """A report with one page of its issues, worst first (rank order), filtered."""
    report = session.get(LabelIssueReport, report_id)
    if report is None or report.project_id != project.id or report.completed_at is None:
        raise NotFound(
            f"No label-issue report {report_id} in project {project.id} (a report appears when "
            "its job succeeds)."
        )
    query = select(LabelIssueRow).where(col(LabelIssueRow.report_id) == report.id)
    if change in GONE:
        query = query.where(col(LabelIssueRow.change) == change)
    else:
        query = query.where(col(LabelIssueRow.is_issue))
        if change is not None:
            query = query.where(col(LabelIssueRow.change) == change)
    if issue_type is not None:
        query = query.where(col(getattr(LabelIssueRow, _FLAG_COLUMNS[issue_type])))
    if label is not None:
        query = query.where(col(LabelIssueRow.given_label) == label)
    if min_severity is not None:
        query = query.where(col(LabelIssueRow.label_quality) <= 1.0 - min_severity)
    rows = list(session.exec(keyset(query, col(LabelIssueRow.rank), page)))
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    return LabelIssueReportPublic(
        **report_summary(report).model_dump(),
        project_id=report.project_id,
        params=report.params,
        library_versions=report.library_versions,
        snapshot_hash=report.snapshot_hash,
        findings=report.findings,
        flag_review=flag_review(session, report=report),
        seconds=report.seconds,
        items=[_issue_public(row) for row in rows],
        next_cursor=encode_cursor(rows[-1].rank) if more and rows else None,
    )


_FLAG_COLUMNS: dict[str, str] = {
    "label": "is_label_issue",
    "near_duplicate": "is_near_duplicate",
    "outlier": "is_outlier",
}


def _issue_public(row: LabelIssueRow) -> LabelIssue:
    types: list[IssueType] = [t for t in ISSUE_TYPES if getattr(row, _FLAG_COLUMNS[t])]
    return LabelIssue(
        item_id=row.item_id,
        rank=row.rank,
        given_label=row.given_label,
        suggested_label=row.suggested_label,
        label_quality=row.label_quality,
        severity=round(1.0 - row.label_quality, 6),
        suggestion_confidence=row.suggestion_confidence,
        issue_types=types,
        change=row.change,
    )


def flag_review(session: Session, *, report: LabelIssueReport) -> FlagReview:
    """The first review since the report of each item it sent to review: confirmed when the
    reviewer chose another label than the doubted one."""
    sent = (
        select(LabelIssueRow.item_id)
        .where(col(LabelIssueRow.report_id) == report.id, col(LabelIssueRow.sent_to_review))
        .scalar_subquery()
    )
    first_review = (
        select(func.min(Review.id))
        .where(col(Review.item_id).in_(sent), col(Review.created_at) >= report.created_at)
        .group_by(col(Review.item_id))
        .scalar_subquery()
    )
    flagged = session.exec(
        select(func.count())
        .select_from(LabelIssueRow)
        .where(col(LabelIssueRow.report_id) == report.id, col(LabelIssueRow.sent_to_review))
    ).one()
    reviewed, confirmed = session.exec(
        select(
            func.count(),
            func.coalesce(
                func.sum(case((col(Review.label) != col(LabelIssueRow.given_label), 1), else_=0)),
                0,
            ),
        )
        .select_from(Review)
        .join(
            LabelIssueRow,
            (col(LabelIssueRow.item_id) == col(Review.item_id))
            & (col(LabelIssueRow.report_id) == report.id),
        )
        .where(col(Review.id).in_(first_review))
    ).one()
    low, high = wilson_interval(confirmed, reviewed) if reviewed else (None, None)
    return FlagReview(
        flagged=flagged,
        reviewed=reviewed,
        confirmed=confirmed,
        precision=confirmed / reviewed if reviewed else None,
        ci_low=None if low is None else float(low),
        ci_high=None if high is None else float(high),
    )
