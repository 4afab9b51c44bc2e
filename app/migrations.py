"""Run Alembic migrations from code and tell whether a database is at head."""

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from alembic import command
from app.errors import NotReady

ROOT = Path(__file__).resolve().parent.parent


class MigrationsMissing(Exception):
    """alembic.ini or alembic/ is not beside app/ (an install that left them out)."""


def alembic_config(database_url: str) -> Config:
    for needed in (ROOT / "alembic.ini", ROOT / "alembic" / "env.py"):
        if not needed.is_file():
            raise MigrationsMissing(
                f"cannot find {needed}: the migrations ship beside app/ in a source checkout; "
                "install it with `pip install -e .` (as the Makefile and the Dockerfile do)"
            )
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


@lru_cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision; None for a database that was never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@dataclass(frozen=True)
class RevisionStatus:
    dialect: str
    current: str | None
    head: str


def schema_revision_status(engine: Engine) -> RevisionStatus:
    """The database's revision; raises NotReady if it is not at head. A database that cannot
    be reached raises its driver's error: the route answers it as a database fault (503
    database-unavailable, app/db_faults.py)."""
    head = head_revision()
    current = current_revision(engine)
    if current != head:
        raise NotReady(f"The schema is at {current}, not at {head}; run `labelwise migrate`.")
    return RevisionStatus(dialect=engine.dialect.name, current=current, head=head)
