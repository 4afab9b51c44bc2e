"""SQL sources for imports: named connections configured on the server (LABELWISE_SQL_SOURCES,
{name: SQLAlchemy URL}), opened read-only by construction, and a query's rows streamed in
chunks.

Read-only, whatever the query says:
* SQLite is opened as `file:<path>?mode=ro` (a URI the engine's creator builds, so the path is
  the configured one), with `PRAGMA query_only`, no ATTACH, and an authorizer that allows
  reading and nothing else;
* PostgreSQL sessions start with `default_transaction_read_only=on` and every transaction
  with `SET TRANSACTION READ ONLY`.
Every transaction is rolled back at the end. Parameters are bound by the driver, never
interpolated. A connection URL carries credentials: no message from here contains it.

Bounded in time (`LABELWISE_SQL_SOURCE_TIMEOUT_SECONDS`): PostgreSQL sessions start with
`statement_timeout`, which bounds each statement (the cursor's DECLARE, and each FETCH of a
chunk of rows); a SQLite connection has a progress handler that interrupts the query once it
has run that long since it started or since its last chunk of rows was asked for. Either way
the query stops with SqlQueryTimeout.
"""

import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, CursorResult, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from app.errors import (
    ErrorDetail,
    NotFound,
    SqlQueryFailed,
    SqlQueryTimeout,
    SqlSourceMisconfigured,
    SqlSourceUnavailable,
    ValidationFailed,
)
from app.sources.rows import RowChunk, SourceRow, json_safe

SUPPORTED_BACKENDS = ("sqlite", "postgresql")
_SQLITE_ALLOWED = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
    sqlite3.SQLITE_TRANSACTION,  # BEGIN / ROLLBACK write nothing
}
# Pragmas that only read, as SQLAlchemy asks them on connect (never an assignment).
_SQLITE_READ_PRAGMAS = {"read_uncommitted", "table_info", "table_xinfo", "database_list"}
READ_ONLY_HINT = "import connections are read-only: run one SELECT"
# PostgreSQL's SQLSTATE query_canceled: what statement_timeout raises.
_PG_QUERY_CANCELED = "57014"
# SQLite virtual-machine instructions between two looks at the clock.
_SQLITE_PROGRESS_STEPS = 10_000


@dataclass(frozen=True)
class SqlSource:
    """A configured connection: its name, and its URL, which is never shown."""

    name: str
    url: URL = field(repr=False)

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()

    def scrub(self, message: str) -> str:
        """The message without the URL or any of its parts (credentials, host, path)."""
        secrets = [
            self.url.render_as_string(hide_password=False),
            self.url.password if isinstance(self.url.password, str) else None,
            self.url.username,
            self.url.host,
            self.url.database,
        ]
        for secret in sorted((s for s in secrets if s and len(s) >= 3), key=len, reverse=True):
            message = message.replace(secret, "***")
        return message


def resolve_source(sources: Mapping[str, str], name: str) -> SqlSource:
    """The configured connection called `name`: 404 if there is none, 503 if its URL is
    unusable (the message names the connection, never the URL)."""
    if name not in sources:
        configured = ", ".join(sorted(sources)) or "none"
        raise NotFound(
            f"No SQL connection named {name!r} is configured on this server (LABELWISE_SQL_"
            f"SOURCES names: {configured})."
        )
    try:
        url = make_url(sources[name])
    except (ArgumentError, ValueError):
        raise SqlSourceMisconfigured(
            f"The server's SQL connection {name!r} is not a valid SQLAlchemy URL."
        ) from None
    source = SqlSource(name, url)
    if source.backend not in SUPPORTED_BACKENDS:
        raise SqlSourceMisconfigured(
            f"The server's SQL connection {name!r} uses {source.backend}; imports can open only "
            f"{' and '.join(SUPPORTED_BACKENDS)} read-only."
        )
    if source.backend == "sqlite" and url.database in (None, "", ":memory:"):
        raise SqlSourceMisconfigured(f"The server's SQL connection {name!r} names no SQLite file.")
    return source


def query_parameters(query: str) -> set[str]:
    """The `:name` placeholders of a query, as sqlalchemy.text reads them."""
    return set(sa.text(query).compile().params)


def check_params(query: str, params: Mapping[str, Any]) -> None:
    """422 unless the query's placeholders and the given params are the same names."""
    wanted = query_parameters(query)
    errors = [
        ErrorDetail(loc=["body", "params"], msg=f"the query uses :{name}, which params lacks")
        for name in sorted(wanted - params.keys())
    ] + [
        ErrorDetail(loc=["body", "params", name], msg="the query has no :" + name)
        for name in sorted(params.keys() - wanted)
    ]
    if errors:
        raise ValidationFailed(
            "params must give a value for each :name placeholder of the query, and no other: "
            + "; ".join(e.msg for e in errors)
            + ". (Write \\: for a colon that is not a placeholder.)",
            errors=errors,
        )


# --- read-only engines ---------------------------------------------------------------------------


def _sqlite_authorizer(
    action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None
) -> int:
    if action in _SQLITE_ALLOWED:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg2 is None and arg1 in _SQLITE_READ_PRAGMAS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


class Deadline:
    """The time limit of a query's statements: `restart` before each one; `expired` once it
    has run `seconds` (then it is interrupted). The limit `None` never expires."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.hit = False
        self._ends = float("inf")
        self.restart()

    def restart(self) -> None:
        if self.seconds is not None:
            self._ends = time.monotonic() + self.seconds

    def expired(self) -> bool:
        """SQLite's progress handler: nonzero interrupts the running statement."""
        if time.monotonic() > self._ends:
            self.hit = True
        return self.hit


def _sqlite_connector(path: str, deadline: Deadline) -> Any:
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
        connection.execute("PRAGMA query_only = ON")
        connection.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        connection.set_authorizer(_sqlite_authorizer)
        connection.set_progress_handler(deadline.expired, _SQLITE_PROGRESS_STEPS)
        return connection

    return connect


def read_only_engine(source: SqlSource, deadline: Deadline | None = None) -> Engine:
    """An engine that can only read `source` (see the module docstring), whose statements
    stop at the deadline's limit (None: no limit)."""
    deadline = deadline or Deadline(None)
    if source.backend == "sqlite":
        return sa.create_engine(
            "sqlite://",
            creator=_sqlite_connector(source.url.database or "", deadline),
            poolclass=sa.NullPool,
            hide_parameters=True,
        )
    url = source.url
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    ours = ["-c default_transaction_read_only=on"]
    if deadline.seconds is not None:
        ours.append(f"-c statement_timeout={max(1, round(deadline.seconds * 1000))}")
    options = " ".join(o for o in (str(url.query.get("options", "")), *ours) if o)
    engine = sa.create_engine(
        url.difference_update_query(["options"]),
        poolclass=sa.NullPool,
        connect_args={"options": options, "prepare_threshold": None, "connect_timeout": 10},
        hide_parameters=True,
    )

    @sa.event.listens_for(engine, "begin")
    def _read_only_transaction(connection: Connection) -> None:
        # On a plain DBAPI cursor: the connection's own may be a server-side one, which
        # would wrap this statement in DECLARE ... CURSOR.
        cursor = connection.connection.cursor()
        try:
            cursor.execute("SET TRANSACTION READ ONLY")
        finally:
            cursor.close()

    return engine


def _timed_out(error: SQLAlchemyError, deadline: Deadline) -> bool:
    """Whether the statement was stopped by the time limit: SQLite's progress handler
    interrupted it, or PostgreSQL's statement_timeout cancelled it."""
    if deadline.seconds is None:
        return False
    orig = getattr(error, "orig", None)
    return deadline.hit or getattr(orig, "sqlstate", None) == _PG_QUERY_CANCELED


def _timeout(source: SqlSource, deadline: Deadline, rows_read: int) -> SqlQueryTimeout:
    seconds = deadline.seconds
    return SqlQueryTimeout(
        f"The query on {source.name!r} ran longer than the {seconds:g} s one statement may run "
        f"(LABELWISE_SQL_SOURCE_TIMEOUT_SECONDS) and was stopped after row {rows_read}. Make it "
        "cheaper (an index, a narrower WHERE, a smaller max_rows) or ask the server's operator "
        "to raise the limit; rows imported before it stay, and running the import again is "
        "idempotent.",
        context={"timeout_seconds": seconds, "rows_read": rows_read},
    )


def _driver_reason(error: SQLAlchemyError) -> str:
    orig = getattr(error, "orig", None)
    text = str(orig if orig is not None else error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- reading -------------------------------------------------------------------------------------


class QueryRows:
    """The rows of a running query, in chunks of at most `chunk_size`, stopping after
    `max_rows`; `capped` tells afterwards whether rows were left unread."""

    def __init__(
        self,
        source: SqlSource,
        result: CursorResult[Any],
        *,
        max_rows: int,
        chunk_size: int,
        deadline: Deadline | None = None,
    ) -> None:
        self.source = source
        self._deadline = deadline or Deadline(None)
        self.columns: list[str] = list(result.keys())
        self.rows_read = 0
        self.capped = False
        self._result = result
        self._max_rows = max_rows
        self._chunk_size = chunk_size

    def __iter__(self) -> Iterator[RowChunk]:
        columns = self.columns
        try:
            while self.rows_read < self._max_rows:
                wanted = min(self._chunk_size, self._max_rows - self.rows_read)
                self._deadline.restart()
                rows = self._result.fetchmany(wanted)
                if not rows:
                    return
                first = self.rows_read + 1
                self.rows_read += len(rows)
                yield [
                    SourceRow(number, {c: json_safe(v) for c, v in zip(columns, row, strict=True)})
                    for number, row in enumerate(rows, start=first)
                ]
            self._deadline.restart()
            self.capped = self._result.fetchone() is not None
        except SQLAlchemyError as error:
            if _timed_out(error, self._deadline):
                raise _timeout(self.source, self._deadline, self.rows_read) from None
            raise SqlQueryFailed(
                f"Reading the query's rows from {self.source.name!r} failed after row "
                f"{self.rows_read}: {self.source.scrub(_driver_reason(error))}."
            ) from None


@contextmanager
def open_query(
    source: SqlSource,
    *,
    query: str,
    params: Mapping[str, Any],
    max_rows: int,
    chunk_size: int,
    timeout_seconds: float | None = None,
) -> Iterator[QueryRows]:
    """Run the query on a read-only connection and stream its rows (a server-side cursor on
    PostgreSQL); the transaction is rolled back and the connection closed afterwards. A
    statement that runs longer than `timeout_seconds` (None: no limit) is stopped with
    SqlQueryTimeout."""
    deadline = Deadline(timeout_seconds)
    engine = read_only_engine(source, deadline)
    try:
        try:
            connection = engine.connect()
        except SQLAlchemyError as error:
            raise SqlSourceUnavailable(
                f"Cannot connect to the SQL connection {source.name!r}: "
                f"{source.scrub(_driver_reason(error))}."
            ) from None
        with connection:
            try:
                deadline.restart()
                result = connection.execution_options(
                    stream_results=True, yield_per=chunk_size
                ).execute(sa.text(query), dict(params))
            except SQLAlchemyError as error:
                if _timed_out(error, deadline):
                    raise _timeout(source, deadline, 0) from None
                raise SqlQueryFailed(
                    f"The query failed on {source.name!r} ({READ_ONLY_HINT}): "
                    f"{source.scrub(_driver_reason(error))}."
                ) from None
            if not result.returns_rows:
                raise SqlQueryFailed(f"The query returns no rows ({READ_ONLY_HINT}).")
            try:
                yield QueryRows(
                    source, result, max_rows=max_rows, chunk_size=chunk_size, deadline=deadline
                )
            finally:
                result.close()
    finally:
        engine.dispose()
