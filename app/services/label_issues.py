"""Label-issue reports: which labels are probably wrong, ranked so a reviewer's first hour goes
to the worst ones, with the dataset-level findings (class imbalance, the estimated noise
between labels, near-duplicate groups, outliers).

The report job judges every trainable label (human-resolved, and implicit labels from user
behaviour, which are the noisiest) with out-of-fold probabilities (the active
model's, when it was trained on exactly the current labels; otherwise a fresh K-fold
cross-validation of the same algorithm) and cleanlab (`ml.label_issues`). It stores the
report and one row per judged item (the label snapshot), then sends suspected mislabels to
`needs_review` with the suggestion. Nothing is relabeled: a reviewer decides, and the report
measures how often its flags were confirmed.
"""

import hashlib
import time
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
from sqlalchemy import case, insert, update
from sqlmodel import Session, col, func, select

from app.errors import Conflict, NotFound
from app.jobs.context import JobContext, JobRunner
from app.ml import duplicates, label_issues
from app.ml.thresholds import wilson_interval
from app.models.base import utcnow
from app.models.item import Item
from app.models.job import Job, JobKind
from app.models.label_issue import (
    GONE,
    ISSUE_TYPES,
    Change,
    FlagReview,
    IssueType,
    LabelIssue,
    LabelIssueReport,
    LabelIssueReportPublic,
    LabelIssueReportSummary,
    LabelIssueRequest,
    LabelIssueRow,
)
from app.models.model_version import registry_version_name
from app.models.project import Project
from app.models.review import Review
from app.pagination import PageRequest, encode_cursor, keyset
from app.registry.algorithms import get_algorithm
from app.registry.store import dump_array
from app.registry.training import FOLD_SEED, N_FOLDS, out_of_fold_probabilities
from app.services import item_status, jobs, model_versions
from app.services.api_keys import Principal
from app.services.project_loading import load_project

FLAG_REASON = item_status.LABEL_ISSUE
ROW_CHUNK = 5_000
FLAG_CHUNK = 1_000
# Dataset-level lists are capped in the stored report; the per-item rows hold everything.
MAX_LISTED_GROUPS = 200
MAX_LISTED_OUTLIERS = 200
LIBRARIES = ("cleanlab", "scikit-learn", "numpy", "scipy")
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
        raise Conflict(
            f"A label-issue report is already on its way for this project (job {pending}); "
            "wait for it (GET /v1/jobs/{id}) or cancel it first.",
            slug="report-in-progress",
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
        params={
            "algorithm": name,
            "params": params,
            "near_duplicate_threshold": request.near_duplicate_threshold,
            "outlier_share": request.outlier_share,
            "send_to_review": request.send_to_review,
            # Fixed by the code today; recorded so a report says everything it ran with.
            "n_folds": N_FOLDS,
            "fold_seed": FOLD_SEED,
            "near_duplicate_shingles": "word unigrams and bigrams",
            "near_duplicate_num_perm": NUM_PERM,
            "near_duplicate_seed": 0,
            "outlier_method": "cleanlab OutOfDistribution on pred_probs",
        },
        created_by=principal.name,
    )


def run_report(context: JobContext) -> dict[str, Any]:
    """Job function. Read and judge (writes nothing, cancellable); store the report and its
    issue rows in one transaction; flag the suspected mislabels chunk by chunk; mark the
    report complete. Until then the report is invisible, so a job that fails midway leaves no
    report behind, and the next report's flag phase corrects any flags it had set."""
    started = time.perf_counter()
    p = context.params
    algorithm = get_algorithm(p["algorithm"])
    params = algorithm.resolve_params(p["params"])
    with context.database.session() as session:
        project = load_project(session, project_id=context.project_id)
        training_set = model_versions.build_training_set(
            session, project=project, algorithm=algorithm
        )
        model_versions.check_trainable(training_set)
        texts = _texts(session, training_set.item_ids, training_set, algorithm.input)
        reviewed = _reviewed(session, project_id=project.id or 0)
        previous = session.exec(
            select(LabelIssueReport)
            .where(
                col(LabelIssueReport.project_id) == project.id,
                col(LabelIssueReport.completed_at).is_not(None),
            )
            .order_by(col(LabelIssueReport.id).desc())
            .limit(1)
        ).first()
        previous_flags = _label_issues(session, previous.id) if previous is not None else {}
        active = model_versions.active_version(session, project=project)
        reused = None
        if (
            active is not None
            and active.train_set_hash == training_set.hash
            and (active.algorithm, dict(active.params)) == (algorithm.name, params)
        ):
            reused = active, model_versions.load_oof_probabilities(session, active)
    context.progress(0.05)
    if reused is not None:
        version, oof = reused
        classes, source = list(version.labels), registry_version_name(version.version)
    else:
        classes = sorted(set(training_set.labels))
        oof = out_of_fold_probabilities(
            algorithm,
            params,
            training_set.model_inputs(algorithm),
            training_set.labels,
            sample_weight=training_set.sample_weights(),
            progress=lambda fraction: context.progress(0.05 + 0.75 * fraction),
        )
        source = "cross_validation"
    context.progress(0.8)

    item_ids = np.asarray(training_set.item_ids, dtype=np.int64)
    is_reviewed = np.isin(item_ids, np.fromiter(reviewed, dtype=np.int64, count=len(reviewed)))
    judged = _judge(
        item_ids=item_ids,
        given=training_set.labels,
        classes=classes,
        oof=np.asarray(oof, dtype=np.float64),
        texts=texts,
        near_duplicate_threshold=p["near_duplicate_threshold"],
        outlier_share=p["outlier_share"],
        reviewed=is_reviewed,
    )
    judged.findings["class_imbalance"]["excluded_labels"] = training_set.excluded_labels
    context.progress(0.9, cancellable=True)

    changes, comparison = _compare(judged, previous, previous_flags, is_reviewed)
    with context.database.session(write=True) as session:
        report = LabelIssueReport(
            project_id=project.id or 0,
            job_id=context.job_id,
            previous_report_id=previous.id if previous is not None else None,
            params={**p, "params": params},
            library_versions={name: package_version(name) for name in LIBRARIES},
            probabilities_source=source,
            snapshot=_snapshot(item_ids, training_set.labels, classes),
            snapshot_labels=classes,
            snapshot_hash=_snapshot_hash(training_set.item_ids, training_set.labels),
            n_items=len(training_set.item_ids),
            n_issues=int(judged.is_issue.sum()),
            counts=judged.counts,
            findings=judged.findings,
            comparison=comparison,
            seconds=0.0,
        )
        session.add(report)
        session.flush()
        assert report.id is not None
        _insert_rows(session, report.id, judged, changes)
        session.commit()
        report_id = report.id
    context.progress(0.95, cancellable=False)

    flagged = _flag_for_review(
        context, project=project, judged=judged, report_id=report_id, send=p["send_to_review"]
    )
    with context.database.session(write=True) as session:
        stored = session.get(LabelIssueReport, report_id)
        assert stored is not None
        stored.seconds = round(time.perf_counter() - started, 3)
        stored.completed_at = utcnow()
        session.add(stored)
        session.commit()
    return {
        "report_id": report_id,
        "n_items": len(training_set.item_ids),
        "n_issues": int(judged.is_issue.sum()),
        "counts": judged.counts,
        "probabilities_source": source,
        "sent_to_review": flagged,
        "comparison": comparison,
    }


def _texts(session: Session, item_ids: list[int], training_set: Any, input_kind: str) -> list[str]:
    """The texts of the judged items, in their order (for near-duplicates)."""
    if input_kind == "text":
        return [str(text) for text in training_set.inputs]
    by_id: dict[int, str] = {}
    for start in range(0, len(item_ids), FLAG_CHUNK):
        chunk = item_ids[start : start + FLAG_CHUNK]
        by_id.update(
            (int(i), str(t))
            for i, t in session.exec(select(Item.id, Item.text).where(col(Item.id).in_(chunk)))
            if i is not None
        )
    return [by_id.get(item_id, "") for item_id in item_ids]


class _Judged:
    """Everything the report decided about its items, in training-set order."""

    def __init__(
        self,
        *,
        item_ids: np.ndarray,
        given: list[str],
        suggested: list[str],
        label_quality: np.ndarray,
        suggestion_confidence: np.ndarray,
        flags: dict[IssueType, np.ndarray],
        findings: dict[str, Any],
    ) -> None:
        self.item_ids = item_ids
        self.given = given
        self.suggested = suggested
        self.label_quality = label_quality
        self.suggestion_confidence = suggestion_confidence
        self.flags = flags
        self.is_issue = flags["label"] | flags["near_duplicate"] | flags["outlier"]
        # Rank 1 = lowest label quality; ties by item id, so the order is reproducible.
        order = np.lexsort((item_ids, label_quality))
        self.rank = np.empty(len(item_ids), dtype=np.int64)
        self.rank[order] = np.arange(1, len(item_ids) + 1)
        self.counts: dict[str, int] = {str(kind): int(flags[kind].sum()) for kind in ISSUE_TYPES}
        self.findings = findings


def _judge(
    *,
    item_ids: np.ndarray,
    given: list[str],
    classes: list[str],
    oof: np.ndarray,
    texts: list[str],
    near_duplicate_threshold: float,
    outlier_share: float,
    reviewed: np.ndarray,
) -> _Judged:
    index = {label: k for k, label in enumerate(classes)}
    codes = np.fromiter((index[label] for label in given), dtype=np.int64, count=len(given))
    found = label_issues.find_label_issues(codes, oof)
    joint = label_issues.noise_matrix(codes, oof)
    pairs = label_issues.confused_pairs(joint, len(codes))
    imbalance = label_issues.class_imbalance(np.bincount(codes, minlength=len(classes)))
    scores = label_issues.outlier_scores(codes, oof)
    outlying = label_issues.outliers(scores, share=outlier_share)
    groups = duplicates.near_duplicate_groups(
        texts, threshold=near_duplicate_threshold, num_perm=NUM_PERM
    )

    in_group = np.zeros(len(codes), dtype=bool)
    for group in groups:
        in_group[group.members] = True
    is_outlier = np.zeros(len(codes), dtype=bool)
    is_outlier[outlying] = True
    suggested_codes = found.suggested
    # A reviewer's decision is the final word on a label: the model's doubt about it is
    # counted, not flagged again.
    doubted_but_reviewed = found.is_issue & reviewed
    findings = {
        "reviews": {
            "reviewed_items": int(reviewed.sum()),
            "doubted_but_reviewed": int(doubted_but_reviewed.sum()),
        },
        "class_imbalance": {
            "imbalanced": imbalance.imbalanced,
            "ratio": _finite(imbalance.ratio),
            "labels": [
                {"label": classes[k], "count": int(c), "share": round(float(s), 4)}
                for k, (c, s) in enumerate(zip(imbalance.counts, imbalance.shares, strict=True))
            ],
            "minority": [classes[k] for k in imbalance.minority],
        },
        "noise_matrix": {
            "labels": classes,
            "joint": [[round(float(v), 5) for v in row] for row in joint],
            "confused_pairs": [
                {
                    "given": classes[pair.given],
                    "suggested": classes[pair.suggested],
                    "share": round(pair.share, 5),
                    "estimated_count": pair.estimated_count,
                }
                for pair in pairs
            ],
        },
        "near_duplicate_groups": {
            "n_groups": len(groups),
            "n_items": int(in_group.sum()),
            "groups": [
                {
                    "item_ids": [int(item_ids[m]) for m in group.members],
                    # The same words: ingest refuses texts equal up to case and spacing, so
                    # here exact means equal up to punctuation too.
                    "exact": group.exact or group.min_similarity >= 1.0,
                    "min_similarity": round(group.min_similarity, 4),
                    "labels": sorted({given[m] for m in group.members}),
                    "conflicting_labels": len({given[m] for m in group.members}) > 1,
                }
                for group in groups[:MAX_LISTED_GROUPS]
            ],
        },
        "outliers": {
            "n_items": len(outlying),
            "items": [
                {"item_id": int(item_ids[k]), "score": round(float(scores[k]), 5)}
                for k in outlying[:MAX_LISTED_OUTLIERS]
            ],
        },
    }
    return _Judged(
        item_ids=item_ids,
        given=given,
        suggested=[classes[k] for k in suggested_codes],
        label_quality=found.label_quality,
        suggestion_confidence=oof[np.arange(len(codes)), suggested_codes],
        flags={
            "label": found.is_issue & ~reviewed,
            "near_duplicate": in_group,
            "outlier": is_outlier,
        },
        findings=findings,
    )


def _reviewed(session: Session, *, project_id: int) -> set[int]:
    return set(
        session.exec(
            select(Review.item_id).where(
                col(Review.project_id) == project_id, col(Review.is_current)
            )
        )
    )


def _finite(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


def _snapshot_hash(item_ids: list[int], labels: list[str]) -> str:
    digest = hashlib.sha256()
    for item_id, label in zip(item_ids, labels, strict=True):
        digest.update(f"{item_id}\t{label}\n".encode())
    return digest.hexdigest()


def _label_issues(session: Session, report_id: int | None) -> dict[int, str]:
    """The suspected mislabels of a report: item id -> the label it doubted."""
    return dict(
        session.exec(
            select(LabelIssueRow.item_id, LabelIssueRow.given_label).where(
                col(LabelIssueRow.report_id) == report_id, col(LabelIssueRow.is_label_issue)
            )
        ).all()
    )


def _snapshot(item_ids: np.ndarray, labels: list[str], classes: list[str]) -> bytes:
    index = {label: k for k, label in enumerate(classes)}
    codes = np.fromiter((index[label] for label in labels), dtype=np.int64, count=len(labels))
    return dump_array(np.column_stack([item_ids, codes]))


def _compare(
    judged: _Judged,
    previous: LabelIssueReport | None,
    previous_flags: dict[int, str],
    reviewed: np.ndarray,
) -> tuple[list[Change | None], dict[str, Any] | None]:
    """Each row's change against the previous report, and the counts. Suspected mislabels are
    what gets fixed (a reviewer corrects the label), so the comparison follows them;
    near-duplicates and outliers are properties of the data and are not compared."""
    if previous is None:
        return [None] * len(judged.item_ids), None
    changes: list[Change | None] = []
    flagged = judged.flags["label"].tolist()
    for k, (item_id, issue) in enumerate(zip(judged.item_ids.tolist(), flagged, strict=True)):
        doubted = previous_flags.get(item_id)
        change: Change | None = None
        if issue:
            change = "persisting" if doubted is not None else "new"
        elif doubted is not None:
            change = (
                "fixed" if judged.given[k] != doubted else "dismissed" if reviewed[k] else "cleared"
            )
        changes.append(change)
    counts: dict[str, int] = {
        str(kind): changes.count(kind) for kind in ("new", "persisting", *GONE)
    }
    judged_now = set(judged.item_ids.tolist())
    return changes, {
        "previous_report_id": previous.id,
        **counts,
        # Doubted before, no longer among the judged labels (no human label any more).
        "no_longer_judged": len(previous_flags.keys() - judged_now),
    }


def _insert_rows(
    session: Session, report_id: int, judged: _Judged, changes: list[Change | None]
) -> None:
    """The issues, and the previous report's suspected mislabels that are gone: everything the
    report lists. The other judged items are in its snapshot only."""
    flags = judged.flags
    kept = np.flatnonzero(judged.is_issue | np.array([c is not None for c in changes], bool))
    for start in range(0, len(kept), ROW_CHUNK):
        rows = [
            {
                "report_id": report_id,
                "item_id": int(judged.item_ids[k]),
                "rank": int(judged.rank[k]),
                "given_label": judged.given[k],
                "suggested_label": judged.suggested[k],
                "label_quality": round(float(judged.label_quality[k]), 6),
                "suggestion_confidence": round(float(judged.suggestion_confidence[k]), 6),
                "is_issue": bool(judged.is_issue[k]),
                "is_label_issue": bool(flags["label"][k]),
                "is_near_duplicate": bool(flags["near_duplicate"][k]),
                "is_outlier": bool(flags["outlier"][k]),
                "change": changes[k],
                "sent_to_review": False,
            }
            for k in kept[start : start + ROW_CHUNK].tolist()
        ]
        session.connection().execute(insert(LabelIssueRow), rows)


def _flag_for_review(
    context: JobContext, *, project: Project, judged: _Judged, report_id: int, send: bool
) -> int:
    """Send the suspected mislabels to needs_review (label kept; suggestion set; the report's
    rank as review priority) when `send`, and always take back the flags of earlier reports
    this one no longer doubts. Left alone: an item whose label changed since the report, one
    a reviewer decided, and one already in review for another reason (an audit, a low
    confidence), which keeps that reason."""
    position = {int(i): k for k, i in enumerate(judged.item_ids.tolist())}
    doubted = judged.item_ids[judged.flags["label"]].tolist()
    flagged_now = set(doubted) if send else set()
    with context.database.session() as session:
        flagged_before = {
            i
            for i in session.exec(
                select(Item.id).where(
                    col(Item.project_id) == project.id, col(Item.review_reason) == FLAG_REASON
                )
            )
            if i is not None
        }
    ids = sorted(flagged_now | (flagged_before - set(doubted)))
    sent = 0
    for start in range(0, len(ids), FLAG_CHUNK):
        chunk = ids[start : start + FLAG_CHUNK]
        with context.database.session(write=True) as session:
            # Items first, in id order (as every writer locks them), then their reviews.
            items = session.exec(
                select(Item).where(col(Item.id).in_(chunk)).order_by(col(Item.id)).with_for_update()
            ).all()
            reviewed = set(
                session.exec(
                    select(Review.item_id).where(
                        col(Review.item_id).in_(chunk), col(Review.is_current)
                    )
                )
            )
            sent_ids = []
            for item in items:
                assert item.id is not None
                k = position.get(item.id)
                if item.id in flagged_now:
                    assert k is not None
                    if (
                        item.resolved_label != judged.given[k]
                        or item.id in reviewed
                        or item.review_reason not in (None, FLAG_REASON)
                    ):
                        continue
                    item.review_reason = FLAG_REASON
                    item.suggested_label = judged.suggested[k]
                    item.suggestion_confidence = round(float(judged.suggestion_confidence[k]), 6)
                    item.review_priority = float(judged.rank[k])
                    sent_ids.append(item.id)
                elif item.review_reason == FLAG_REASON:
                    item_status.clear_flag(item)
                else:
                    continue
                session.add(item)
            session.flush()
            if sent_ids:
                session.exec(
                    update(LabelIssueRow)
                    .where(
                        col(LabelIssueRow.report_id) == report_id,
                        col(LabelIssueRow.item_id).in_(sent_ids),
                    )
                    .values(sent_to_review=True)
                )
            item_status.refresh_items(session, project=project, item_ids=chunk)
            session.commit()
            sent += len(sent_ids)
    return sent


# --- reading reports ----------------------------------------------------------------------------


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
    change: Change | None,
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
        precision=round(confirmed / reviewed, 4) if reviewed else None,
        ci_low=None if low is None else round(low, 4),
        ci_high=None if high is None else round(high, 4),
    )
