"""Click-log imports: search sessions become query-document items with implicit labels.

The request is checked and queued as a job; the job applies the rules of
`app.sources.click_logs` and writes one transaction per chunk of pairs: the pair's item
(`source: "user_behavior"`, a deterministic external_id, so a re-import updates instead of
duplicating) and, when the rules give one, its implicit label: an annotation with `source:
"user_behavior"` under the import's annotator name. Implicit labels are not votes
(`VOTE_SOURCES`): they resolve an item only while no person has (`item_status`), and train
models with a lower weight (`model_versions.USER_BEHAVIOR_WEIGHT`). A pair the rules leave unlabeled
still becomes an item, for people (or a model) to label; it never removes an earlier label.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.errors import Conflict, ErrorDetail, ValidationFailed
from app.jobs.context import JobContext, JobRunner
from app.models.annotation import Annotation
from app.models.base import AnnotationSource, ItemSource, ItemStatus, utcnow
from app.models.click_logs import REQUIRED_LABELS, ClickLogsImport, ClickSession
from app.models.item import Item
from app.models.job import PAYLOAD_PARAM, Job, JobKind
from app.models.prediction import Prediction
from app.models.project import Project
from app.services import item_status, jobs, model_versions
from app.services.api_keys import Principal
from app.services.items import content_hash
from app.services.project_loading import load_project
from app.sources.click_logs import PairEvidence, summarize

CHUNK = 1_000  # pairs per transaction
MAX_ATTEMPTS = 3  # per chunk, when a concurrent write takes the same external_id or text
MAX_SKIPPED_LISTED = 20
PROVENANCE_KIND = "click_logs"
SESSIONS: TypeAdapter[list[ClickSession]] = TypeAdapter(list[ClickSession])


class LabelsMissing(ValidationFailed):
    slug = "labels-missing"


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
        params={
            "kind": request.kind,
            "min_dwell_seconds": request.min_dwell_seconds,
            "max_position": request.max_position,
            "annotator": request.annotator,
            "sessions": len(request.sessions),
            "impressions": sum(len(s.results) for s in request.sessions),
            PAYLOAD_PARAM: {"sessions": [s.model_dump(mode="json") for s in request.sessions]},
        },
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


def run_click_logs_import(context: JobContext) -> dict[str, Any]:
    """Job function: apply the rules, then write chunk by chunk (each chunk commits; a
    cancelled job keeps the chunks written before it stopped, and re-sending is safe)."""
    p = context.params
    sessions = SESSIONS.validate_python(p[PAYLOAD_PARAM]["sessions"])
    summary = summarize(
        sessions, min_dwell_seconds=p["min_dwell_seconds"], max_position=p["max_position"]
    )
    del sessions
    with context.database.session() as session:
        project = load_project(session, project_id=context.project_id)
        check_labels(project)
    provenance = {
        "kind": PROVENANCE_KIND,
        "name": p["annotator"],
        "job_id": context.job_id,
        "imported_at": utcnow().isoformat(),
    }
    thresholds = {"min_dwell_seconds": p["min_dwell_seconds"], "max_position": p["max_position"]}
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
                annotator=p["annotator"],
                provenance=provenance,
                thresholds=thresholds,
            )
        )
    with context.database.session(write=True) as session:
        retrain = model_versions.auto_retrain_job(session, project=project)
        session.commit()
    if retrain is not None and retrain.id is not None:
        context.follow_ups.append(retrain.id)
    return {
        "sessions": summary.sessions,
        "impressions": summary.impressions,
        "pairs": len(pairs),
        "rules": summary.rules(),
        "impressions_by_kind": summary.impressions_by_kind(),
        "conflicts": summary.conflicts(),
        **thresholds,
        "annotator": p["annotator"],
        "items": {
            name: report.items[name]
            for name in ("created", "updated", "unchanged", "skipped_duplicate_text")
        },
        "labels": {name: report.labels[name] for name in ("created", "replaced", "unchanged")},
        "skipped": report.skipped,
    }


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
    same items rolls back and replays the chunk, which then sees the other write's rows."""
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
) -> _Report:
    """Upsert the chunk's items, then their implicit labels, then re-derive their status
    (flushes; the caller commits)."""
    assert project.id is not None
    report = _Report()
    now = utcnow()
    digests = {pair.external_id: content_hash(pair.text) for pair in chunk}
    # Existing items first, locked in id order as every writer locks them.
    existing = {
        item.external_id: item
        for item in session.exec(
            select(Item)
            .where(col(Item.project_id) == project.id, col(Item.external_id).in_(digests))
            .order_by(col(Item.id))
            .with_for_update()
        )
    }
    owners: dict[str, int | Item | None] = dict(
        session.exec(
            select(Item.content_hash, Item.id).where(
                col(Item.project_id) == project.id, col(Item.content_hash).in_(digests.values())
            )
        ).all()
    )
    items: list[tuple[PairEvidence, Item]] = []
    skipped: list[tuple[PairEvidence, int | Item | None]] = []
    changed_ids: list[int] = []
    for pair in chunk:
        digest, data = digests[pair.external_id], {"query": pair.query, "doc_id": pair.doc_id}
        item = existing.get(pair.external_id)
        if digest in owners and (item is None or owners[digest] != item.id):
            # Another item has this text (e.g. doc ids that differ only in case): keep it.
            report.items["skipped_duplicate_text"] += 1
            skipped.append((pair, owners[digest]))
            continue
        if item is None:
            item = Item(
                project_id=project.id,
                external_id=pair.external_id,
                text=pair.text,
                content_hash=digest,
                data=data,
                meta={},
                source=ItemSource.user_behavior,
                status=ItemStatus.unlabeled,
                provenance=provenance,
                created_at=now,
                updated_at=now,
            )
            session.add(item)
            owners[digest] = item  # taken within this chunk
            report.items["created"] += 1
        elif (item.text, item.data, item.source) == (pair.text, data, ItemSource.user_behavior):
            report.items["unchanged"] += 1
        else:  # edited since through POST .../items: the pair's content is restored
            item.text, item.content_hash, item.data = pair.text, digest, data
            item.source, item.provenance = ItemSource.user_behavior, provenance
            item.updated_at = now
            session.add(item)
            owners[digest] = item.id
            assert item.id is not None
            changed_ids.append(item.id)
            report.items["updated"] += 1
        items.append((pair, item))
    session.flush()
    report.skipped = [
        {
            "query": pair.query,
            "doc_id": pair.doc_id,
            "item_id": owner.id if isinstance(owner, Item) else owner,
        }
        for pair, owner in skipped[:MAX_SKIPPED_LISTED]
    ]
    if changed_ids:  # a prediction describes the old content
        session.execute(sa.delete(Prediction).where(col(Prediction.item_id).in_(changed_ids)))

    labeled = [(pair, item) for pair, item in items if pair.label is not None]
    current = {
        a.item_id: a
        for a in session.exec(
            select(Annotation).where(
                col(Annotation.item_id).in_([item.id for _, item in labeled]),
                col(Annotation.annotator) == annotator,
                col(Annotation.is_current),
            )
        )
    }
    new: list[Annotation] = []
    for pair, item in labeled:
        assert item.id is not None
        previous = current.get(item.id)
        if previous is not None and (previous.label, previous.abstain, previous.source) == (
            pair.label,
            False,
            AnnotationSource.user_behavior,
        ):
            report.labels["unchanged"] += 1
            continue
        if previous is not None:
            previous.is_current, previous.replaced_at = False, now
            session.add(previous)
        new.append(
            Annotation(
                project_id=project.id,
                item_id=item.id,
                annotator=annotator,
                label=pair.label,
                abstain=False,
                source=AnnotationSource.user_behavior,
                provenance={
                    **provenance,
                    "rule": pair.rule,
                    **thresholds,
                    "impressions": pair.evidence(),
                },
                is_current=True,
                created_at=now,
            )
        )
        report.labels["replaced" if previous is not None else "created"] += 1
    session.flush()  # retire replaced labels first: one current annotation per annotator
    session.add_all(new)
    session.flush()
    item_status.refresh_items(session, project=project, item_ids=[a.item_id for a in new])
    return report
