"""The click-log import job: apply the rules of app.sources.click_logs to the sessions, then
write the pairs' items (through the ingest's staging, app/services/items.py) and implicit
labels (through the one annotation writer) chunk by chunk; app/services/click_logs.py checks
and queues the job."""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.errors import (
    Conflict,
    DuplicateText,
    Problem,
    ValidationFailed,
    problem_type,
)
from app.jobs.context import JobContext
from app.models.base import AnnotationSource, ItemSource, utcnow
from app.models.item import Item
from app.models.job_kinds import (
    ClickLogsPayload,
    ImportClickLogsParams,
    ImportClickLogsResult,
    SkippedPair,
)
from app.models.project import Project
from app.services import annotation_writer, items
from app.services.click_logs import check_labels
from app.services.project_loading import load_project
from app.sources.click_logs import PairEvidence, summarize

CHUNK = 1_000  # pairs per transaction
MAX_ATTEMPTS = 3  # per chunk, when a concurrent write takes the same external_id or text
MAX_SKIPPED_LISTED = 20
PROVENANCE_KIND = "click_logs"


def run_click_logs_import(context: JobContext) -> ImportClickLogsResult:
    """Job function: apply the rules, then write chunk by chunk (each chunk commits; a
    cancelled job keeps the chunks written before it stopped, and re-sending is safe)."""
    asked = context.read_params(ImportClickLogsParams)
    sessions = context.read_payload(ClickLogsPayload).sessions
    summary = summarize(
        sessions, min_dwell_seconds=asked.min_dwell_seconds, max_position=asked.max_position
    )
    del sessions
    with context.database.session() as session:
        project = load_project(session, project_id=context.project_id)
        check_labels(project)
    provenance = {
        "kind": PROVENANCE_KIND,
        "name": asked.annotator,
        "job_id": context.job_id,
        "imported_at": utcnow().isoformat(),
    }
    thresholds = {
        "min_dwell_seconds": asked.min_dwell_seconds,
        "max_position": asked.max_position,
    }
    report = _Report()
    pairs = summary.pairs
    for start in range(0, len(pairs), CHUNK):
        context.progress(0.05 + 0.9 * start / len(pairs))
        chunk = pairs[start : start + CHUNK]
        report.absorb(
            _write_with_retries(
                context,
                project=project,
                chunk=chunk,
                annotator=asked.annotator,
                provenance=provenance,
                thresholds=thresholds,
            )
        )
    return ImportClickLogsResult(
        sessions=summary.sessions,
        impressions=summary.impressions,
        pairs=len(pairs),
        rules=summary.rules(),
        impressions_by_kind=summary.impressions_by_kind(),
        conflicts=summary.conflicts(),
        min_dwell_seconds=asked.min_dwell_seconds,
        max_position=asked.max_position,
        annotator=asked.annotator,
        items={
            name: report.items[name]
            for name in ("created", "updated", "unchanged", "skipped_duplicate_text")
        },
        labels={name: report.labels[name] for name in ("created", "replaced", "unchanged")},
        skipped=[SkippedPair.model_validate(skipped) for skipped in report.skipped],
    )


@dataclass
class _Report:
    items: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def absorb(self, other: "_Report") -> None:
        self.items.update(other.items)
        self.labels.update(other.labels)
        self.skipped.extend(other.skipped[: MAX_SKIPPED_LISTED - len(self.skipped)])


def _write_with_retries(
    context: JobContext,
    *,
    project: Project,
    chunk: list[PairEvidence],
    annotator: str,
    provenance: dict[str, Any],
    thresholds: dict[str, Any],
) -> _Report:
    """One chunk in one transaction; a unique-constraint race with a concurrent write of the
    same labels rolls back and replays the chunk, which then sees the other write's rows
    (item races are replayed by `items.stage_items` itself)."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with context.database.session(write=True) as session:
            try:
                report = _write_chunk(
                    session,
                    project=project,
                    chunk=chunk,
                    annotator=annotator,
                    provenance=provenance,
                    thresholds=thresholds,
                    max_text_chars=context.settings.max_text_chars,
                )
                session.commit()
                return report
            except IntegrityError:
                session.rollback()
                if attempt == MAX_ATTEMPTS:
                    raise Conflict(
                        "The import kept colliding with concurrent writes of the same items; "
                        "retry the job (already written chunks stay, and are unchanged)."
                    ) from None
    raise AssertionError("unreachable")


def _write_chunk(
    session: Session,
    *,
    project: Project,
    chunk: list[PairEvidence],
    annotator: str,
    provenance: dict[str, Any],
    thresholds: dict[str, Any],
    max_text_chars: int,
) -> _Report:
    """Stage the chunk's items, then write their implicit labels through `annotation_writer`,
    which re-derives the items' status (flushes; the caller commits)."""
    report = _Report()
    staged = _stage_pairs(
        session,
        project=project,
        chunk=chunk,
        provenance=provenance,
        max_text_chars=max_text_chars,
        report=report,
    )
    written = annotation_writer.write_annotations(
        session,
        project=project,
        default_annotator=annotator,
        entries=[
            annotation_writer.MachineAnswer(
                item_id=item_id,
                annotator=annotator,
                label=pair.label,
                source=AnnotationSource.user_behavior,
                provenance={
                    **provenance,
                    "rule": pair.rule,
                    **thresholds,
                    "impressions": pair.evidence(),
                },
            )
            for pair, item_id in staged
            if pair.label is not None
        ],
    )
    report.labels.update(
        created=written.created, replaced=written.replaced, unchanged=written.unchanged
    )
    return report


def _stage_pairs(
    session: Session,
    *,
    project: Project,
    chunk: list[PairEvidence],
    provenance: dict[str, Any],
    max_text_chars: int,
    report: _Report,
) -> list[tuple[PairEvidence, int]]:
    """The pairs' items through `items.stage_items`, as every ingest: the same external_id is
    the same item (its content restored if it was edited since), a text another item already
    has is skipped (e.g. doc ids that differ only in case). Counts them into `report`; returns
    each pair that has its item, with the item's id."""
    assert project.id is not None
    entries = [
        (
            index,
            {
                "external_id": pair.external_id,
                "text": pair.text,
                "data": {"query": pair.query, "doc_id": pair.doc_id},
                "source": ItemSource.user_behavior.value,
            },
        )
        for index, pair in enumerate(chunk)
    ]
    staged = items.stage_items(
        session, project_id=project.id, entries=entries, max_text_chars=max_text_chars
    )
    items.record_provenance(session, report=staged, provenance=provenance)
    kept: list[tuple[PairEvidence, int]] = []
    skipped: list[tuple[PairEvidence, int | None]] = []
    for result in staged.results:
        pair = chunk[result.index]
        if result.status in ("created", "updated", "unchanged"):
            assert result.id is not None
            report.items[result.status] += 1
            kept.append((pair, result.id))
        elif result.status == "duplicate" or _duplicate_text(result.problem):
            report.items["skipped_duplicate_text"] += 1
            skipped.append((pair, result.id))
        else:  # the database refused a value: as a refused write always has, the job fails
            assert result.problem is not None
            raise ValidationFailed(
                f"The pair ({pair.query!r}, {pair.doc_id!r}) cannot be stored: "
                f"{result.problem.detail}"
            )
    report.skipped = _skipped(session, project=project, skipped=skipped[:MAX_SKIPPED_LISTED])
    return kept


def _duplicate_text(problem: Problem | None) -> bool:
    """An edited item whose restored text another item has taken meanwhile."""
    return problem is not None and problem.type == problem_type(DuplicateText.slug)


def _skipped(
    session: Session, *, project: Project, skipped: list[tuple[PairEvidence, int | None]]
) -> list[dict[str, Any]]:
    """The skipped pairs as the result lists them, each with the item that has its text
    (looked up for an edited item whose text another one has taken: ingest names it only in
    its problem)."""
    unknown = {items.content_hash(pair.text) for pair, owner in skipped if owner is None}
    owners: dict[str, int | None] = {}
    if unknown:
        found = session.exec(
            select(Item.content_hash, Item.id).where(
                col(Item.project_id) == project.id, col(Item.content_hash).in_(unknown)
            )
        )
        owners = dict(found.all())
    return [
        {
            "query": pair.query,
            "doc_id": pair.doc_id,
            "item_id": owners.get(items.content_hash(pair.text)) if owner is None else owner,
        }
        for pair, owner in skipped
    ]
