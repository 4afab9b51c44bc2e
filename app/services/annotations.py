"""Submit annotations in bulk (one current per item and annotator, history kept) and list them."""

from collections import defaultdict
from typing import Any, NamedTuple

from sqlalchemy import select as sa_select
from sqlalchemy import update
from sqlmodel import Session, col, select

from app.db import id_in, insert_returning_ids, sync_loaded
from app.errors import ErrorDetail, Forbidden, Problem, make_problem
from app.jobs.context import JobRunner
from app.models.annotation import (
    Annotation,
    AnnotationEntryResult,
    AnnotationEntryStatus,
    AnnotationIn,
    AnnotationReport,
)
from app.models.base import AnnotationSource, utcnow
from app.models.item import Item
from app.models.job import Job
from app.models.project import Project
from app.pagination import PageRequest, keyset
from app.services import batches, consensus, item_status, model_versions, policy
from app.services.api_keys import Principal


def _authorize(principal: Principal, entries: list[AnnotationIn]) -> None:
    """Annotator keys write only in their own name and only as humans; checked before any write."""
    if policy.may_act_for_others(principal):
        return
    for index, entry in enumerate(entries):
        if not policy.may_act_as(principal, entry.annotator):
            raise Forbidden(
                f"Entry {index}: an annotator key submits only as itself ({principal.name!r}), "
                f"not as {entry.annotator!r}."
            )
        if entry.source not in (None, AnnotationSource.human):
            raise Forbidden(f"Entry {index}: only admin and service keys may set source.")


def _entry_problem(index: int, status: int, field: str, detail: str) -> Problem:
    slug = "not-found" if status == 404 else "validation-error"
    return make_problem(
        status, detail, slug=slug, errors=[ErrorDetail(loc=["body", index, field], msg=detail)]
    )


def submit_annotations(
    session: Session,
    runner: JobRunner,
    *,
    project: Project,
    principal: Principal,
    entries: list[AnnotationIn],
) -> AnnotationReport:
    _authorize(principal, entries)
    report = write_annotations(
        session, project=project, default_annotator=principal.name, entries=entries
    )
    follow_ups = (
        queue_follow_ups(session, project=project) if report.created or report.replaced else []
    )
    session.commit()
    for job in follow_ups:
        if job.id is not None:
            runner.enqueue(job.id)
    return report


def queue_follow_ups(session: Session, *, project: Project) -> list[Job]:
    """The jobs new answers call for (project-wide consensus, automatic retraining); flushes,
    the caller commits and then enqueues them."""
    jobs = [
        consensus.queue_apply(session, project=project, created_by="consensus"),
        model_versions.auto_retrain_job(session, project=project),
    ]
    return [job for job in jobs if job is not None]


ANNOTATION_TABLE = Annotation.__table__  # type: ignore[attr-defined]


class _Current(NamedTuple):
    """What a current annotation's (item, annotator) needs to tell "unchanged" from "replaced"."""

    id: int
    answer: tuple[str | None, bool, str | None, str]  # label, abstain, note, source


def write_annotations(
    session: Session,
    *,
    project: Project,
    default_annotator: str,
    entries: list[AnnotationIn],
    provenance: dict[str, Any] | None = None,
) -> AnnotationReport:
    """Write annotations and re-derive the touched items' status and label (flushes only).

    Entries without an annotator are `default_annotator`'s; `provenance` is recorded on each
    new annotation (imports). The caller has authorized the entries. Every request of every
    annotator comes through here, so it is Core statements, a fixed number per call whatever
    the entry count (docs/design.md, "Hot paths"): lock the items and read their states, read
    their current annotations, retire the replaced ones, insert the new ones, close the
    leases, and store the touched items' new status and label, derived from what was read.
    """
    assert project.id is not None
    item_ids = sorted({e.item_id for e in entries})
    # Lock the items (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers) so
    # concurrent annotators of one item see each other's answers when deriving its status.
    states = {
        row.id: item_status.ItemState(*row)
        for row in session.execute(
            item_status.state_select(session, item_ids)
            .where(col(Item.project_id) == project.id)
            .order_by(col(Item.id))
            .with_for_update(of=Item)
        )
    }
    known_items = set(states)
    current: dict[tuple[int, str], _Current] = {
        (item_id, annotator): _Current(id_, (label, abstain, note, source))
        for id_, item_id, annotator, label, abstain, note, source in session.execute(
            sa_select(
                col(Annotation.id),
                col(Annotation.item_id),
                col(Annotation.annotator),
                col(Annotation.label),
                col(Annotation.abstain),
                col(Annotation.note),
                col(Annotation.source),
            ).where(
                id_in(session, col(Annotation.item_id), sorted(known_items)),
                col(Annotation.is_current),
            )
        )
    }
    labels = set(project.labels)
    now = utcnow()
    report = AnnotationReport()
    touched: set[int] = set()
    retired: list[int] = []  # stored annotations this call replaces
    rows: list[dict[str, Any]] = []  # new annotations, in entry order
    # Each written entry's result, and where its id comes from: a stored annotation's id
    # (unchanged) or the index of its new row.
    written: list[tuple[AnnotationEntryResult, int | None, int | None]] = []
    new_row: dict[tuple[int, str], int] = {}  # (item, annotator) -> its row written here
    answered: list[tuple[int, str]] = []
    recorded = {} if provenance is None else {"provenance": provenance}  # else SQL NULL
    for index, entry in enumerate(entries):
        annotator = entry.annotator or default_annotator
        problem: Problem | None = None
        if entry.item_id not in known_items:
            problem = _entry_problem(
                index, 404, "item_id", f"No item {entry.item_id} in this project."
            )
        elif entry.label is not None and entry.label not in labels:
            problem = _entry_problem(
                index,
                422,
                "label",
                f"Unknown label {entry.label!r}; the project's labels are {project.labels}.",
            )
        elif entry.abstain and not project.allow_abstain:
            problem = _entry_problem(
                index, 422, "abstain", "This project does not allow abstaining."
            )
        if problem is not None:
            report.results.append(
                AnnotationEntryResult(index=index, status="failed", problem=problem)
            )
            report.failed += 1
            continue

        key = (entry.item_id, annotator)
        source = entry.source or AnnotationSource.human
        answer = (entry.label, entry.abstain, entry.note, source)
        previous = current.get(key)
        status: AnnotationEntryStatus
        if previous is not None and previous.answer == answer:
            status = "unchanged"
            result = AnnotationEntryResult(index=index, status=status)
            written.append((result, previous.id, new_row.get(key)))  # a row of this call, or none
        else:
            if previous is not None:
                if key in new_row:  # answered twice in this call: the first becomes history
                    rows[new_row[key]].update(is_current=False, replaced_at=now)
                else:
                    retired.append(previous.id)
            new_row[key] = len(rows)
            rows.append(
                {
                    "project_id": project.id,
                    "item_id": entry.item_id,
                    "annotator": annotator,
                    "label": entry.label,
                    "abstain": entry.abstain,
                    "source": source,
                    "duration_ms": entry.duration_ms,
                    "note": entry.note,
                    **recorded,
                    "is_current": True,
                    "created_at": now,
                    "replaced_at": None,
                }
            )
            current[key] = _Current(-1, answer)  # a row of this call; its id comes later
            touched.add(entry.item_id)
            status = "replaced" if previous is not None else "created"
            result = AnnotationEntryResult(index=index, status=status)
            written.append((result, None, new_row[key]))
        report.results.append(result)
        answered.append(key)
        setattr(report, status, getattr(report, status) + 1)

    if retired:
        # Before the inserts: the partial unique index allows one current row at a time.
        values = {"is_current": False, "replaced_at": now}
        session.execute(
            update(ANNOTATION_TABLE)
            .where(id_in(session, ANNOTATION_TABLE.c.id, retired))
            .values(**values)
        )
        sync_loaded(session, Annotation, ((id_, values) for id_ in retired))
    ids = insert_returning_ids(session, ANNOTATION_TABLE, rows)
    for result, stored_id, row in written:
        result.id = ids[row] if row is not None else stored_id
    batches.release_answered(session, answers=answered)
    # The touched items' answers are known here: every current one was read under the
    # item locks, and this call's own replaced them.
    answers: dict[int, list[item_status.Answer]] = defaultdict(list)
    for (item_id, _), held in current.items():
        given_label, given_abstain, _, given_source = held.answer
        answers[item_id].append(item_status.Answer(given_label, given_abstain, given_source))
    item_status.resolve(
        session, project=project, states=[states[i] for i in sorted(touched)], answers=answers
    )
    return report


def list_annotations(
    session: Session,
    *,
    viewer: Principal,
    project_id: int,
    annotator: str | None,
    item_id: int | None,
    source: AnnotationSource | None,
    include_history: bool,
    page: PageRequest,
) -> list[Annotation]:
    if policy.labels_blind(viewer):
        # Annotators label blind: they never see a colleague's answers.
        if annotator not in (None, viewer.name):
            raise Forbidden("An annotator key lists only its own annotations.")
        annotator = viewer.name
    query = select(Annotation).where(col(Annotation.project_id) == project_id)
    if not include_history:
        query = query.where(col(Annotation.is_current))
    if annotator is not None:
        query = query.where(col(Annotation.annotator) == annotator)
    if item_id is not None:
        query = query.where(col(Annotation.item_id) == item_id)
    if source is not None:
        query = query.where(col(Annotation.source) == source)
    return list(session.exec(keyset(query, col(Annotation.id), page)))
