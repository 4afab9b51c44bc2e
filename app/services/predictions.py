"""Predictions: store them (from the registry's scoring or from other services' models) with
their uncertainty, and read an item's latest ones."""

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Table
from sqlmodel import Session, col, select

from app.errors import ErrorDetail, NotFound, Problem, ValidationFailed, refuse_if_all_failed
from app.ml.uncertainty import summarize
from app.models.base import utcnow
from app.models.item import Item
from app.models.model_version import REGISTRY_PREFIX, names_the_registry
from app.models.prediction import (
    Prediction,
    PredictionEntryResult,
    PredictionIn,
    PredictionPublic,
    PredictionReport,
    PredictionSource,
    probability_errors,
)
from app.models.project import Project

LOOKUP_CHUNK = 5_000
PROBABILITY_DECIMALS = 4


def prediction_rows(
    *,
    project_id: int,
    item_ids: Sequence[int],
    probabilities: np.ndarray,
    labels: Sequence[str],
    model_version: str,
    source: PredictionSource,
) -> list[dict[str, Any]]:
    """Rows for upsert_predictions from an (n, K) matrix whose columns follow labels."""
    summary = summarize(probabilities)
    now = utcnow()
    rounded = np.round(probabilities.astype(np.float64), PROBABILITY_DECIMALS).tolist()
    return [
        {
            "project_id": project_id,
            "item_id": item_id,
            "model_version": model_version,
            "source": source,
            "label": labels[top],
            "confidence": confidence,
            "margin": margin,
            "entropy": entropy,
            "probabilities": {label: p for label, p in zip(labels, row, strict=True) if p > 0},
            "created_at": now,
        }
        for item_id, top, confidence, margin, entropy, row in zip(
            item_ids,
            summary.top.tolist(),
            summary.confidence.tolist(),
            summary.margin.tolist(),
            summary.entropy.tolist(),
            rounded,
            strict=True,
        )
    ]


COLUMNS = (
    "project_id",
    "item_id",
    "model_version",
    "source",
    "label",
    "confidence",
    "margin",
    "entropy",
    "probabilities",
    "created_at",
)
REPLACED = ("source", "label", "confidence", "margin", "entropy", "probabilities", "created_at")
# PostgreSQL: rows are COPYed into this temporary table, then inserted from it in one
# statement (bench/model_speed.py: executemany of 1M rows took most of the scoring job).
INCOMING = "prediction_incoming"


PredictionColumns = tuple[list[str], list[float], list[float], list[float], list[str]]


def prediction_columns(probabilities: np.ndarray, labels: Sequence[str]) -> PredictionColumns:
    """(label, confidence, margin, entropy, probabilities as JSON), one entry per row of an
    (n, K) matrix whose columns follow labels: what a stored prediction holds besides its
    keys, as prediction_rows computes it. Pure, so scoring's worker processes compute it."""
    summary = summarize(probabilities)
    rounded = np.round(probabilities.astype(np.float64), PROBABILITY_DECIMALS).tolist()
    return (
        [labels[top] for top in summary.top.tolist()],
        summary.confidence.tolist(),
        summary.margin.tolist(),
        summary.entropy.tolist(),
        [
            json.dumps({label: p for label, p in zip(labels, row, strict=True) if p > 0})
            for row in rounded
        ],
    )


def store_predictions(
    session: Session,
    *,
    project_id: int,
    item_ids: Sequence[int],
    columns: PredictionColumns,
    model_version: str,
    source: PredictionSource,
) -> None:
    """upsert_predictions for one model's predictions given as prediction_columns (no dict
    per row: the scoring job's path for a million items)."""
    bind_time = _binders(session)[-1]
    now = utcnow() if bind_time is None else bind_time(utcnow())
    label, confidence, margin, entropy, probabilities = columns
    values = [
        (project_id, item_id, model_version, source, *rest, now)
        for item_id, *rest in zip(
            item_ids, label, confidence, margin, entropy, probabilities, strict=True
        )
    ]
    _write(session, values)


def upsert_predictions(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert or replace predictions by (item_id, model_version); flushes, never commits.
    Of two rows for the same (item, version), the last one wins."""
    if not rows:
        return
    binders = _binders(session)
    unique = {(row["item_id"], row["model_version"]): row for row in rows}
    _write(
        session,
        [
            tuple(
                value if bind is None else bind(value)
                for value, bind in zip((row[name] for name in COLUMNS), binders, strict=True)
            )
            for row in unique.values()
        ],
    )


def _binders(session: Session) -> list[Any]:
    """Each column's bind processor (None: as it is); JSON as the engines write it (json.dumps:
    the engines set no serializer of their own)."""
    table: Table = Prediction.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect
    return [
        json.dumps if name == "probabilities" else table.c[name].type.bind_processor(dialect)
        for name in COLUMNS
    ]


def _write(session: Session, values: list[tuple[Any, ...]]) -> None:
    """Insert or replace rows of bound COLUMNS values, unique by (item_id, model_version):
    COPY into a temporary table and one INSERT .. SELECT on PostgreSQL, one executemany on
    SQLite (flushes, never commits)."""
    if not values:
        return
    session.flush()
    connection = session.connection()
    columns = ", ".join(COLUMNS)
    update = ", ".join(f"{name} = excluded.{name}" for name in REPLACED)
    conflict = f"ON CONFLICT (item_id, model_version) DO UPDATE SET {update}"
    if connection.dialect.name != "postgresql":
        marks = ", ".join("?" * len(COLUMNS))
        connection.exec_driver_sql(
            f"INSERT INTO prediction ({columns}) VALUES ({marks}) {conflict}", values
        )
        return
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {INCOMING} ON COMMIT DELETE ROWS "
            f"AS SELECT {columns} FROM prediction WITH NO DATA"
        )
        cursor.execute(f"TRUNCATE {INCOMING}")
        with cursor.copy(f"COPY {INCOMING} ({columns}) FROM STDIN") as copy:
            for value in values:
                copy.write_row(value)
        cursor.execute(
            f"INSERT INTO prediction ({columns}) SELECT {columns} FROM {INCOMING} {conflict}"
        )
        cursor.execute(f"TRUNCATE {INCOMING}")


def submit_external_predictions(
    session: Session, *, project: Project, entries: list[PredictionIn]
) -> PredictionReport:
    """Validate each entry on its own; store the valid ones; one bad entry sinks only itself."""
    assert project.id is not None
    labels = sorted(project.labels)
    by_id, by_external = _resolve_items(session, project_id=project.id, entries=entries)
    report = PredictionReport()
    accepted: dict[tuple[int, str], tuple[int, np.ndarray]] = {}
    for index, entry in enumerate(entries):
        item_id = by_id.get(entry.item_id) if entry.item_id is not None else None
        if entry.external_id is not None:
            item_id = by_external.get(entry.external_id)
        problem = _entry_problem(index, entry, item_id, project.labels)
        if problem is not None:
            report.failed += 1
            report.results.append(
                PredictionEntryResult(index=index, status="failed", problem=problem)
            )
            continue
        assert item_id is not None
        vector = np.array([float(entry.probabilities.get(label, 0.0)) for label in labels])
        accepted[(item_id, entry.model_version)] = (index, vector / vector.sum())
        report.results.append(PredictionEntryResult(index=index, item_id=item_id, status="created"))
    refuse_if_all_failed(report.results, total=len(entries), noun="predictions")

    existing = _existing_pairs(session, keys=list(accepted))
    rows: list[dict[str, Any]] = []
    for (item_id, version), (_, vector) in accepted.items():
        rows.extend(
            prediction_rows(
                project_id=project.id,
                item_ids=[item_id],
                probabilities=vector[np.newaxis, :],
                labels=labels,
                model_version=version,
                source="external",
            )
        )
    upsert_predictions(session, rows)
    session.commit()
    seen: set[tuple[int, str]] = set()
    for result, entry in zip(report.results, entries, strict=True):
        if result.status == "failed" or result.item_id is None:
            continue
        key = (result.item_id, entry.model_version)
        result.status = "updated" if key in existing or key in seen else "created"
        seen.add(key)
        setattr(report, result.status, getattr(report, result.status) + 1)
    return report


def _entry_problem(
    index: int, entry: PredictionIn, item_id: int | None, labels: list[str]
) -> Problem | None:
    if names_the_registry(entry.model_version):
        detail = f"model_version must not start with {REGISTRY_PREFIX!r}: that names the registry."
        return ValidationFailed.problem(
            detail,
            errors=[ErrorDetail(loc=["body", index, "model_version"], msg=detail)],
        )
    if item_id is None:
        field = "item_id" if entry.item_id is not None else "external_id"
        reference = entry.item_id if entry.item_id is not None else entry.external_id
        detail = f"No item with {field} {reference!r} in this project."
        return NotFound.problem(
            detail,
            errors=[ErrorDetail(loc=["body", index, field], msg=detail)],
        )
    errors = probability_errors(entry.probabilities, labels)
    if not errors:
        return None
    details = [
        ErrorDetail(
            loc=["body", index, "probabilities"] + ([] if key == "probabilities" else [key]),
            msg=message,
        )
        for key, message in errors
    ]
    return ValidationFailed.problem(
        f"Invalid probabilities: {details[0].msg}"
        + (f" (and {len(details) - 1} more)" if len(details) > 1 else ""),
        errors=details,
    )


def _resolve_items(
    session: Session, *, project_id: int, entries: list[PredictionIn]
) -> tuple[dict[int, int], dict[str, int]]:
    ids = sorted({e.item_id for e in entries if e.item_id is not None})
    externals = sorted({e.external_id for e in entries if e.external_id is not None})
    by_id: dict[int, int] = {}
    by_external: dict[str, int] = {}
    for start in range(0, len(ids), LOOKUP_CHUNK):
        for item_id in session.exec(
            select(Item.id).where(
                col(Item.project_id) == project_id,
                col(Item.id).in_(ids[start : start + LOOKUP_CHUNK]),
            )
        ):
            assert item_id is not None
            by_id[item_id] = item_id
    for start in range(0, len(externals), LOOKUP_CHUNK):
        for item_id, external_id in session.exec(
            select(Item.id, Item.external_id).where(
                col(Item.project_id) == project_id,
                col(Item.external_id).in_(externals[start : start + LOOKUP_CHUNK]),
            )
        ):
            assert item_id is not None and external_id is not None
            by_external[external_id] = item_id
    return by_id, by_external


def _existing_pairs(session: Session, *, keys: list[tuple[int, str]]) -> set[tuple[int, str]]:
    found: set[tuple[int, str]] = set()
    item_ids = sorted({item_id for item_id, _ in keys})
    wanted = set(keys)
    for start in range(0, len(item_ids), LOOKUP_CHUNK):
        for item_id, version in session.exec(
            select(Prediction.item_id, Prediction.model_version).where(
                col(Prediction.item_id).in_(item_ids[start : start + LOOKUP_CHUNK])
            )
        ):
            if (item_id, version) in wanted:
                found.add((item_id, version))
    return found


def latest_predictions(session: Session, *, item_id: int, limit: int = 5) -> list[PredictionPublic]:
    rows = session.exec(
        select(Prediction)
        .where(col(Prediction.item_id) == item_id)
        .order_by(col(Prediction.created_at).desc(), col(Prediction.id).desc())
        .limit(limit)
    )
    return [PredictionPublic.model_validate(row.model_dump()) for row in rows]
