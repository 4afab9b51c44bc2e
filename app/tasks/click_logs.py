"""The click-log import job: apply the rules of app.sources.click_logs to the sessions, then
write the pairs' items and implicit labels chunk by chunk (app/services/click_logs.py queues
the job and writes each chunk)."""

from app.jobs.context import JobContext
from app.models.base import utcnow
from app.models.job_kinds import (
    ClickLogsPayload,
    ImportClickLogsParams,
    ImportClickLogsResult,
    SkippedPair,
)
from app.services import models
from app.services.click_logs import _Report, _write_with_retries, check_labels
from app.sources.click_logs import summarize

CHUNK = 1_000  # pairs per transaction
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
        project = models.load_project(session, context.project_id)
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
    with context.database.session(write=True) as session:
        retrain = models.auto_retrain_job(session, project=project)
        session.commit()
    if retrain is not None and retrain.id is not None:
        context.follow_ups.append(retrain.id)
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
