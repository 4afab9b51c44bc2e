"""The label-issue report job: judge every trainable label with out-of-fold probabilities and
cleanlab, store the report and its rows, send suspected mislabels to review
(app/services/label_issues.py queues it, judges the labels and reads the reports)."""

import hashlib
import time
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
from sqlalchemy import insert, update
from sqlmodel import Session, col, select

from app.jobs.context import JobContext
from app.ml import label_issues
from app.models.base import utcnow
from app.models.item import Item
from app.models.job_kinds import LabelIssuesParams, LabelIssuesResult
from app.models.label_issue import GONE, IssueChange, LabelIssueReport, LabelIssueRow
from app.models.model_version import ModelVersion, registry_version_name
from app.models.project import Project
from app.models.review import Review
from app.models.webhook import EventType, LabelIssuesReadyData
from app.registry.algorithms import Algorithm, get_algorithm
from app.registry.store import dump_array
from app.registry.training import out_of_fold_probabilities
from app.services import events, item_status, model_versions
from app.services.label_issues import judge
from app.services.model_versions import TrainingSet
from app.services.project_loading import load_project

FLAG_REASON = item_status.LABEL_ISSUE
ROW_CHUNK = 5_000
FLAG_CHUNK = 1_000
LIBRARIES = ("cleanlab", "scikit-learn", "numpy", "scipy")


def run_report(context: JobContext) -> LabelIssuesResult:
    """Job function. Read and judge (writes nothing, cancellable); store the report and its
    issue rows in one transaction; flag the suspected mislabels chunk by chunk; mark the
    report complete. Until then the report is invisible, so a job that fails midway leaves no
    report behind, and the next report's flag phase corrects any flags it had set."""
    started = time.perf_counter()
    asked = context.read_params(LabelIssuesParams)
    algorithm = get_algorithm(asked.algorithm)
    params = algorithm.resolve_params(asked.params)
    inputs = _read_inputs(context, algorithm, params)
    context.progress(0.05)
    classes, oof, source = _probabilities(context, inputs, algorithm, params)
    context.progress(0.8)

    judged, is_reviewed = _judge(inputs, asked, classes=classes, oof=oof)
    context.progress(0.9, cancellable=True)

    changes, comparison = _compare(judged, inputs.previous, inputs.previous_flags, is_reviewed)
    report = _new_report(
        context,
        asked,
        params,
        inputs,
        judged,
        classes=classes,
        source=source,
        comparison=comparison,
    )
    report_id = _store_report(context, report, judged, changes)
    context.progress(0.95, cancellable=False)

    flagged = _flag_for_review(
        context,
        project=inputs.project,
        judged=judged,
        report_id=report_id,
        send=asked.send_to_review,
    )
    _complete(context, report_id, seconds=round(time.perf_counter() - started, 3))
    return LabelIssuesResult(
        report_id=report_id,
        n_items=len(inputs.training_set.item_ids),
        n_issues=int(judged.is_issue.sum()),
        counts=judged.counts,
        probabilities_source=source,
        sent_to_review=flagged,
        comparison=comparison,
    )


@dataclass
class _Inputs:
    """What a report judges and compares with, read in one transaction."""

    project: Project
    training_set: TrainingSet
    texts: list[str]
    reviewed: set[int]  # items a reviewer decided
    previous: LabelIssueReport | None  # the latest completed report
    previous_flags: dict[int, str]
    # The active version and its out-of-fold probabilities, when it was trained on exactly
    # these labels with these params: no cross-validation to run again.
    reused: tuple[ModelVersion, np.ndarray] | None


def _read_inputs(context: JobContext, algorithm: Algorithm, params: dict[str, Any]) -> _Inputs:
    with context.database.session() as session:
        project = load_project(session, project_id=context.project_id)
        training_set = model_versions.build_training_set(
            session, project=project, algorithm=algorithm
        )
        model_versions.check_trainable(session, project=project, training_set=training_set)
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
        active = model_versions.active_version(session, project=project)
        reused = None
        if (
            active is not None
            and active.train_set_hash == training_set.hash
            and (active.algorithm, dict(active.params)) == (algorithm.name, params)
        ):
            reused = active, model_versions.load_oof_probabilities(session, active)
        return _Inputs(
            project=project,
            training_set=training_set,
            texts=texts,
            reviewed=reviewed,
            previous=previous,
            previous_flags=_label_issues(session, previous.id) if previous is not None else {},
            reused=reused,
        )


def _judge(
    inputs: _Inputs, asked: LabelIssuesParams, *, classes: list[str], oof: np.ndarray
) -> tuple[label_issues.Judged, np.ndarray]:
    """Judge every training label (the excluded labels recorded with the class-imbalance
    finding), and which items a reviewer decided."""
    training_set = inputs.training_set
    item_ids = np.asarray(training_set.item_ids, dtype=np.int64)
    reviewed = inputs.reviewed
    is_reviewed = np.isin(item_ids, np.fromiter(reviewed, dtype=np.int64, count=len(reviewed)))
    judged = judge(
        item_ids=item_ids,
        given=training_set.labels,
        classes=classes,
        oof=np.asarray(oof, dtype=np.float64),
        texts=inputs.texts,
        near_duplicate_threshold=asked.near_duplicate_threshold,
        outlier_share=asked.outlier_share,
        reviewed=is_reviewed,
    )
    judged.findings["class_imbalance"]["excluded_labels"] = training_set.excluded_labels
    return judged, is_reviewed


def _probabilities(
    context: JobContext, inputs: _Inputs, algorithm: Algorithm, params: dict[str, Any]
) -> tuple[list[str], np.ndarray, str]:
    """(classes, out-of-fold probabilities, where they come from): the active version's, or a
    fresh cross-validation (progress 5% to 80%)."""
    if inputs.reused is not None:
        version, oof = inputs.reused
        return list(version.labels), oof, registry_version_name(version.version)
    training_set = inputs.training_set
    oof = out_of_fold_probabilities(
        algorithm,
        params,
        training_set.model_inputs(algorithm),
        training_set.labels,
        sample_weight=training_set.sample_weights(),
        progress=lambda fraction: context.progress(0.05 + 0.75 * fraction),
    )
    return sorted(set(training_set.labels)), oof, "cross_validation"


def _new_report(
    context: JobContext,
    asked: LabelIssuesParams,
    params: dict[str, Any],
    inputs: _Inputs,
    judged: label_issues.Judged,
    *,
    classes: list[str],
    source: str,
    comparison: dict[str, Any] | None,
) -> LabelIssueReport:
    """The report row (incomplete, so invisible, until the flag phase is done)."""
    training_set = inputs.training_set
    item_ids = np.asarray(training_set.item_ids, dtype=np.int64)
    return LabelIssueReport(
        project_id=inputs.project.id or 0,
        job_id=context.job_id,
        previous_report_id=inputs.previous.id if inputs.previous is not None else None,
        params={**asked.model_dump(mode="json", exclude={"kind"}), "params": params},
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


def _store_report(
    context: JobContext,
    report: LabelIssueReport,
    judged: label_issues.Judged,
    changes: list[IssueChange | None],
) -> int:
    """The report and its rows, in one transaction; returns the report's id."""
    with context.database.session(write=True) as session:
        session.add(report)
        session.flush()
        assert report.id is not None
        _insert_rows(session, report.id, judged, changes)
        session.commit()
        return report.id


def _complete(context: JobContext, report_id: int, *, seconds: float) -> None:
    """Make the report visible, with the time it took, and say so (label_issues.ready)."""
    with context.database.session(write=True) as session:
        stored = session.get(LabelIssueReport, report_id)
        assert stored is not None
        stored.seconds = seconds
        stored.completed_at = utcnow()
        session.add(stored)
        events.emit(
            session,
            EventType.label_issues_ready,
            project_id=stored.project_id,
            data=lambda: LabelIssuesReadyData(
                project_id=stored.project_id,
                report_id=report_id,
                job_id=context.job_id,
                n_items=stored.n_items,
                n_issues=stored.n_issues,
                counts=stored.counts,
            ),
        )
        session.commit()


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


def _reviewed(session: Session, *, project_id: int) -> set[int]:
    return set(
        session.exec(
            select(Review.item_id).where(
                col(Review.project_id) == project_id, col(Review.is_current)
            )
        )
    )


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
    judged: label_issues.Judged,
    previous: LabelIssueReport | None,
    previous_flags: dict[int, str],
    reviewed: np.ndarray,
) -> tuple[list[IssueChange | None], dict[str, Any] | None]:
    """Each row's change against the previous report, and the counts. Suspected mislabels are
    what gets fixed (a reviewer corrects the label), so the comparison follows them;
    near-duplicates and outliers are properties of the data and are not compared."""
    if previous is None:
        return [None] * len(judged.item_ids), None
    changes: list[IssueChange | None] = []
    flagged = judged.flags["label"].tolist()
    for k, (item_id, issue) in enumerate(zip(judged.item_ids.tolist(), flagged, strict=True)):
        doubted = previous_flags.get(item_id)
        change: IssueChange | None = None
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
    session: Session, report_id: int, judged: label_issues.Judged, changes: list[IssueChange | None]
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
    context: JobContext,
    *,
    project: Project,
    judged: label_issues.Judged,
    report_id: int,
    send: bool,
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
        with context.database.session(write=True) as session:
            sent += _flag_chunk(
                session,
                project=project,
                judged=judged,
                position=position,
                report_id=report_id,
                chunk=ids[start : start + FLAG_CHUNK],
                flagged_now=flagged_now,
            )
            session.commit()
    return sent


def _flag_chunk(
    session: Session,
    *,
    project: Project,
    judged: label_issues.Judged,
    position: dict[int, int],  # item id -> its index in judged
    report_id: int,
    chunk: list[int],
    flagged_now: set[int],
) -> int:
    """Flag (or take back the flags of) one chunk of items; returns how many it sent to
    review (flushes; the caller commits)."""
    # Items first, in id order (as every writer locks them), then their reviews.
    items = session.exec(
        select(Item).where(col(Item.id).in_(chunk)).order_by(col(Item.id)).with_for_update()
    ).all()
    reviewed = set(
        session.exec(
            select(Review.item_id).where(col(Review.item_id).in_(chunk), col(Review.is_current))
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
    return len(sent_ids)
