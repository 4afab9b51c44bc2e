"""Load a project by id, optionally locking its row: the one loader of every request and job.

A leaf: it imports only the models and the errors, so any service can use it without an
import cycle.
"""

from sqlmodel import Session

from app.errors import NotFound
from app.models.project import Project

# FOR NO KEY UPDATE on PostgreSQL (SQLite renders no clause). Two lockers of one project, and
# an UPDATE or DELETE of the project row, wait for each other; rows that only reference the
# project (items, annotations, batches, leases) take FOR KEY SHARE and do not wait, so
# annotators keep working while a freeze or a production request holds the lock.
NO_KEY_UPDATE = {"key_share": True}


def load_project(session: Session, *, project_id: int | None, lock: bool = False) -> Project:
    """The project, or NotFound (404) when no project has this id (a job's may have been
    deleted since it was queued).

    With lock, its row stays locked until the transaction ends, so the callers that number
    things per project (dataset and model versions), switch its active model or count its
    daily production quota run one at a time; on SQLite the write transaction already keeps
    other writers out. A locked load re-reads the row even when the session holds it already
    (the route's dependency loaded it before the lock was granted), so the caller sees what the
    previous holder committed."""
    project = None
    if project_id is not None:
        project = session.get(
            Project,
            project_id,
            with_for_update=NO_KEY_UPDATE if lock else None,
            populate_existing=lock,
        )
    if project is None:
        raise NotFound(f"No project with id {project_id}.")
    return project
