"""Bulk upsert of items (idempotent by external_id, deduplicated by text), listing and detail."""

import hashlib
import json
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import DataError, IntegrityError
from sqlmodel import Session, col, select

from app.db import refusal_reason
from app.errors import (
    Conflict,
    DuplicateText,
    ErrorDetail,
    Forbidden,
    NotFound,
    Problem,
    ValidationFailed,
)
from app.models.annotation import Annotation, AnnotationPublic
from app.models.base import ItemSource, ItemStatus, UTCDateTime, utcnow
from app.models.item import (
    IngestEntryResult,
    IngestReport,
    IngestStatus,
    Item,
    ItemDetail,
    ItemIn,
    ItemPublic,
)
from app.models.prediction import Prediction
from app.pagination import PageRequest, keyset
from app.services import item_status, policy
from app.services.api_keys import Principal
from app.services.predictions import LOOKUP_CHUNK, latest_predictions
from app.sources.json_bodies import InvalidEntry

T = TypeVar("T")
ITEM_ADAPTER: TypeAdapter[ItemIn] = TypeAdapter(ItemIn)
ITEM_TABLE: sa.Table = Item.__table__  # type: ignore[attr-defined]
IN_CLAUSE_CHUNK = 5_000  # well under SQLite's (32,766) and PostgreSQL's (65,535) limits
MAX_ATTEMPTS = 3
WRITTEN = ("created", "updated")  # the statuses of the entries a batch wrote
# SQLite: all new rows travel as one JSON parameter that SQLite unpacks in C, instead of
# ten bound values per row, each through SQLAlchemy's type processors (+18% ingest rate,
# docs/benchmarks.md). json_extract needs only the JSON1 functions, not the -> operators.
SQLITE_INSERT_FROM_JSON = sa.text(
    "INSERT INTO item (project_id, external_id, text, content_hash, data, metadata, source,"
    " status, created_at, updated_at)"
    " SELECT :project_id, json_extract(r.value, '$[0]'), json_extract(r.value, '$[1]'),"
    " json_extract(r.value, '$[2]'), json(json_extract(r.value, '$[3]')),"
    " json(json_extract(r.value, '$[4]')), json_extract(r.value, '$[5]'), :status, :now, :now"
    " FROM json_each(:rows) AS r ORDER BY r.key"
    " RETURNING id, content_hash"
).bindparams(sa.bindparam("now", type_=UTCDateTime()))


def normalize_text(text: str) -> str:
    """What counts as "the same text": Unicode NFKC, whitespace collapsed, case folded."""
    if not text.isascii():  # NFKC leaves ASCII unchanged; skip the costly pass
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.split()).casefold()


def content_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode()).hexdigest()


@dataclass(slots=True)
class _Row:
    """An item as this request sees it: loaded from the database or about to be inserted."""

    id: int | None
    external_id: str | None
    text: str
    content_hash: str
    data: dict[str, Any]
    meta: dict[str, Any]
    source: str

    def same_content(self, entry: ItemIn) -> bool:
        return (self.text, self.data, self.meta, self.source) == (
            entry.text,
            entry.data,
            entry.metadata,
            entry.source.value,
        )


def ingest_items(
    session: Session,
    *,
    project_id: int,
    entries: Sequence[tuple[int, Any]],
    max_text_chars: int,
    then: Callable[[IngestReport], None] | None = None,
) -> IngestReport:
    """Upsert a batch of (index, raw entry) pairs in one transaction, with a result per entry.

    A unique-constraint race with a concurrent request (PostgreSQL) rolls back and
    replays the batch, which then sees the other request's rows. A value the database
    refuses despite validation fails only its own entry: the batch is split until the
    culprit is alone.

    `then` adds writes to the same transaction once the items are written (an import's
    labels), given the report about to be committed. It runs again when the batch is replayed
    and once per part when it is split, so it must keep what it learns only when it returns.
    """
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            report = _ingest_once(
                session, project_id=project_id, entries=entries, max_text_chars=max_text_chars
            )
            if then is not None:
                then(report)
            session.commit()
            return report
        except IntegrityError:
            session.rollback()
            if attempt == MAX_ATTEMPTS:
                raise Conflict(
                    "The batch kept colliding with other writes of the same external_ids or "
                    "texts (concurrent requests, or texts swapped between items within this "
                    "batch); retry it, or send the swaps in separate requests."
                ) from None
        except DataError as error:
            session.rollback()
            if len(entries) == 1:
                return _refused_by_database(entries[0][0], error)
            middle = len(entries) // 2
            report = IngestReport()
            for half in (entries[:middle], entries[middle:]):
                part = ingest_items(
                    session,
                    project_id=project_id,
                    entries=half,
                    max_text_chars=max_text_chars,
                    then=then,
                )
                report.absorb(part, keep_all=True)
            return report
    raise AssertionError("unreachable")


def stage_items(
    session: Session,
    *,
    project_id: int,
    entries: Sequence[tuple[int, Any]],
    max_text_chars: int,
) -> IngestReport:
    """ingest_items inside the caller's transaction (flushes, never commits), for a use case
    that writes more than items. Each attempt runs in a savepoint, so a unique-constraint race
    or a value the database refuses undoes only this batch's rows, never the caller's work
    or locks: the race replays the batch, the refused value fails only its own entry."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with session.begin_nested():
                return _ingest_once(
                    session, project_id=project_id, entries=entries, max_text_chars=max_text_chars
                )
        except IntegrityError:
            if attempt == MAX_ATTEMPTS:
                raise Conflict(
                    "The batch kept colliding with other writes of the same external_ids or "
                    "texts; retry it."
                ) from None
        except DataError as error:
            if len(entries) == 1:
                return _refused_by_database(entries[0][0], error)
            middle = len(entries) // 2
            report = IngestReport()
            for half in (entries[:middle], entries[middle:]):
                part = stage_items(
                    session, project_id=project_id, entries=half, max_text_chars=max_text_chars
                )
                report.absorb(part, keep_all=True)
            return report
    raise AssertionError("unreachable")


def record_provenance(
    session: Session, *, report: IngestReport, provenance: dict[str, Any]
) -> None:
    """Record where the items a staged batch created or changed came from (an import's);
    unchanged items and duplicates keep their own."""
    written = [r.id for r in report.results if r.id is not None and r.status in WRITTEN]
    for chunk in _chunks(written):
        session.execute(
            sa.update(ITEM_TABLE).where(ITEM_TABLE.c.id.in_(chunk)).values(provenance=provenance)
        )


def _refused_by_database(index: int, error: DataError) -> IngestReport:
    problem = ValidationFailed.problem(
        f"The database cannot store this item: {refusal_reason(error)}."
    )
    return IngestReport(
        failed=1, results=[IngestEntryResult(index=index, status="failed", problem=problem)]
    )


def _validation_problem(index: int, error: ValidationError | str) -> Problem:
    if isinstance(error, str):
        return ValidationFailed.problem(error)
    details = [
        ErrorDetail(loc=["body", index, *error_["loc"]], msg=error_["msg"])
        for error_ in error.errors(include_url=False)
    ]
    return ValidationFailed.problem(
        "; ".join(f"{'.'.join(map(str, d.loc[2:])) or 'item'}: {d.msg}" for d in details),
        errors=details,
    )


Outcome = tuple[IngestStatus, _Row | None, Problem | None]  # of an entry, by its index


def _ingest_once(
    session: Session,
    *,
    project_id: int,
    entries: Sequence[tuple[int, Any]],
    max_text_chars: int,
) -> IngestReport:
    """One attempt at a batch, in named steps that each run once per batch: validate the
    entries, load the items they may be (by external_id and by text), decide each entry's
    outcome, write the changed and the new rows, report."""
    outcomes: dict[int, Outcome] = {}
    validated = _validate(entries, max_text_chars=max_text_chars, outcomes=outcomes)
    by_external_id, by_hash = _load_existing(
        session,
        project_id=project_id,
        external_ids={e.external_id for _, e, _ in validated if e.external_id is not None},
        hashes={digest for _, _, digest in validated},
    )
    new_rows, changed_rows = _plan_rows(
        validated, by_external_id=by_external_id, by_hash=by_hash, outcomes=outcomes
    )
    # Updates first: they may free texts that new rows take.
    _update(session, rows=changed_rows)
    _insert(session, project_id=project_id, rows=new_rows)
    return _report(outcomes)


def _validate(
    entries: Sequence[tuple[int, Any]], *, max_text_chars: int, outcomes: dict[int, Outcome]
) -> list[tuple[int, ItemIn, str]]:
    """The valid entries with their content hash; each invalid one's failure into `outcomes`."""
    validated: list[tuple[int, ItemIn, str]] = []
    for index, raw in entries:
        if isinstance(raw, InvalidEntry):
            outcomes[index] = ("failed", None, raw.problem)
            continue
        try:
            entry = ITEM_ADAPTER.validate_python(raw)
        except ValidationError as error:
            outcomes[index] = ("failed", None, _validation_problem(index, error))
            continue
        if len(entry.text) > max_text_chars:
            problem = _validation_problem(
                index, f"text: {len(entry.text)} characters, over the limit of {max_text_chars}"
            )
            outcomes[index] = ("failed", None, problem)
            continue
        validated.append((index, entry, content_hash(entry.text)))
    return validated


def _plan_rows(
    validated: list[tuple[int, ItemIn, str]],
    *,
    by_external_id: dict[str | None, _Row],
    by_hash: dict[str, _Row],
    outcomes: dict[int, Outcome],
) -> tuple[list[_Row], list[_Row]]:
    """Each entry's outcome (created, updated, unchanged, a duplicate of an item with its
    text, or failed: a new text another item has) into `outcomes`; returns the rows to insert
    and the stored rows to update. The lookups follow the batch's own rows, so an entry sees
    the ones before it."""
    new_rows: list[_Row] = []
    changed_rows: dict[int, _Row] = {}
    for index, entry, digest in validated:
        row = by_external_id.get(entry.external_id) if entry.external_id is not None else None
        owner = by_hash.get(digest)
        if row is None:
            if owner is not None:
                outcomes[index] = ("duplicate", owner, None)
                continue
            row = _Row(
                None,
                entry.external_id,
                entry.text,
                digest,
                entry.data,
                entry.metadata,
                entry.source.value,
            )
            new_rows.append(row)
            by_hash[digest] = row
            if entry.external_id is not None:
                by_external_id[entry.external_id] = row
            outcomes[index] = ("created", row, None)
        elif row.same_content(entry):
            outcomes[index] = ("unchanged", row, None)
        elif owner is not None and owner is not row:
            problem = DuplicateText.problem(
                f"The new text of external_id {entry.external_id!r} duplicates another item"
                + (f" (id {owner.id})." if owner.id is not None else " in this request.")
            )
            outcomes[index] = ("failed", None, problem)
        else:
            _change(row, entry, digest, by_hash=by_hash)
            if row.id is not None:
                changed_rows[row.id] = row
            outcomes[index] = ("updated", row, None)
    return new_rows, list(changed_rows.values())


def _change(row: _Row, entry: ItemIn, digest: str, *, by_hash: dict[str, _Row]) -> None:
    """Give a row the entry's content; the text lookup follows it."""
    if row.content_hash != digest:
        by_hash.pop(row.content_hash, None)
        by_hash[digest] = row
    row.text, row.content_hash, row.data, row.meta = (
        entry.text,
        digest,
        entry.data,
        entry.metadata,
    )
    row.source = entry.source.value


def _report(outcomes: dict[int, Outcome]) -> IngestReport:
    report = IngestReport()
    counters = dict.fromkeys(("created", "updated", "unchanged", "duplicate", "failed"), 0)
    for index in sorted(outcomes):
        status, target, entry_problem = outcomes[index]
        counters[status] += 1
        # Built from values this function produced, so pydantic's validation is skipped.
        report.results.append(
            IngestEntryResult.model_construct(
                index=index, id=target.id if target else None, status=status, problem=entry_problem
            )
        )
    report.created, report.updated = counters["created"], counters["updated"]
    report.unchanged, report.duplicates = counters["unchanged"], counters["duplicate"]
    report.failed = counters["failed"]
    return report


def _load_existing(
    session: Session, *, project_id: int, external_ids: set[str], hashes: set[str]
) -> tuple[dict[str | None, _Row], dict[str, _Row]]:
    t = ITEM_TABLE.c
    columns = (t.id, t.external_id, t.text, t.content_hash, t.data, t.metadata, t.source)
    by_external_id: dict[str | None, _Row] = {}
    by_hash: dict[str, _Row] = {}

    def keep(rows: Any) -> None:
        for row in rows:
            loaded = _Row(*row)
            if loaded.external_id is not None:
                by_external_id[loaded.external_id] = loaded
            by_hash[loaded.content_hash] = loaded

    for chunk in _chunks(sorted(external_ids)):
        keep(
            session.execute(
                sa.select(*columns).where(t.project_id == project_id, t.external_id.in_(chunk))
            )
        )
    # Only hashes not already seen, so no row is loaded twice as two diverging objects.
    missing = sorted(hashes - by_hash.keys())
    for chunk in _chunks(missing):
        keep(
            session.execute(
                sa.select(*columns).where(t.project_id == project_id, t.content_hash.in_(chunk))
            )
        )
    return by_external_id, by_hash


def _chunks(values: list[T]) -> list[list[T]]:
    return [values[i : i + IN_CLAUSE_CHUNK] for i in range(0, len(values), IN_CLAUSE_CHUNK)]


def _insert(session: Session, *, project_id: int, rows: list[_Row]) -> None:
    if not rows:
        return
    now = utcnow()
    # RETURNING order is not guaranteed in batched multi-row INSERTs, and asking for it
    # (sort_by_parameter_order) makes SQLite insert row by row; the content hash is
    # unique in the project, so it pairs each new id with its row instead.
    by_hash = {row.content_hash: row for row in rows}
    if session.get_bind().dialect.name == "sqlite":
        packed = json.dumps(
            [[r.external_id, r.text, r.content_hash, r.data, r.meta, r.source] for r in rows],
            ensure_ascii=False,
        )
        values = {"project_id": project_id, "status": ItemStatus.unlabeled.value, "now": now}
        result = session.execute(SQLITE_INSERT_FROM_JSON, {**values, "rows": packed})
    else:
        params = [
            {
                "project_id": project_id,
                "external_id": row.external_id,
                "text": row.text,
                "content_hash": row.content_hash,
                "data": row.data,
                "metadata": row.meta,
                "source": row.source,
                "status": ItemStatus.unlabeled.value,
                "created_at": now,
                "updated_at": now,
            }
            for row in rows
        ]
        statement = sa.insert(ITEM_TABLE).returning(ITEM_TABLE.c.id, ITEM_TABLE.c.content_hash)
        result = session.execute(statement, params)
    for new_id, digest in result:
        by_hash[digest].id = new_id


def _update(session: Session, *, rows: list[_Row]) -> None:
    if not rows:
        return
    t = ITEM_TABLE.c
    statement = (
        sa.update(ITEM_TABLE)
        .where(t.id == sa.bindparam("row_id"))
        .values(
            text=sa.bindparam("new_text"),
            content_hash=sa.bindparam("new_hash"),
            data=sa.bindparam("new_data"),
            metadata=sa.bindparam("new_meta"),
            source=sa.bindparam("new_source"),
            updated_at=sa.bindparam("now"),
        )
    )
    now = utcnow()
    session.connection().execute(
        statement,
        [
            {
                "row_id": r.id,
                "new_text": r.text,
                "new_hash": r.content_hash,
                "new_data": r.data,
                "new_meta": r.meta,
                "new_source": r.source,
                "now": now,
            }
            for r in rows
        ],
    )
    # A prediction describes the old content; the next scoring run predicts the new one.
    ids = [r.id for r in rows]
    predictions = Prediction.__table__  # type: ignore[attr-defined]
    for start in range(0, len(ids), LOOKUP_CHUNK):
        session.connection().execute(
            sa.delete(predictions).where(
                predictions.c.item_id.in_(ids[start : start + LOOKUP_CHUNK])
            )
        )


def list_items(
    session: Session,
    *,
    viewer: Principal,
    project_id: int,
    status: ItemStatus | None,
    source: ItemSource | None,
    label: str | None,
    page: PageRequest,
) -> list[Item]:
    if label is not None and policy.labels_blind(viewer):
        raise Forbidden("Annotator keys label blind: they cannot filter by resolved label.")
    query = select(Item).where(col(Item.project_id) == project_id)
    if status is not None:
        query = query.where(col(Item.status) == status)
    if source is not None:
        query = query.where(col(Item.source) == source)
    if label is not None:
        query = query.where(col(Item.resolved_label) == label)
    return list(session.exec(keyset(query, col(Item.id), page)))


def get_item(session: Session, *, project_id: int, item_id: int) -> Item:
    item = session.get(Item, item_id)
    if item is None or item.project_id != project_id:
        raise NotFound(f"No item with id {item_id} in project {project_id}.")
    return item


def item_public(item: Item, *, viewer: Principal) -> ItemPublic:
    """The public view of an item; annotators label blind, so not how it resolved."""
    public = ItemPublic.of(item)
    if policy.labels_blind(viewer):
        public.resolved_label = public.resolved_by = public.consensus_quality = None
        if item_status.hides_suggestion(item):
            public.suggested_label = public.suggestion_confidence = None
    return public


def item_detail(
    session: Session, *, viewer: Principal, project_id: int, item_id: int
) -> ItemDetail:
    """An item with its current annotations; an annotator sees only its own."""
    item = get_item(session, project_id=project_id, item_id=item_id)
    query = select(Annotation).where(col(Annotation.item_id) == item.id, col(Annotation.is_current))
    if policy.labels_blind(viewer):
        query = query.where(col(Annotation.annotator) == viewer.name)
    annotations = session.exec(query.order_by(col(Annotation.id)))
    return ItemDetail(
        **item_public(item, viewer=viewer).model_dump(),
        annotations=[AnnotationPublic.model_validate(a.model_dump()) for a in annotations],
        predictions=latest_predictions(session, item_id=item.id or 0),
    )
