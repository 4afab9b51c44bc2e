"""Click-log imports: search sessions become query-document items with implicit labels.

The request is checked and queued as a job; the job (app/tasks/click_logs.py) applies the
rules of `app.sources.click_logs` and writes one transaction per chunk of pairs: the pair's item
(`source: "user_behavior"`, a deterministic external_id, so a re-import updates instead of
duplicating) and, when the rules give one, its implicit label: an annotation with `source:
"user_behavior"` under the import's annotator name. Implicit labels are not votes
(`VOTE_SOURCES`): they resolve an item only while no person has (`item_status`), and train
models with a lower weight (`models.USER_BEHAVIOR_WEIGHT`). A pair the rules leave unlabeled
still becomes an item, for people (or a model) to label; it never removes an earlier label.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.errors import (
    Conflict,
    DuplicateText,
    ErrorDetail,
    LabelsMissing,
    Problem,
    ValidationFailed,
    problem_type,
)
from app.jobs.context import JobContext, JobRunner
from app.models.base import AnnotationSource, ItemSource
from app.models.click_logs import REQUIRED_LABELS, ClickLogsImport
from app.models.item import Item
from app.models.job import Job, JobKind
from app.models.job_kinds import ClickLogsPayload, ImportClickLogsParams
from app.models.project import Project
from app.services import annotation_writer, items, jobs
from app.services.api_keys import Principal
from app.sources.click_logs import PairEvidence

MAX_ATTEMPTS = 3  # per chunk, when a concurrent write takes the same external_id or text
MAX_SKIPPED_LISTED = 20


def check_labels(project: Project) -> None:
    """An import writes `relevant` and `not_relevant`: the project must have both."""
    missing = [label for label in REQUIRED_LABELS if label not in project.labels]
    if missing:
        raise LabelsMissing(
            f"A click-log import labels pairs {' or '.join(map(repr, REQUIRED_LABELS))}, and "
            f"this project's labels ({', '.join(project.labels)}) lack {', '.join(missing)}; "
            "add them (PATCH /v1/projects/{id}) first. Nothing was queued.",
            errors=[ErrorDetail(loc=["body", "kind"], msg=f"project lacks labels {missing}")],
        )


def start_click_logs_import(
    session: Session,
    runner: JobRunner,
    *,
    project: Project,
    principal: Principal,
    request: ClickLogsImport,
) -> Job:
    """Queue the import; a project without the two labels is a 422 and nothing is queued."""
    check_labels(project)
    return jobs.submit_job(
        session,
        runner,
        project_id=project.id,
        kind=JobKind.import_click_logs,
        params=ImportClickLogsParams(
            kind=request.kind,
            min_dwell_seconds=request.min_dwell_seconds,
            max_position=request.max_position,
            annotator=request.annotator,
            sessions=len(request.sessions),
            impressions=sum(len(s.results) for s in request.sessions),
        ),
        payload=ClickLogsPayload(sessions=request.sessions),
        created_by=principal.name,
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
