"""The one writer of annotations: one current answer per (item, annotator), a replaced answer
kept as history (`is_current` false, `replaced_at` set).

Every answer comes through `write_annotations`: the annotations API
(`annotations.submit_annotations`), file and SQL imports (`imports`), a prelabel job's
auto-accepts (`prelabels`) and a click-log import's implicit labels (`click_logs`). It also
closes the answering annotator's leases and re-derives the touched items' status and label,
so an item reads the same whichever way its answers arrived.

Every request of every annotator comes through here, so it is Core statements, a fixed number
per call whatever the entry count (docs/design.md, "Hot paths"): lock the items and read their
states, read their current annotations, retire the replaced ones, insert the new ones, close
the leases, and store the touched items' new status and label, derived from what was read.
When items got a label, one `items.labeled` event records them (`events`, one read of the
subscriptions when none is subscribed).
"""

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, NamedTuple

import sqlalchemy as sa
from sqlalchemy import select as sa_select
from sqlalchemy import update
from sqlmodel import Session, col

from app.db import id_in, insert_returning_ids, sync_loaded
from app.errors import ErrorDetail, NotFound, Problem, ValidationFailed
from app.models.annotation import (
    Annotation,
    AnnotationEntryResult,
    AnnotationEntryStatus,
    AnnotationIn,
    AnnotationReport,
)
from app.models.base import AnnotationSource, utcnow
from app.models.item import Item
from app.models.project import Project
from app.services import batches, events, item_status

ANNOTATION_TABLE = Annotation.__table__  # type: ignore[attr-defined]

# What tells an unchanged answer from a replaced one: label, abstain, note, source, model version.
Answer = tuple[str | None, bool, str | None, str, str | None]
Key = tuple[int, str]  # (item id, annotator)


@dataclass(frozen=True, slots=True)
class MachineAnswer:
    """An answer a job gives under a machine annotator's name, with what its annotation
    records beside the answer: a prelabel auto-accept's model version, its confidence and the
    threshold it cleared; a click-log label's provenance (the rule and its evidence). A
    machine never abstains and writes no note."""

    item_id: int
    annotator: str
    label: str
    source: AnnotationSource
    model_version: str | None = None
    confidence: float | None = None
    threshold: float | None = None
    provenance: dict[str, Any] | None = None
    abstain: ClassVar[bool] = False
    note: ClassVar[None] = None
    duration_ms: ClassVar[None] = None


Entry = AnnotationIn | MachineAnswer


class _Held(NamedTuple):
    """A current answer of an (item, annotator): a stored annotation's id, or -1 for a row
    this call writes (its id comes with the insert)."""

    id: int
    answer: Answer


def write_annotations(
    session: Session,
    *,
    project: Project,
    default_annotator: str,
    entries: Sequence[Entry],
    provenance: dict[str, Any] | None = None,
    withdraw: Collection[Key] = (),
    refresh: Collection[int] = (),
) -> AnnotationReport:
    """Write answers and re-derive the touched items' status and label (flushes only).

    An `AnnotationIn` without an annotator is `default_annotator`'s, and `provenance` is
    recorded on its new annotation (imports); a `MachineAnswer` names both itself. One call
    writes entries of one kind: the new rows go in one INSERT, so they have the same columns.
    `withdraw` retires the current answers of these (item, annotator) pairs without a new one
    (a prelabel that is no longer confident), before the entries are written. `refresh` names
    more items to re-derive, whose review state the caller changed in this transaction. The
    caller has authorized the entries.
    """
    assert project.id is not None
    item_ids = {entry.item_id for entry in entries}
    item_ids.update(item_id for item_id, _ in withdraw)
    item_ids.update(refresh)
    states = _lock_items(session, project=project, item_ids=sorted(item_ids))
    plan = _Plan(
        project,
        known_items=states.keys(),
        current=_current_answers(session, sorted(states)),
        provenance=provenance,
    )
    plan.withdraw(withdraw)
    for index, entry in enumerate(entries):
        plan.add(index, entry, entry.annotator or default_annotator)
    _retire(session, ids=plan.retired, now=plan.now)
    plan.take_ids(insert_returning_ids(session, ANNOTATION_TABLE, plan.rows))
    batches.release_answered(session, answers=plan.answered)
    # The touched items' answers are known here: every current one was read under the item
    # locks, and this call's own replaced them.
    touched = plan.touched.union(refresh).intersection(states)
    labeled = item_status.resolve(
        session,
        project=project,
        states=[states[item_id] for item_id in sorted(touched)],
        answers=plan.answers_by_item(),
    )
    # One event for the whole call, and only when items got a label (docs/webhooks.md).
    events.emit_items_labeled(session, project_id=project.id, items=labeled)
    return plan.report


def _lock_items(
    session: Session, *, project: Project, item_ids: list[int]
) -> dict[int, item_status.ItemState]:
    """The project's items among `item_ids`, locked in id order (PostgreSQL; SQLite's BEGIN
    IMMEDIATE already serialises writers) so concurrent writers of one item see each other's
    answers when deriving its status; with their states."""
    return {
        row.id: item_status.ItemState(*row)
        for row in session.execute(
            item_status.state_select(session, item_ids)
            .where(col(Item.project_id) == project.id)
            .order_by(col(Item.id))
            .with_for_update(of=Item)
        )
    }


def _current_answers(session: Session, item_ids: list[int]) -> dict[Key, _Held]:
    """The current answer of every (item, annotator) of these items."""
    rows = session.execute(
        sa_select(
            col(Annotation.id),
            col(Annotation.item_id),
            col(Annotation.annotator),
            col(Annotation.label),
            col(Annotation.abstain),
            col(Annotation.note),
            col(Annotation.source),
            col(Annotation.model_version),
        ).where(id_in(session, col(Annotation.item_id), item_ids), col(Annotation.is_current))
    )
    return {
        (item_id, annotator): _Held(id_, (label, abstain, note, source, model_version))
        for id_, item_id, annotator, label, abstain, note, source, model_version in rows
    }


def _retire(session: Session, *, ids: list[int], now: datetime) -> None:
    """Mark replaced annotations as history; before the inserts, as the partial unique index
    allows one current row per (item, annotator) at a time."""
    if not ids:
        return
    values = {"is_current": False, "replaced_at": now}
    session.execute(
        update(ANNOTATION_TABLE).where(id_in(session, ANNOTATION_TABLE.c.id, ids)).values(**values)
    )
    sync_loaded(session, Annotation, ((id_, values) for id_ in ids))


class _Plan:
    """What one call writes, decided in Python from what was read under the item locks: the
    annotations to retire, the rows to insert (in entry order), each entry's result, the
    answered (item, annotator) pairs and the touched items."""

    def __init__(
        self,
        project: Project,
        *,
        known_items: Collection[int],
        current: dict[Key, _Held],
        provenance: dict[str, Any] | None,
    ) -> None:
        self.project = project
        self.known_items = known_items
        self.labels = set(project.labels)
        self.current = current
        self.now = utcnow()
        self.recorded = {} if provenance is None else {"provenance": provenance}  # else SQL NULL
        self.report = AnnotationReport()
        self.retired: list[int] = []  # stored annotations this call replaces
        self.rows: list[dict[str, Any]] = []
        self.new_row: dict[Key, int] = {}  # (item, annotator) -> its row written here
        # Each written entry's result, and where its id comes from: a stored annotation's id
        # (unchanged) or the index of its new row.
        self.written: list[tuple[AnnotationEntryResult, int | None, int | None]] = []
        self.answered: list[Key] = []
        self.touched: set[int] = set()

    def withdraw(self, keys: Collection[Key]) -> None:
        """Retire these pairs' current answers, leaving none."""
        for key in keys:
            held = self.current.pop(key, None)
            if held is not None:
                self.retired.append(held.id)
                self.touched.add(key[0])

    def add(self, index: int, entry: Entry, annotator: str) -> None:
        """Plan one entry: failed (unknown item or label, a forbidden abstention), unchanged
        (the same answer is current) or a new current answer (created, or replacing one)."""
        problem = self._problem(index, entry)
        if problem is not None:
            self.report.results.append(
                AnnotationEntryResult(index=index, status="failed", problem=problem)
            )
            self.report.failed += 1
            return
        key = (entry.item_id, annotator)
        source = entry.source or AnnotationSource.human
        model_version = entry.model_version if isinstance(entry, MachineAnswer) else None
        answer = (entry.label, entry.abstain, entry.note, source, model_version)
        previous = self.current.get(key)
        status: AnnotationEntryStatus
        if previous is not None and previous.answer == answer:
            status = "unchanged"
            result = AnnotationEntryResult(index=index, status=status)
            # Its id: a row of this call, or the stored one.
            self.written.append((result, previous.id, self.new_row.get(key)))
        else:
            status = "replaced" if previous is not None else "created"
            result = AnnotationEntryResult(index=index, status=status)
            self._replace(key, previous)
            self.rows.append(self._row(entry, annotator, source))
            self.current[key] = _Held(-1, answer)
            self.touched.add(entry.item_id)
            self.written.append((result, None, self.new_row[key]))
        self.report.results.append(result)
        self.answered.append(key)
        setattr(self.report, status, getattr(self.report, status) + 1)

    def _problem(self, index: int, entry: Entry) -> Problem | None:
        if entry.item_id not in self.known_items:
            return _entry_problem(
                index, 404, "item_id", f"No item {entry.item_id} in this project."
            )
        if entry.label is not None and entry.label not in self.labels:
            return _entry_problem(
                index,
                422,
                "label",
                f"Unknown label {entry.label!r}; the project's labels are {self.project.labels}.",
            )
        if entry.abstain and not self.project.allow_abstain:
            return _entry_problem(index, 422, "abstain", "This project does not allow abstaining.")
        return None

    def _replace(self, key: Key, previous: _Held | None) -> None:
        """Make room for the key's new row: the answer it replaces becomes history (a row of
        this call, when the entries answer the same pair twice, or a stored one)."""
        if previous is not None:
            if key in self.new_row:
                self.rows[self.new_row[key]].update(is_current=False, replaced_at=self.now)
            else:
                self.retired.append(previous.id)
        self.new_row[key] = len(self.rows)

    def _row(self, entry: Entry, annotator: str, source: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "project_id": self.project.id,
            "item_id": entry.item_id,
            "annotator": annotator,
            "label": entry.label,
            "abstain": entry.abstain,
            "source": source,
            "duration_ms": entry.duration_ms,
            "note": entry.note,
            **self.recorded,
            "is_current": True,
            "created_at": self.now,
            "replaced_at": None,
        }
        if isinstance(entry, MachineAnswer):
            row["model_version"] = entry.model_version
            row["confidence"] = entry.confidence
            row["threshold"] = entry.threshold
            # sa.null(): SQL NULL, where None would store a JSON null.
            row["provenance"] = sa.null() if entry.provenance is None else entry.provenance
        return row

    def take_ids(self, ids: list[int]) -> None:
        """The new rows' ids, in row order, onto the entries' results."""
        for result, stored_id, row in self.written:
            result.id = ids[row] if row is not None else stored_id

    def answers_by_item(self) -> dict[int, list[item_status.Answer]]:
        """Every current answer per item, as `item_status.resolve` weighs them."""
        answers: dict[int, list[item_status.Answer]] = defaultdict(list)
        for (item_id, _), held in self.current.items():
            label, abstain, _, source, _ = held.answer
            answers[item_id].append(item_status.Answer(label, abstain, source))
        return answers


def _entry_problem(index: int, status: int, field: str, detail: str) -> Problem:
    kind = NotFound if status == 404 else ValidationFailed
    return kind.problem(detail, errors=[ErrorDetail(loc=["body", index, field], msg=detail)])
