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


def alembic_config(database_url: str) -> Config:
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
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        raise NotReady(f"The schema is at {current}, not at {head}; run `labelwise migrate`.")
    return RevisionStatus(dialect=engine.dialect.name, current=current, head=head)
