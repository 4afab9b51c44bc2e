"""Click-log imports: search sessions become query-document items with implicit labels.

The request is checked and queued as a job; the job (app/tasks/click_logs.py) applies the
rules of `app.sources.click_logs` and writes one transaction per chunk of pairs: the pair's item
(`source: "user_behavior"`, a deterministic external_id, so a re-import updates instead of
duplicating) and, when the rules give one, its implicit label: an annotation with `source:
"user_behavior"` under the import's annotator name. Implicit labels are not votes
(`VOTE_SOURCES`): they resolve an item only while no person has (`item_status`), and train
models with a lower weight (`model_versions.USER_BEHAVIOR_WEIGHT`). A pair the rules leave unlabeled
still becomes an item, for people (or a model) to label; it never removes an earlier label.
"""

from sqlmodel import Session

from app.errors import (
    ErrorDetail,
    LabelsMissing,
)
from app.jobs.context import JobRunner
from app.models.click_logs import REQUIRED_LABELS, ClickLogsImport
from app.models.job import Job, JobKind
from app.models.job_kinds import ClickLogsPayload, ImportClickLogsParams
from app.models.project import Project
from app.services import jobs
from app.services.api_keys import Principal


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
