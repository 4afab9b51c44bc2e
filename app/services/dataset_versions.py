"""Dataset versions: freeze the resolved labels into immutable rows, list and read versions,
stream their rows for exports (with optional class balancing) and diff any two.

Freezing reads the items in id order, chunk by chunk, so memory stays flat however large the
project; texts go to a per-project store keyed by SHA-256, so an unchanged text is stored
once across versions and a changed one keeps its old form for the versions that had it.
"""

import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    null,
    union_all,
)
from sqlalchemy import select as sql_select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from app.db import Database, insert_rows
from app.errors import NotFound, NothingToFreeze, SplitChanged
from app.models.annotation import Annotation
from app.models.base import (
    TRAINABLE_RESOLUTIONS,
    VOTE_SOURCES,
    AnnotationSource,
    ItemSource,
)
from app.models.dataset_version import (
    DEFAULT_TEST_SHARE,
    Balance,
    DatasetDiff,
    DatasetRow,
    DatasetText,
    DatasetVersion,
    DatasetVersionCreate,
    DiffChange,
    DiffEntry,
    ExportFormat,
    SplitFilter,
)
from app.models.item import Item
from app.models.model_version import ModelVersion
from app.models.project import Project
from app.models.webhook import DatasetVersionCreatedData, EventType
from app.pagination import PageRequest, encode_cursor, keyset
from app.services import events, item_status
from app.services.project_loading import load_project
from app.sources.exports import export_chunks

CHUNK = 2_000
DATASET_ROW: Table = DatasetRow.__table__  # type: ignore[attr-defined]
DATASET_TEXT: Table = DatasetText.__table__  # type: ignore[attr-defined]
ITEM_COLUMNS: list[Any] = [
    Item.id,
    Item.external_id,
    Item.text,
    Item.resolved_label,
    Item.resolved_by,
    Item.source,
]
EXPORT_CHUNK = 1_000  # rows per read; each thread of the stream may keep a chunk's memory
HASH_SPACE = 2**32
WEIGHT_DECIMALS = 6


def split_hash(project_id: int, item_id: int) -> int:
    """A uniform 32-bit number fixed by the item: its split never depends on the version."""
    digest = hashlib.sha256(f"labelwise-split:{project_id}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def split_of(hash_value: int, test_share: float) -> str:
    return "test" if hash_value < round(test_share * HASH_SPACE) else "train"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- freezing -----------------------------------------------------------------------------------


def _latest(session: Session, project_id: int) -> DatasetVersion | None:
    return session.exec(
        select(DatasetVersion)
        .where(col(DatasetVersion.project_id) == project_id)
        .order_by(col(DatasetVersion.version).desc())
        .limit(1)
    ).first()


def _test_share(requested: float | None, latest: DatasetVersion | None) -> float:
    if latest is None:
        return DEFAULT_TEST_SHARE if requested is None else requested
    if requested is not None and requested != latest.test_share:
        raise SplitChanged(
            f"test_share {requested} differs from version {latest.version}'s "
            f"{latest.test_share}: items would move between train and test. Leave it out to "
            "keep the project's split.",
        )
    return latest.test_share


def _items_with_votes(project_id: int) -> Any:
    """Every item with a resolved label in id order, each with its vote counts (current
    human and imported answers: all, answers, answers that gave the resolved label) and the
    model version of its auto-accepted label. One statement, read in chunks from a cursor:
    the whole freeze sees the project at one moment (on PostgreSQL a statement's snapshot;
    on SQLite the write transaction)."""
    votes: Any = aliased(Annotation)
    is_vote = and_(
        votes.item_id == Item.id,
        votes.is_current,
        votes.source.in_(VOTE_SOURCES),
    )
    model_version = (
        select(Annotation.model_version)
        .where(
            col(Annotation.item_id) == col(Item.id),
            col(Annotation.is_current),
            col(Annotation.source) == AnnotationSource.model,
        )
        .limit(1)
        .scalar_subquery()
    )
    columns: list[Any] = [
        *ITEM_COLUMNS,
        func.count(votes.id),
        func.coalesce(func.sum(case((votes.abstain == false(), 1), else_=0)), 0),
        func.coalesce(func.sum(case((votes.label == Item.resolved_label, 1), else_=0)), 0),
        model_version,
    ]
    return (
        select(*columns)
        .outerjoin(votes, is_vote)
        .where(col(Item.project_id) == project_id, col(Item.resolved_label).is_not(None))
        .group_by(col(Item.id))
        .order_by(col(Item.id))
        .execution_options(yield_per=CHUNK)
    )


def _store_texts(session: Session, project_id: int, texts: dict[str, str]) -> None:
    stored = set(
        session.exec(
            select(DatasetText.sha256).where(
                col(DatasetText.project_id) == project_id,
                col(DatasetText.sha256).in_(list(texts)),
            )
        ).all()
    )
    new = [
        {"project_id": project_id, "sha256": sha, "text": text}
        for sha, text in texts.items()
        if sha not in stored
    ]
    if new:
        insert_rows(session, DATASET_TEXT, new)


@dataclass
class _Summary:
    n_items: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    label_sources: Counter[str] = field(default_factory=Counter)
    item_sources: Counter[str] = field(default_factory=Counter)
    splits: Counter[str] = field(default_factory=Counter)
    models: set[str] = field(default_factory=set)


def _freeze_rows(
    session: Session, *, project: Project, version_id: int, test_share: float
) -> tuple[_Summary, str]:
    """Copy every item with a resolved label into the version's rows; return the summary and
    the content hash (SHA-256 of the canonical rows in item order)."""
    project_id = project.id or 0
    digest = hashlib.sha256()
    summary = _Summary()
    for items in session.execute(_items_with_votes(project_id)).partitions():
        texts: dict[str, str] = {}
        rows: list[dict[str, Any]] = []
        for item_id, external_id, text, label, resolved_by, source, *counts, model in items:
            n_votes, n_answers, n_agreeing = counts
            sha = text_sha256(text)
            texts[sha] = text
            hashed = split_hash(project_id, item_id)
            split = split_of(hashed, test_share)
            label_source = resolved_by or "consensus"
            model = model if label_source == "model" else None
            agreement = round(n_agreeing / n_answers, WEIGHT_DECIMALS) if n_answers else None
            rows.append(
                {
                    "dataset_version_id": version_id,
                    "item_id": item_id,
                    "external_id": external_id,
                    "text_sha256": sha,
                    "label": label,
                    "label_source": label_source,
                    "item_source": source,
                    "n_annotators": n_votes,
                    "agreement": agreement,
                    "model_version": model,
                    "split": split,
                    "split_hash": hashed,
                }
            )
            line = [
                item_id,
                external_id,
                sha,
                label,
                label_source,
                split,
                source,
                n_votes,
                agreement,
                model,
            ]
            digest.update((json.dumps(line, separators=(",", ":")) + "\n").encode())
            summary.n_items += 1
            summary.labels[label] += 1
            summary.label_sources[label_source] += 1
            summary.item_sources[source] += 1
            summary.splits[split] += 1
            if model:
                summary.models.add(model)
        _store_texts(session, project_id, texts)
        insert_rows(session, DATASET_ROW, rows)
    return summary, digest.hexdigest()


def snapshot(
    session: Session,
    *,
    project: Project,
    data: DatasetVersionCreate,
    created_by: str | None,
    reuse_unchanged: bool = False,
) -> DatasetVersion:
    """Freeze the resolved labels as the next version (flushes; the caller commits). With
    reuse_unchanged, a snapshot identical to the latest version is dropped and the latest
    version returned instead. The caller holds the project's row lock, so versions are
    numbered without gaps or races."""
    latest = _latest(session, project.id or 0)
    test_share = _test_share(data.test_share, latest)
    savepoint = session.begin_nested()
    version = DatasetVersion(
        project_id=project.id or 0,
        version=(latest.version if latest else 0) + 1,
        name=data.name,
        note=data.note,
        n_items=0,
        label_distribution={},
        label_sources={},
        item_sources={},
        synthetic_share=0.0,
        test_share=test_share,
        split_counts={},
        auto_accept_models=[],
        content_hash="",
        created_by=created_by,
    )
    session.add(version)
    session.flush()
    summary, content_hash = _freeze_rows(
        session, project=project, version_id=version.id or 0, test_share=test_share
    )
    if reuse_unchanged and latest is not None and latest.content_hash == content_hash:
        savepoint.rollback()
        return latest
    version.n_items = summary.n_items
    version.label_distribution = {label: summary.labels[label] for label in sorted(summary.labels)}
    version.label_sources = dict(sorted(summary.label_sources.items()))
    version.item_sources = dict(sorted(summary.item_sources.items()))
    synthetic = summary.item_sources[ItemSource.synthetic]
    version.synthetic_share = round(synthetic / summary.n_items, 6) if summary.n_items else 0.0
    version.split_counts = {"train": summary.splits["train"], "test": summary.splits["test"]}
    version.auto_accept_models = sorted(summary.models)
    version.content_hash = content_hash
    session.add(version)
    savepoint.commit()
    return version


def create_version(
    session: Session, *, project: Project, data: DatasetVersionCreate, created_by: str
) -> DatasetVersion:
    """POST .../dataset-versions: freeze now; a project without resolved labels is a 409."""
    # Freezes of one project run one at a time, numbered in order.
    locked = load_project(session, project_id=project.id, lock=True)
    version = snapshot(session, project=locked, data=data, created_by=created_by)
    if version.n_items == 0:
        session.rollback()
        waiting, facts = item_status.waiting_for_answers(session, project=locked)
        raise NothingToFreeze(
            f"The project has no resolved labels yet: there is nothing to freeze.{waiting}",
            context=facts,
        )
    emit_created(session, version=version)
    session.commit()
    return version


def emit_created(session: Session, *, version: DatasetVersion) -> None:
    """dataset_version.created, in the transaction that makes the version permanent: a freeze
    request's, or the one a training job registers its model in (a version the job froze is
    deleted again if it registers none, so it is reported only then)."""

    def data() -> DatasetVersionCreatedData:
        return DatasetVersionCreatedData(
            project_id=version.project_id,
            version=version.version,
            name=version.name,
            n_items=version.n_items,
            label_distribution=version.label_distribution,
            split_counts=version.split_counts,
            content_hash=version.content_hash,
            created_by=version.created_by,
            created_at=version.created_at,
        )

    events.emit(
        session, EventType.dataset_version_created, project_id=version.project_id, data=data
    )


def frozen_training_rows(
    session: Session, *, version: DatasetVersion, features: bool
) -> Sequence[Any]:
    """(item id, label, item source, label source, text or current item data) of the rows a
    model may learn from (labels decided by people or by user behaviour), in item order."""
    columns: list[Any] = [
        DatasetRow.item_id,
        DatasetRow.label,
        DatasetRow.item_source,
        DatasetRow.label_source,
        Item.data if features else DatasetText.text,
    ]
    query = select(*columns).where(
        col(DatasetRow.dataset_version_id) == version.id,
        col(DatasetRow.label_source).in_(TRAINABLE_RESOLUTIONS),
    )
    if features:
        query = query.join(Item, col(Item.id) == col(DatasetRow.item_id))
    else:
        query = query.join(
            DatasetText,
            and_(
                col(DatasetText.project_id) == version.project_id,
                col(DatasetText.sha256) == col(DatasetRow.text_sha256),
            ),
        )
    rows: Sequence[Any] = session.exec(query.order_by(col(DatasetRow.item_id))).all()
    return rows


# --- reading ------------------------------------------------------------------------------------


def list_versions(session: Session, *, project: Project, page: PageRequest) -> list[DatasetVersion]:
    query = select(DatasetVersion).where(col(DatasetVersion.project_id) == project.id)
    return list(session.exec(keyset(query, col(DatasetVersion.id), page, descending=True)))


def get_version(session: Session, *, project: Project, version: int) -> DatasetVersion:
    found = session.exec(
        select(DatasetVersion).where(
            col(DatasetVersion.project_id) == project.id, col(DatasetVersion.version) == version
        )
    ).first()
    if found is None:
        raise NotFound(f"Project {project.id} has no dataset version {version}.")
    return found


def trained_models(session: Session, *, versions: list[DatasetVersion]) -> dict[int, list[int]]:
    """Registry model versions trained on each dataset version, by dataset version id."""
    if not versions:
        return {}
    by_number = {v.version: v.id or 0 for v in versions}
    rows = session.exec(
        select(ModelVersion.dataset_version, ModelVersion.version)
        .where(
            col(ModelVersion.project_id) == versions[0].project_id,
            col(ModelVersion.dataset_version).in_(list(by_number)),
        )
        .order_by(col(ModelVersion.version))
    ).all()
    result: dict[int, list[int]] = {v.id or 0: [] for v in versions}
    for dataset_version, model_version in rows:
        if dataset_version is not None:
            result[by_number[dataset_version]].append(model_version)
    return result


# --- export rows --------------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "item_id",
    "external_id",
    "text",
    "label",
    "label_source",
    "split",
    "n_annotators",
    "agreement",
)


# The export columns as stored, then the row's split hash (oversampling reads it).
EXPORT_SELECT: list[Any] = [
    DatasetRow.item_id,
    DatasetRow.external_id,
    DatasetText.text,
    DatasetRow.label,
    DatasetRow.label_source,
    DatasetRow.split,
    DatasetRow.n_annotators,
    DatasetRow.agreement,
    DatasetRow.split_hash,
]


def _split_clause(split: SplitFilter) -> list[ColumnElement[bool]]:
    return [] if split == SplitFilter.all else [col(DatasetRow.split) == split.value]


def _label_counts(session: Session, version_id: int, split: SplitFilter) -> dict[str, int]:
    rows = session.exec(
        select(DatasetRow.label, func.count())
        .where(col(DatasetRow.dataset_version_id) == version_id, *_split_clause(split))
        .group_by(col(DatasetRow.label))
    ).all()
    return dict(rows)


def _extra_copy_bounds(
    session: Session, version_id: int, split: SplitFilter, counts: dict[str, int]
) -> dict[str, tuple[int, int] | None]:
    """For oversampling: per label, the (split_hash, item_id) of the first row in hash order
    that gets no extra copy (None: every row of the label gets the same number of copies)."""
    target = max(counts.values())
    bounds: dict[str, tuple[int, int] | None] = {}
    for label, count in counts.items():
        extra = target % count
        if extra == 0:
            bounds[label] = None
            continue
        row = session.exec(
            select(DatasetRow.split_hash, DatasetRow.item_id)
            .where(
                col(DatasetRow.dataset_version_id) == version_id,
                col(DatasetRow.label) == label,
                *_split_clause(split),
            )
            .order_by(col(DatasetRow.split_hash), col(DatasetRow.item_id))
            .offset(extra)
            .limit(1)
        ).first()
        bounds[label] = (row[0], row[1]) if row else None
    return bounds


@dataclass
class _Balancing:
    """How export_rows balances the labels: a weight per label (balance=weight), or a number
    of copies per row (balance=oversample: target // count, one more below the label's
    bound); empty for balance=none."""

    balance: Balance
    counts: dict[str, int] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    bounds: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    target: int = 0


def _balancing(
    session: Session, version_id: int, split: SplitFilter, balance: Balance
) -> _Balancing:
    """The label counts, and from them the weights or the extra-copy bounds (one statement
    per label with extra copies)."""
    counts = _label_counts(session, version_id, split) if balance != Balance.none else {}
    plan = _Balancing(balance, counts, target=max(counts.values()) if counts else 0)
    if balance == Balance.weight and counts:
        total = sum(counts.values())
        plan.weights = {
            label: round(total / (len(counts) * n), WEIGHT_DECIMALS) for label, n in counts.items()
        }
    elif balance == Balance.oversample and counts:
        plan.bounds = _extra_copy_bounds(session, version_id, split, counts)
    return plan


def _export_page(
    session: Session, version: DatasetVersion, split: SplitFilter, after: int
) -> Sequence[Any]:
    """Up to EXPORT_CHUNK rows of EXPORT_SELECT after item id `after`, in item order."""
    rows: Sequence[Any] = session.exec(
        select(*EXPORT_SELECT)
        .join(
            DatasetText,
            and_(
                col(DatasetText.project_id) == version.project_id,
                col(DatasetText.sha256) == col(DatasetRow.text_sha256),
            ),
        )
        .where(
            col(DatasetRow.dataset_version_id) == (version.id or 0),
            col(DatasetRow.item_id) > after,
            *_split_clause(split),
        )
        .order_by(col(DatasetRow.item_id))
        .limit(EXPORT_CHUNK)
    ).all()
    return rows


def _page_chunks(rows: Sequence[Any], plan: _Balancing) -> Iterator[list[dict[str, Any]]]:
    """One page's records as chunks of at most EXPORT_CHUNK: weighted, repeated or as is.
    One loop with the balance tested per row (no function call per row: an export may be
    millions of rows)."""
    balance = plan.balance
    chunk: list[dict[str, Any]] = []
    for row in rows:
        record = dict(zip(EXPORT_COLUMNS, row[:-1], strict=True))
        label = record["label"]
        if balance == Balance.weight:
            record["weight"] = plan.weights[label]
            chunk.append(record)
        elif balance == Balance.oversample:
            copies = plan.target // plan.counts[label]
            bound = plan.bounds[label]
            if bound is not None and (row[-1], row[0]) < bound:
                copies += 1
            # At most EXPORT_CHUNK rows per chunk, however many copies: the writers
            # build each chunk's bytes at once, so an unbounded chunk is unbounded memory.
            while copies:
                taken = min(copies, EXPORT_CHUNK - len(chunk))
                chunk.extend([record] * taken)
                copies -= taken
                if len(chunk) >= EXPORT_CHUNK:
                    yield chunk
                    chunk = []
        else:
            chunk.append(record)
    if chunk:
        yield chunk


def export_rows(
    session: Session, *, version: DatasetVersion, split: SplitFilter, balance: Balance
) -> Iterator[list[dict[str, Any]]]:
    """The version's rows in item order, a chunk at a time, with a weight column when
    balance is weight and repeated rows when it is oversample."""
    plan = _balancing(session, version.id or 0, split, balance)
    after = 0
    while rows := _export_page(session, version, split, after):
        after = rows[-1][0]
        yield from _page_chunks(rows, plan)


def export_stream(
    database: Database,
    *,
    version: DatasetVersion,
    file_format: ExportFormat,
    split: SplitFilter,
    balance: Balance,
) -> Iterator[bytes]:
    """The export's bytes as they are produced. The rows are read in a session of the
    stream's own (the request's session is gone once the response starts)."""
    columns = list(EXPORT_COLUMNS) + (["weight"] if balance == Balance.weight else [])
    with database.session() as session:
        rows = export_rows(session, version=version, split=split, balance=balance)
        yield from export_chunks(file_format.value, rows, columns)


# --- diffs --------------------------------------------------------------------------------------


@dataclass
class _DiffConditions:
    """Two aliases of dataset_row, `new` (rows of the version) and `old` (rows of the one it
    is compared against), and per kind of change the conditions its rows meet."""

    new: Any
    old: Any
    same_item: Any
    both: Any
    by_change: dict[DiffChange, tuple[Any, ...]]

    @classmethod
    def between(cls, new_id: int, old_id: int) -> "_DiffConditions":
        new: Any = aliased(DatasetRow)
        old: Any = aliased(DatasetRow)

        def missing_from(rows: Any, other: Any, other_id: int) -> ColumnElement[bool]:
            return ~exists().where(
                other.dataset_version_id == other_id, other.item_id == rows.item_id
            )

        both = and_(new.dataset_version_id == new_id, old.dataset_version_id == old_id)
        same_item = new.item_id == old.item_id
        by_change: dict[DiffChange, tuple[Any, ...]] = {
            DiffChange.added: (new.dataset_version_id == new_id, missing_from(new, old, old_id)),
            DiffChange.removed: (old.dataset_version_id == old_id, missing_from(old, new, new_id)),
            DiffChange.relabeled: (both, same_item, new.label != old.label),
            DiffChange.text_changed: (
                both,
                same_item,
                new.label == old.label,
                new.text_sha256 != old.text_sha256,
            ),
        }
        return cls(new, old, same_item, both, by_change)


def _diff_counts(session: Session, on: _DiffConditions) -> tuple[dict[DiffChange, int], int]:
    """The number of items of each kind of change, and of unchanged items (five counts)."""
    new, old = on.new, on.old
    counts = {
        DiffChange.added: _count(
            session, select(func.count()).select_from(new), on.by_change[DiffChange.added]
        ),
        DiffChange.removed: _count(
            session, select(func.count()).select_from(old), on.by_change[DiffChange.removed]
        ),
    }
    joined = select(func.count()).select_from(new).join(old, on.same_item)
    for kind in (DiffChange.relabeled, DiffChange.text_changed):
        counts[kind] = _count(session, joined, on.by_change[kind])
    common = _count(session, joined, (on.both,))
    unchanged = common - counts[DiffChange.relabeled] - counts[DiffChange.text_changed]
    return counts, unchanged


def _changed_items(on: _DiffConditions, kind: DiffChange, after_id: int | None) -> Any:
    """The items changed in one way after `after_id`: (item_id, change, old_label,
    new_label)."""
    new, old = on.new, on.old
    if kind == DiffChange.added:
        query = select(
            new.item_id.label("item_id"),
            literal(kind.value).label("change"),
            null().label("old_label"),
            new.label.label("new_label"),
        ).where(*on.by_change[kind])
    elif kind == DiffChange.removed:
        query = select(
            old.item_id.label("item_id"),
            literal(kind.value).label("change"),
            old.label.label("old_label"),
            null().label("new_label"),
        ).where(*on.by_change[kind])
    else:
        query = (
            select(
                new.item_id.label("item_id"),
                literal(kind.value).label("change"),
                old.label.label("old_label"),
                new.label.label("new_label"),
            )
            .join(old, on.same_item)
            .where(*on.by_change[kind])
        )
    if after_id is not None:
        key = old.item_id if kind == DiffChange.removed else new.item_id
        query = query.where(key > after_id)
    return query


def diff(
    session: Session,
    *,
    version: DatasetVersion,
    against: DatasetVersion,
    change: DiffChange | None,
    page: PageRequest,
) -> DatasetDiff:
    """What changed from `against` to `version`: counts, and a page of the changed items in
    item order (one union of the kinds asked for)."""
    on = _DiffConditions.between(version.id or 0, against.id or 0)
    counts, unchanged = _diff_counts(session, on)
    parts = [
        _changed_items(on, kind, page.after_id)
        for kind in (DiffChange if change is None else [change])
    ]
    changed = union_all(*parts).subquery()
    rows = session.execute(
        sql_select(changed).order_by(changed.c.item_id).limit(page.limit + 1)
    ).all()
    kept = rows[: page.limit]
    more = len(rows) > page.limit and kept
    return DatasetDiff(
        version=version.version,
        against=against.version,
        added=counts[DiffChange.added],
        removed=counts[DiffChange.removed],
        relabeled=counts[DiffChange.relabeled],
        text_changed=counts[DiffChange.text_changed],
        unchanged=unchanged,
        items=[
            DiffEntry(
                item_id=r.item_id,
                change=DiffChange(r.change),
                old_label=r.old_label,
                new_label=r.new_label,
            )
            for r in kept
        ],
        next_cursor=encode_cursor(kept[-1].item_id) if more else None,
    )


def _count(session: Session, query: Any, conditions: tuple[Any, ...]) -> int:
    return int(session.execute(query.where(*conditions)).scalar_one())
