"""Migrations go up and down on both databases, and the models match the migrated schema."""

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from app.migrations import downgrade, head_revision, upgrade
from app.models import SQLModel
from tests.databases import fresh_database


def test_head_base_head_and_no_autogenerate_diff(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        upgrade(url)
        downgrade(url, "base")
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.connect() as connection:
            assert set(sa.inspect(connection).get_table_names()) <= {"alembic_version"}
        upgrade(url)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert context.get_current_revision() == head_revision()
            assert compare_metadata(context, SQLModel.metadata) == []
        engine.dispose()
