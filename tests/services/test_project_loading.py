"""The one project loader: 404 for an unknown id, and a locked load that re-reads the row."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlmodel import Session, col

from app.errors import NotFound
from app.models.project import Project, ProjectCreate
from app.services.project_loading import load_project
from app.services.projects import create_project
from tests.factories import unique


@contextmanager
def statements(session: Session) -> Iterator[list[str]]:
    """The SQL the session sends while the block runs."""
    sent: list[str] = []
    connection = session.connection()

    def record(*args: Any) -> None:
        sent.append(args[2])

    event.listen(connection, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(connection, "before_cursor_execute", record)


def make(session: Session) -> Project:
    data = ProjectCreate(name=unique("loading"), labels=["pos", "neg"])
    return create_project(session, data=data)


@pytest.mark.parametrize("lock", [False, True])
def test_an_unknown_or_missing_id_is_not_found(session: Session, lock: bool) -> None:
    for project_id in (2_000_000_000, None):
        with pytest.raises(NotFound, match=f"No project with id {project_id}."):
            load_project(session, project_id=project_id, lock=lock)


def test_a_locked_load_rereads_the_row_the_session_already_holds(session: Session) -> None:
    project = make(session)
    change = update(Project).where(col(Project.id) == project.id).values(guidelines="new")
    session.execute(change.execution_options(synchronize_session=False))  # as another writer
    assert load_project(session, project_id=project.id).guidelines == ""  # the session's copy
    assert load_project(session, project_id=project.id, lock=True).guidelines == "new"


def test_the_lock_leaves_rows_that_reference_the_project_free(session: Session) -> None:
    """FOR NO KEY UPDATE: an annotation or item insert (FOR KEY SHARE on the project) does not
    wait for it. SQLite has no row locks; its write transaction serialises writers."""
    project = make(session)
    with statements(session) as sent:
        load_project(session, project_id=project.id, lock=True)
    (select,) = sent
    if session.get_bind().dialect.name == "postgresql":
        assert select.rstrip().endswith("FOR NO KEY UPDATE")
    else:
        assert "FOR " not in select
