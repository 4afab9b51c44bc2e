"""Alembic environment: metadata from app.models, URL from settings, batch mode for SQLite."""

from logging.config import fileConfig

from sqlalchemy import Connection

from alembic import context
from app.db import build_engine
from app.models import SQLModel
from app.settings import get_settings

config = context.config
if config.config_file_name is not None and not config.attributes.get("database_url"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """procrastinate's tables (the `labelwise worker` queue) are not ours to compare."""
    return not (type_ == "table" and (name or "").startswith("procrastinate_"))


def database_url() -> str:
    return config.attributes.get("database_url") or get_settings().resolved_database_url


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    settings = get_settings().model_copy(update={"database_url": database_url()})
    engine = build_engine(settings)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch mode rebuilds a table (copy, DROP, rename); with foreign keys on, the DROP
            # deletes the old rows and fails on every row that references them (SQLite's own
            # recipe for schema changes turns them off). The pragma only works outside a
            # transaction, so it goes to the driver before SQLAlchemy begins one.
            _sqlite_pragma(connection, "PRAGMA foreign_keys = OFF")
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            compare_type=True,
            include_name=include_name,
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
        if sqlite:
            _sqlite_pragma(connection, "PRAGMA foreign_keys = ON")
    engine.dispose()


def _sqlite_pragma(connection: Connection, pragma: str) -> None:
    driver = connection.connection.driver_connection
    assert driver is not None
    driver.execute(pragma)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
