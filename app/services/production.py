"""Continuous labeling: production predictions arrive with their items, each UTC day's sample
(the lowest-confidence predictions, then uniformly random ones) goes to the review queue, and
the reviewers' decisions measure how often humans disagree with the production model.

Sampling happens on each POST, inside its transaction, under a lock on the project row, so
concurrent requests never exceed a day's quota. Only items nobody has settled are sampled:
an item with a human answer or decision, or already waiting in review for another reason,
is left alone (its prediction stays unsampled).
"""

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError
from sqlmodel import Session, col, func, select

from app.errors import (
    ErrorDetail,
    Problem,
    ValidationFailed,
    refuse_if_all_failed,
)
from app.ml import disagreement
from app.models.base import HUMAN_RESOLUTIONS
from app.models.item import IngestEntryResult, Item
from app.models.production import (
    LOW_CONFIDENCE,
    RANDOM,
    Confusion,
    DailyQuota,
    DisagreementStats,
    LabelDisagreement,
    ModelVersionDisagreement,
    PeriodDisagreement,
    ProductionDisagreement,
    ProductionEntryResult,
    ProductionIngestReport,
    ProductionPrediction,
    ProductionPredictionIn,
    ProductionReport,
    ProductionSampling,
    ProductionSamplingPublic,
    ReasonDisagreement,
    ReportBucket,
    SampleReason,
)
from app.models.project import Project
from app.pagination import Page, PageRequest, encode_cursor
from app.services import item_status, items
from app.services.project_loading import load_project
from app.services.scoring import unsettled_condition

ENTRY_ADAPTER: TypeAdapter[ProductionPredictionIn] = TypeAdapter(ProductionPredictionIn)
TABLE: sa.Table = ProductionPrediction.__table__  # type: ignore[attr-defined]
CHUNK = 1_000
EPOCH = date(1970, 1, 1)
DECIMALS = 4
# A predicted_at later than this after the request arrived is a sender's error, not skew.
MAX_CLOCK_SKEW = timedelta(minutes=5)
# What makes two production predictions the same: item, model_version, predicted_at, label,
# confidence.
PredictionKey = tuple[int, str, datetime | None, str, float]


# --- ingest and sampling ------------------------------------------------------------------------


def record_production_predictions(
    session: Session,
    *,
    project: Project,
    entries: Sequence[Any],
    max_text_chars: int,
    now: datetime,
) -> ProductionIngestReport:
    """Upsert each entry's item (source production), store its prediction, then send what is
    left of today's quotas to review. Each entry is validated on its own; if every entry
    fails, nothing is written and the answer is a 422."""
    assert project.id is not None
    now = now.astimezone(UTC)
    results: dict[int, ProductionEntryResult] = {}
    valid = _validate_entries(entries, results, max_text_chars=max_text_chars, now=now)
    refuse_if_all_failed(_in_order(results), total=len(entries), noun="predictions")

    # Serialise production requests of a project: each one counts today's quota after the
    # previous one committed.
    project = load_project(session, project_id=project.id, lock=True)
    _drop_unknown_labels(project, valid, results)
    assert project.id is not None
    ingest_results = _upsert_items(
        session, project_id=project.id, entries=valid, max_text_chars=max_text_chars
    )
    item_ids = _stored_item_ids(ingest_results, valid, results)
    if not valid:
        session.rollback()
        refuse_if_all_failed(_in_order(results), total=len(entries), noun="predictions")

    stored = _store_predictions(session, project=project, entries=valid, item_ids=item_ids, now=now)
    sampled, quota = _sample_today(session, project=project, now=now)
    session.commit()

    items_created = sum(ingest_results[index].status == "created" for index in item_ids)
    report = ProductionIngestReport(
        items_created=items_created, entered_review=len(sampled), quota=quota
    )
    for index in valid:
        prediction_id, is_new = stored[index]
        results[index] = ProductionEntryResult(
            index=index,
            status="stored" if is_new else "unchanged",
            item_id=item_ids[index],
            item_status=ingest_results[index].status,
            prediction_id=prediction_id,
            sample_reason=sampled.get(prediction_id),
        )
    report.results = _in_order(results)
    counts = Counter(result.status for result in report.results)
    report.stored, report.unchanged, report.failed = (
        counts["stored"],
        counts["unchanged"],
        counts["failed"],
    )
    return report


def _validate_entries(
    entries: Sequence[Any],
    results: dict[int, ProductionEntryResult],
    *,
    max_text_chars: int,
    now: datetime,
) -> dict[int, ProductionPredictionIn]:
    """The valid entries by index; each invalid one's failure goes into `results`."""
    valid: dict[int, ProductionPredictionIn] = {}
    for index, raw in enumerate(entries):
        entry, problem = _validate(index, raw, max_text_chars=max_text_chars, now=now)
        if problem is not None:
            results[index] = ProductionEntryResult(index=index, status="failed", problem=problem)
        else:
            assert entry is not None
            valid[index] = entry
    return valid


def _drop_unknown_labels(
    project: Project,
    valid: dict[int, ProductionPredictionIn],
    results: dict[int, ProductionEntryResult],
) -> None:
    """Fail the entries whose label the (freshly locked) project does not have."""
    for index, entry in list(valid.items()):
        if entry.label not in project.labels:
            detail = f"Unknown label {entry.label!r}; the project's labels are {project.labels}."
            problem = _problem(index, detail, field="label")
            results[index] = ProductionEntryResult(index=index, status="failed", problem=problem)
            del valid[index]


def _stored_item_ids(
    ingest_results: dict[int, IngestEntryResult],
    valid: dict[int, ProductionPredictionIn],
    results: dict[int, ProductionEntryResult],
) -> dict[int, int]:
    """Each entry's item id; an entry whose item could not be stored leaves `valid` and
    fails in `results`, its problem pointing at the entry."""
    item_ids: dict[int, int] = {}
    for index, outcome in ingest_results.items():
        if outcome.status == "failed" or outcome.id is None:
            problem = outcome.problem or ValidationFailed.problem("The item could not be stored.")
            if problem.errors is None:  # e.g. a 409 duplicate-text: point at the entry
                loc: list[str | int] = ["body", "predictions", index]
                problem.errors = [ErrorDetail(loc=loc, msg=problem.detail)]
            results[index] = ProductionEntryResult(
                index=index, status="failed", item_status="failed", problem=problem
            )
            del valid[index]
            continue
        item_ids[index] = outcome.id
    return item_ids


def _in_order(results: dict[int, ProductionEntryResult]) -> list[ProductionEntryResult]:
    return [results[index] for index in sorted(results)]


def _validate(
    index: int, raw: Any, *, max_text_chars: int, now: datetime
) -> tuple[ProductionPredictionIn | None, Problem | None]:
    try:
        entry = ENTRY_ADAPTER.validate_python(raw)
    except ValidationError as error:
        details = [
            ErrorDetail(loc=["body", "predictions", index, *e["loc"]], msg=e["msg"])
            for e in error.errors(include_url=False)
        ]
        summary = "; ".join(f"{'.'.join(map(str, d.loc[3:])) or 'entry'}: {d.msg}" for d in details)
        return None, ValidationFailed.problem(summary, errors=details)
    if len(entry.text) > max_text_chars:
        detail = f"text: {len(entry.text)} characters, over the limit of {max_text_chars}"
        return None, _problem(index, detail, field="text")
    if entry.predicted_at is not None and entry.predicted_at > now + MAX_CLOCK_SKEW:
        detail = (
            f"predicted_at {entry.predicted_at.isoformat()} is in the future (received "
            f"{now.isoformat()}); send the time the model predicted, with its UTC offset"
        )
        return None, _problem(index, detail, field="predicted_at")
    return entry, None


def _problem(index: int, detail: str, *, field: str) -> Problem:
    """A 422 for one field of one entry."""
    return ValidationFailed.problem(
        detail,
        errors=[ErrorDetail(loc=["body", "predictions", index, field], msg=detail)],
    )


def _upsert_items(
    session: Session,
    *,
    project_id: int,
    entries: dict[int, ProductionPredictionIn],
    max_text_chars: int,
) -> dict[int, IngestEntryResult]:
    """Each entry's item through bulk ingest (same external_id: the same item; same text: the
    existing item). A new item's source is production; an existing one keeps its source and
    data, and its metadata unless the entry sends metadata."""
    existing = _items_by_external_id(session, project_id=project_id, external_ids=entries)
    raw: list[tuple[int, Any]] = []
    for index, entry in entries.items():
        known = existing.get(entry.external_id)
        metadata = entry.metadata
        if known is None:
            fields = {"source": "production", "data": {}, "metadata": metadata or {}}
        else:
            source, data, meta = known
            fields = {
                "source": source,
                "data": data,
                "metadata": meta if metadata is None else metadata,
            }
        raw.append((index, {"external_id": entry.external_id, "text": entry.text, **fields}))
    report = items.stage_items(
        session, project_id=project_id, entries=raw, max_text_chars=max_text_chars
    )
    return {result.index: result for result in report.results}


def _items_by_external_id(
    session: Session, *, project_id: int, external_ids: dict[int, ProductionPredictionIn]
) -> dict[str, tuple[str, dict[str, Any], dict[str, Any]]]:
    wanted = sorted({entry.external_id for entry in external_ids.values()})
    t = Item.__table__.c  # type: ignore[attr-defined]
    found: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}
    for start in range(0, len(wanted), CHUNK):
        rows = session.execute(
            sa.select(t.external_id, t.source, t.data, t.metadata).where(
                t.project_id == project_id, t.external_id.in_(wanted[start : start + CHUNK])
            )
        )
        for external_id, source, data, meta in rows:
            found[external_id] = (source, data, meta)
    return found


def _store_predictions(
    session: Session,
    *,
    project: Project,
    entries: dict[int, ProductionPredictionIn],
    item_ids: dict[int, int],
    now: datetime,
) -> dict[int, tuple[int, bool]]:
    """Insert the predictions; per entry (prediction id, newly stored). A prediction sent with
    its predicted_at that is already stored (a retried request), or twice in this request, is
    stored once."""
    keys = {
        index: (
            item_ids[index],
            entry.model_version,
            entry.predicted_at.astimezone(UTC) if entry.predicted_at else None,
            entry.label,
            entry.confidence,
        )
        for index, entry in entries.items()
    }
    known = _stored_keys(session, keys=[key for key in keys.values() if key[2] is not None])
    first: dict[PredictionKey, int] = {}  # key -> the entry of this request that stores it
    rows: list[dict[str, Any]] = []
    new_indexes: list[int] = []
    for index, key in keys.items():
        item_id, model_version, predicted_at, label, confidence = key
        if predicted_at is not None and (key in known or key in first):
            continue
        if predicted_at is not None:
            first[key] = index
        rows.append(
            {
                "project_id": project.id,
                "item_id": item_id,
                "label": label,
                "confidence": confidence,
                "model_version": model_version,
                "predicted_at": predicted_at or now,
                "received_at": now,
            }
        )
        new_indexes.append(index)
    stored: dict[int, tuple[int, bool]] = {}
    if rows:
        inserted = session.execute(
            sa.insert(TABLE).returning(TABLE.c.id, sort_by_parameter_order=True), rows
        ).all()
        for index, (prediction_id,) in zip(new_indexes, inserted, strict=True):
            stored[index] = (prediction_id, True)
    for index, key in keys.items():
        if index not in stored:
            stored[index] = (known[key], False) if key in known else (stored[first[key]][0], False)
    return stored


def _stored_keys(session: Session, *, keys: list[PredictionKey]) -> dict[PredictionKey, int]:
    """The already stored predictions among keys (item, version, predicted_at, label, conf)."""
    if not keys:
        return {}
    wanted = set(keys)
    item_ids = sorted({k[0] for k in keys})
    instants = [k[2] for k in keys if k[2] is not None]
    earliest, latest = min(instants), max(instants)
    found: dict[PredictionKey, int] = {}
    for start in range(0, len(item_ids), CHUNK):
        rows = session.execute(
            sa.select(
                TABLE.c.id,
                TABLE.c.item_id,
                TABLE.c.model_version,
                TABLE.c.predicted_at,
                TABLE.c.label,
                TABLE.c.confidence,
            ).where(
                TABLE.c.item_id.in_(item_ids[start : start + CHUNK]),
                TABLE.c.predicted_at.between(earliest, latest),
            )
        )
        for prediction_id, *key in rows:
            candidate = (key[0], key[1], key[2], key[3], key[4])
            if candidate in wanted:
                found.setdefault(candidate, prediction_id)
    return found


def _day_bounds(now: datetime) -> tuple[date, datetime, datetime]:
    day = now.astimezone(UTC).date()
    start = datetime.combine(day, time(), tzinfo=UTC)
    return day, start, start + timedelta(days=1)


def _sample_today(
    session: Session, *, project: Project, now: datetime
) -> tuple[dict[int, SampleReason], DailyQuota]:
    """Send what is left of today's quotas to review: today's unsampled predictions on
    unsettled items (one per item, its latest), lowest confidence first below the threshold,
    then uniformly at random (seeded by project, day and how many were sampled before)."""
    config = ProductionSampling.model_validate(project.production_sampling)
    day, start, end = _day_bounds(now)
    today = (
        col(ProductionPrediction.project_id) == project.id,
        col(ProductionPrediction.received_at) >= start,
        col(ProductionPrediction.received_at) < end,
    )
    used: dict[str | None, int] = dict(
        session.exec(
            select(ProductionPrediction.sample_reason, func.count())
            .where(*today, col(ProductionPrediction.sample_reason).is_not(None))
            .group_by(col(ProductionPrediction.sample_reason))
        ).all()
    )
    left_low = max(0, config.daily_low_confidence - used.get(LOW_CONFIDENCE, 0))
    left_random = max(0, config.daily_random - used.get(RANDOM, 0))
    chosen: dict[int, SampleReason] = {}
    if left_low or left_random:
        chosen = _choose(
            session,
            project=project,
            today=today,
            config=config,
            left=(left_low, left_random),
            seed=[project.id or 0, day.toordinal(), sum(used.values())],
        )
        chosen = _send_to_review(session, project=project, chosen=chosen, now=now)
    sent = Counter(chosen.values())
    quota = DailyQuota(
        day=day,
        daily_low_confidence=config.daily_low_confidence,
        daily_random=config.daily_random,
        low_confidence_below=config.low_confidence_below,
        sampled_low_confidence=used.get(LOW_CONFIDENCE, 0) + sent[LOW_CONFIDENCE],
        sampled_random=used.get(RANDOM, 0) + sent[RANDOM],
    )
    return chosen, quota


def _eligible() -> list[Any]:
    """Conditions on Item: nobody settled it (no human answer or decision) and it is not
    waiting in review for another reason."""
    return [
        col(Item.review_reason).is_(None),
        sa.or_(col(Item.resolved_by).is_(None), col(Item.resolved_by) == "model"),
        unsettled_condition(),
    ]


def _choose(
    session: Session,
    *,
    project: Project,
    today: tuple[Any, ...],
    config: ProductionSampling,
    left: tuple[int, int],
    seed: list[int],
) -> dict[int, SampleReason]:
    rows = session.exec(
        select(
            ProductionPrediction.id,
            ProductionPrediction.item_id,
            ProductionPrediction.label,
            ProductionPrediction.confidence,
        )
        .join(Item, col(Item.id) == col(ProductionPrediction.item_id))
        .where(*today, col(ProductionPrediction.sampled_at).is_(None), *_eligible())
        .order_by(col(ProductionPrediction.id))
    ).all()
    labels = set(project.labels)
    latest: dict[int, tuple[int, float]] = {}  # item -> its latest prediction today
    for prediction_id, item_id, label, confidence in rows:
        if label in labels and prediction_id is not None:
            latest[item_id] = (prediction_id, confidence)
    candidates = sorted(latest.values())
    if not candidates:
        return {}
    sample = disagreement.choose_daily_sample(
        np.array([confidence for _, confidence in candidates]),
        threshold=config.low_confidence_below,
        n_low_confidence=left[0],
        n_random=left[1],
        seed=seed,
    )
    chosen: dict[int, SampleReason] = {}
    for reason, positions in ((LOW_CONFIDENCE, sample.low_confidence), (RANDOM, sample.random)):
        for position in positions.tolist():
            chosen[candidates[position][0]] = reason
    return chosen


def _send_to_review(
    session: Session, *, project: Project, chosen: dict[int, SampleReason], now: datetime
) -> dict[int, SampleReason]:
    """Mark the chosen predictions sampled and put their items in the review queue with the
    production label as the suggestion. The items are locked first, in id order (as every
    writer locks them), then checked again: one a human answered meanwhile is left alone."""
    predictions: dict[int, ProductionPrediction] = {}
    for chunk in _chunks(sorted(chosen)):
        for prediction in session.exec(
            select(ProductionPrediction).where(col(ProductionPrediction.id).in_(chunk))
        ):
            predictions[prediction.item_id] = prediction
    sent: dict[int, SampleReason] = {}
    touched: list[int] = []
    for chunk in _chunks(sorted(predictions)):
        locked = {
            item.id: item
            for item in session.exec(
                select(Item)
                .where(col(Item.id).in_(chunk))
                .order_by(col(Item.id))
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        }
        # A statement after the lock: it sees what was committed while waiting for it.
        still_eligible = session.exec(select(Item.id).where(col(Item.id).in_(chunk), *_eligible()))
        for item_id in still_eligible:
            assert item_id is not None
            item, prediction = locked[item_id], predictions[item_id]
            assert prediction.id is not None
            reason = chosen[prediction.id]
            item.review_reason = reason
            item.suggested_label = prediction.label
            item.suggestion_confidence = round(prediction.confidence, 6)
            item.updated_at = now
            prediction.sampled_at, prediction.sample_reason = now, reason
            session.add_all([item, prediction])
            sent[prediction.id] = reason
            touched.append(item_id)
    session.flush()
    item_status.refresh_items(session, project=project, item_ids=touched)
    return sent


def _chunks(values: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


# --- the report and the training signal ---------------------------------------------------------


def production_report(
    session: Session,
    *,
    project: Project,
    bucket: ReportBucket,
    model_version: str | None,
    sample_reason: SampleReason | None,
) -> ProductionReport:
    """Model-vs-human disagreement on the sampled predictions whose items a human decided."""
    rows = _sampled_predictions(
        session, project=project, model_version=model_version, sample_reason=sample_reason
    )
    outcomes = _Outcomes.of(rows)
    grouped = outcomes.grouped
    days = np.array(
        [(predicted.astimezone(UTC).date() - EPOCH).days for predicted, *_ in rows], dtype=np.int64
    )
    periods = disagreement.period_starts(days, bucket).tolist()
    return ProductionReport(
        bucket=bucket,
        model_version=model_version,
        sample_reason=sample_reason,
        sampling=ProductionSamplingPublic.model_validate(project.production_sampling),
        overall=DisagreementStats(
            **_stats(disagreement.disagreement_rate(outcomes.decided, outcomes.disagreed))
        ),
        by_sample_reason=[
            ReasonDisagreement(sample_reason=key, **stats)
            for key, stats in grouped([reason for _, _, _, reason, _, _ in rows])
        ],
        by_period=[
            PeriodDisagreement(period_start=EPOCH + timedelta(days=key), **stats)
            for key, stats in grouped(periods)
        ],
        by_label=[LabelDisagreement(label=key, **stats) for key, stats in grouped(outcomes.labels)],
        by_model_version=[
            ModelVersionDisagreement(model_version=key, **stats)
            for key, stats in grouped([version for _, _, version, _, _, _ in rows])
        ],
        confusions=[
            Confusion(production_label=model, human_label=by_human, n=n)
            for model, by_human, n in disagreement.confusions(outcomes.labels, outcomes.human)
        ],
    )


def _sampled_predictions(
    session: Session,
    *,
    project: Project,
    model_version: str | None,
    sample_reason: SampleReason | None,
) -> Sequence[Any]:
    """The project's sampled predictions, optionally of one model version or sample reason:
    (predicted_at, label, model_version, sample_reason, resolved_label, resolved_by)."""
    query = (
        sa.select(
            col(ProductionPrediction.predicted_at),
            col(ProductionPrediction.label),
            col(ProductionPrediction.model_version),
            col(ProductionPrediction.sample_reason),
            col(Item.resolved_label),
            col(Item.resolved_by),
        )
        .join(Item, col(Item.id) == col(ProductionPrediction.item_id))
        .where(
            col(ProductionPrediction.project_id) == project.id,
            col(ProductionPrediction.sampled_at).is_not(None),
        )
    )
    if model_version is not None:
        query = query.where(col(ProductionPrediction.model_version) == model_version)
    if sample_reason is not None:
        query = query.where(col(ProductionPrediction.sample_reason) == sample_reason)
    return session.execute(query).all()


@dataclass
class _Outcomes:
    """Per sampled prediction: its label, the human label (None unless a human decided the
    item), whether a human decided and whether they disagreed."""

    labels: list[str]
    human: list[str | None]
    decided: np.ndarray
    disagreed: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[Any]) -> "_Outcomes":
        labels = [label for _, label, _, _, _, _ in rows]
        human = [resolved if by in HUMAN_RESOLUTIONS else None for _, _, _, _, resolved, by in rows]
        decided = np.array([h is not None for h in human], dtype=bool)
        disagreed = np.array(
            [h is not None and h != label for label, h in zip(labels, human, strict=True)],
            dtype=bool,
        )
        return cls(labels, human, decided, disagreed)

    def grouped(self, keys: Sequence[Any]) -> list[tuple[Any, dict[str, Any]]]:
        """The disagreement statistics per distinct key (one key per prediction)."""
        return [
            (key, _stats(rate))
            for key, rate in disagreement.rates_by_group(keys, self.decided, self.disagreed)
        ]


def _stats(rate: disagreement.DisagreementRate) -> dict[str, Any]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, DECIMALS)

    return {
        "n_sampled": rate.n_sampled,
        "n_decided": rate.n_decided,
        "n_disagreed": rate.n_disagreed,
        "disagreement_rate": rounded(rate.rate),
        "ci_low": rounded(rate.ci_low),
        "ci_high": rounded(rate.ci_high),
    }


def list_disagreements(
    session: Session,
    *,
    project: Project,
    model_version: str | None,
    label: str | None,
    page: PageRequest,
) -> Page[ProductionDisagreement]:
    """Sampled predictions whose item a human decided otherwise, in prediction order."""
    query = (
        sa.select(
            col(ProductionPrediction.id),
            col(ProductionPrediction.item_id),
            col(Item.external_id),
            col(Item.text),
            col(ProductionPrediction.label),
            col(ProductionPrediction.confidence),
            col(ProductionPrediction.model_version),
            col(Item.resolved_label),
            col(Item.resolved_by),
            col(ProductionPrediction.predicted_at),
            col(ProductionPrediction.sample_reason),
        )
        .join(Item, col(Item.id) == col(ProductionPrediction.item_id))
        .where(
            col(ProductionPrediction.project_id) == project.id,
            col(ProductionPrediction.sampled_at).is_not(None),
            col(Item.resolved_by).in_(HUMAN_RESOLUTIONS),
            col(Item.resolved_label) != col(ProductionPrediction.label),
        )
    )
    if model_version is not None:
        query = query.where(col(ProductionPrediction.model_version) == model_version)
    if label is not None:
        query = query.where(col(ProductionPrediction.label) == label)
    if page.after_id is not None:
        query = query.where(col(ProductionPrediction.id) > page.after_id)
    rows = session.execute(query.order_by(col(ProductionPrediction.id)).limit(page.limit + 1)).all()
    kept = rows[: page.limit]
    more = len(rows) > page.limit and bool(kept)
    return Page[ProductionDisagreement](
        items=[
            ProductionDisagreement(
                prediction_id=row[0],
                item_id=row[1],
                external_id=row[2],
                text=row[3],
                production_label=row[4],
                confidence=row[5],
                model_version=row[6],
                human_label=row[7],
                decided_by=row[8],
                predicted_at=row[9],
                sample_reason=row[10],
            )
            for row in kept
        ],
        next_cursor=encode_cursor(kept[-1][0]) if more and kept[-1][0] is not None else None,
    )
