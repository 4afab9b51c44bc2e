"""Database engine for SQLite (embedded default) or PostgreSQL, and the request session."""

import os
import sqlite3
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Engine,
    Integer,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, SQLModel

from app.settings import Settings

WRITE_OPTION = "labelwise_write"
CONNECT_TIMEOUT_SECONDS = 5


def refusal_reason(error: DataError) -> str:
    """The driver's one-line reason for refusing a value, without the SQL or parameters."""
    return str(error.orig).splitlines()[0] if error.orig else "a value is out of range"


@dataclass
class CommitWatch:
    """Whether a write transaction began to commit while this watch was current: from then on
    a failure leaves the outcome unknown, so the work must not be silently run again."""

    started: bool = False


_COMMIT_WATCH: ContextVar[CommitWatch | None] = ContextVar("labelwise_commit_watch", default=None)


@contextmanager
def watch_commits() -> Iterator[CommitWatch]:
    """Watch the write commits of this context (a request's thread-pool calls inherit it)."""
    watch = CommitWatch()
    token = _COMMIT_WATCH.set(watch)
    try:
        yield watch
    finally:
        _COMMIT_WATCH.reset(token)


def _note_commit(connection: Any) -> None:
    """Engine `commit` event, fired before the DBAPI commit: mark the current watch, for write
    transactions only (a SQLite write request's dependencies commit a read of their own)."""
    watch = _COMMIT_WATCH.get()
    if watch is not None and connection.get_execution_options().get(WRITE_OPTION, False):
        watch.started = True


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def build_engine(settings: Settings) -> Engine:
    url = settings.resolved_database_url
    if not is_sqlite(url):
        # No server-side prepared statements: after five runs psycopg prepares a query and
        # PostgreSQL may switch to a generic plan, which for `project_id = $1 AND
        # content_hash IN (...900 values...)` became a 1-2 s scan instead of index probes.
        # pool_pre_ping: a connection a restart or pg_terminate_backend closed is replaced at
        # checkout; connect_timeout: an unreachable server fails a request in seconds, not
        # minutes (app.db_faults turns both into 503s).
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=20,
            connect_args={"prepare_threshold": None, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
            hide_parameters=True,  # errors must not log annotations, texts or key hashes
        )
        event.listen(engine, "commit", _note_commit)
        return engine

    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "factory": QueuedSQLiteConnection},
        pool_size=10,
        hide_parameters=True,
    )
    event.listen(engine, "commit", _note_commit)
    _configure_sqlite(
        engine, busy_timeout_ms=settings.sqlite_busy_timeout_ms, line=write_line(database)
    )
    return engine


class WriteLine:
    """The writers of one SQLite database in this process, in line for its write lock.

    SQLite lets one transaction write at a time. A writer that finds the lock taken sleeps in
    SQLite's busy handler (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms, ...) and retries;
    a newcomer can take the lock between the retries, so under a team's load a few writers
    waited half a second or more while most waited none. Here the writers of this process
    wait in a FIFO instead: `acquire` before BEGIN IMMEDIATE, `release` once the transaction
    has ended, and the turn passes straight to the next in line, which is woken at once.
    Other processes (job children) still meet SQLite's busy handler, as one more writer each.
    """

    def __init__(self) -> None:
        self._reset()
        _EVERY_LINE.add(self)

    def _reset(self) -> None:
        self._mutex = threading.Lock()
        self._waiting: deque[threading.Lock] = deque()
        self._held = False

    @property
    def held(self) -> bool:
        """Whether a writer has the turn."""
        return self._held

    @property
    def waiting(self) -> int:
        """Writers waiting for their turn."""
        with self._mutex:
            return len(self._waiting)

    def acquire(self, timeout: float) -> bool:
        """Wait for this writer's turn, at most `timeout` seconds; whether it came."""
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append(turn)
        if turn.acquire(timeout=min(timeout, threading.TIMEOUT_MAX)):
            return True
        with self._mutex:
            if turn in self._waiting:
                self._waiting.remove(turn)
                return False
        return True  # handed over just as the wait timed out

    def release(self) -> None:
        """End the current turn: hand it to the longest waiting writer, if any."""
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().release()
            else:
                self._held = False


_LINES: dict[str, WriteLine] = {}
_LINES_MUTEX = threading.Lock()
_EVERY_LINE: "weakref.WeakSet[WriteLine]" = weakref.WeakSet()


def write_line(database: str | None) -> WriteLine:
    """The process's one line for the SQLite file `database` (every engine on the file
    shares it, as they share SQLite's lock); a line of its own for an in-memory database."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return WriteLine()
    key = os.path.realpath(database)
    with _LINES_MUTEX:
        return _LINES.setdefault(key, WriteLine())


def _forget_lines() -> None:
    """A forked child starts with every line empty: the parent's writers are not the child's
    (the service starts its processes with spawn; this is for whoever forks)."""
    global _LINES_MUTEX
    _LINES_MUTEX = threading.Lock()
    for line in list(_EVERY_LINE):
        line._reset()


os.register_at_fork(after_in_child=_forget_lines)


class QueuedSQLiteConnection(sqlite3.Connection):
    """A pysqlite connection that gives its write turn back (WriteLine) once its transaction
    has ended, whichever way it ends: commit, rollback (a session's, or the pool's reset on
    check-in) or close. After the end, not before: the next writer's BEGIN IMMEDIATE must
    find SQLite's lock free."""

    line: WriteLine | None = None

    def take_turn(self, line: WriteLine, timeout: float) -> None:
        if not line.acquire(timeout):
            raise OperationalError(
                "BEGIN IMMEDIATE",
                None,
                sqlite3.OperationalError(f"database is locked: no write turn within {timeout:g} s"),
            )
        self.line = line

    def give_turn_back(self) -> None:
        line, self.line = self.line, None
        if line is not None:
            line.release()

    def _ended(self) -> None:
        if self.line is not None and not self.in_transaction:
            self.give_turn_back()

    def commit(self) -> None:
        try:
            self.commit_in_driver()
        except BaseException:
            self._roll_back_failed_commit()
            raise
        finally:
            self._ended()

    def commit_in_driver(self) -> None:
        super().commit()

    def _roll_back_failed_commit(self) -> None:
        """A COMMIT that failed (disk full, I/O error) may leave its transaction open: SQLite
        rolls some failures back itself, not all. SQLAlchemy then counts it as ended and
        would hand the connection, mid-transaction, to the next session ("cannot start a
        transaction within a transaction"). Roll it back here; nothing of it was stored."""
        if self.in_transaction:
            # If even that fails, the connection is unusable and its next use fails it.
            with suppress(sqlite3.Error):
                super().rollback()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._ended()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.give_turn_back()


def _configure_sqlite(engine: Engine, *, busy_timeout_ms: int, line: WriteLine) -> None:
    """WAL, foreign keys, a busy timeout, and transactions SQLite can keep.

    pysqlite's own transaction handling breaks SAVEPOINT and begins lazily, so we take
    it over (the recipe from the SQLAlchemy SQLite dialect docs). Write sessions begin
    with BEGIN IMMEDIATE: a deferred transaction that reads and then writes can fail
    with SQLITE_BUSY without waiting, whereas IMMEDIATE waits out the busy timeout.
    Reads stay deferred, so under WAL they never wait for a writer. Before BEGIN IMMEDIATE
    a writer waits for its turn in this process's `WriteLine` (at most the busy timeout), so
    writers of one process never meet in SQLite's busy handler.
    """
    timeout = busy_timeout_ms / 1000

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if not connection.get_execution_options().get(WRITE_OPTION, False):
            connection.exec_driver_sql("BEGIN")
            return
        dbapi_connection: QueuedSQLiteConnection = connection.connection.dbapi_connection
        dbapi_connection.take_turn(line, timeout)
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            dbapi_connection.give_turn_back()
            raise


class Database:
    """Owns the engine for one app instance; deps.get_session opens a request's session."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = build_engine(settings)
        # Same pool; its transactions take SQLite's write lock as they begin.
        self.write_engine = self.engine.execution_options(**{WRITE_OPTION: True})

    def session(self, *, write: bool = False) -> Session:
        return Session(self.write_engine if write else self.engine, expire_on_commit=False)


@contextmanager
def read_apart(session: Session) -> Iterator[None]:
    """Run the block's reads in a short transaction of their own, ended after it, when
    `session` is a SQLite write session with no transaction under way; elsewhere (PostgreSQL,
    a test's shared connection, a transaction already begun) run the block as it is.

    A request's dependencies (the key on a cache miss, the project) read before its route
    writes. In the write transaction they would hold SQLite's write lock, and every writer
    in line behind it, from the dependency's thread back through the event loop to the
    route's thread (bench/team.py measured 1.8 ms of a 4.6 ms hold). Read apart, the route's
    first statement takes the lock. What they read is then as of just before the write
    transaction, as on PostgreSQL (READ COMMITTED); callers that decide on a project's state
    re-read it under the lock (`load_project(lock=True)`).
    """
    bind = session.get_bind()
    if (
        session.in_transaction()
        or not isinstance(bind, Engine)
        or bind.dialect.name != "sqlite"
        or not bind.get_execution_options().get(WRITE_OPTION, False)
    ):
        yield
        return
    session.connection(execution_options={WRITE_OPTION: False})
    yield
    session.commit()


def insert_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Many rows into one table within the session's transaction: COPY on PostgreSQL (where
    an executemany is one statement per row: 2 s for 20,000 rows against 0.2 s), an
    executemany on SQLite. Every row has the same keys."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        connection.execute(table.insert(), rows)
        return
    from psycopg import sql

    columns = list(rows[0])
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([row[column] for column in columns])


def update_rows(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *, key: str = "id"
) -> None:
    """Give many rows of `table`, found by their `key` column, each its own values: one
    statement on PostgreSQL (the values travel as one array per column and are unnested
    into a FROM list), an executemany on SQLite. Every row has the same columns."""
    if not rows:
        return
    columns = [name for name in rows[0] if name != key]
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        # Bound names differ from the column names, which UPDATE reserves for itself.
        connection.execute(
            update(table)
            .where(table.c[key] == bindparam(f"b_{key}"))
            .values({name: bindparam(f"b_{name}") for name in columns}),
            [{f"b_{name}": value for name, value in row.items()} for row in rows],
        )
        return
    values = _unnested(table, [key, *columns], rows)
    connection.execute(
        update(table)
        .where(table.c[key] == values.c[key])
        .values({name: values.c[name] for name in columns})
    )


def insert_returning_ids(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]]
) -> list[int]:
    """Insert many rows into `table` in one statement; their new ids, in row order. Every row
    has the same columns.

    On PostgreSQL the values travel as one array per column, unnested in row order (WITH
    ORDINALITY): a multi-row VALUES statement has a parameter per value, and psycopg parses
    statements of over 50 parameters anew on every call, which cost more than the insert.
    The sequence numbers the rows as they are inserted, in that order, so the returned ids
    sorted are the rows' ids. On SQLite, SQLAlchemy's insertmanyvalues.
    """
    if not rows:
        return []
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        inserted = connection.execute(
            insert(table).returning(table.c.id, sort_by_parameter_order=True), list(rows)
        )
        return list(inserted.scalars())
    columns = list(rows[0])
    values = _unnested(table, columns, rows, ordinality="row_number")
    in_order = select(*(values.c[name] for name in columns)).order_by(values.c.row_number)
    inserted = connection.execute(
        insert(table).from_select(columns, in_order).returning(table.c.id)
    )
    return sorted(inserted.scalars())


def _unnested(
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    ordinality: str | None = None,
) -> Any:
    """`rows` as a FROM item (PostgreSQL): unnest of one array parameter per column."""
    arrays = [
        bindparam(f"a_{name}", [row[name] for row in rows], type_=ARRAY(table.c[name].type))
        for name in columns
    ]
    unnested = func.unnest(*arrays).table_valued(*columns, with_ordinality=ordinality)
    return unnested.render_derived(name="v")


def id_in(session: Session, column: Any, ids: Sequence[int]) -> ColumnElement[bool]:
    """column IN ids; on PostgreSQL as `= ANY(array)`, one parameter however many ids.

    psycopg caches the plans of statements up to 4 kB only; an IN list of hundreds of ids is
    longer, so it would be parsed again on every request.
    """
    result: ColumnElement[bool]
    if session.get_bind().dialect.name == "postgresql":
        result = column == any_(literal(list(ids), ARRAY(Integer)))
    else:
        result = column.in_(ids)
    return result


def ids_param(dialect: str, column: Any, name: str = "ids") -> ColumnElement[bool]:
    """`id_in` for a statement built once: the ids are the bound parameter `name`."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(Integer)))  # type: ignore[no-any-return]
    return column.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]


def sync_loaded(
    session: Session, model: type[SQLModel], changes: Iterable[tuple[int, Mapping[str, Any]]]
) -> None:
    """After a Core UPDATE of `model` rows (id, {column: value}), give the objects of those
    rows that this session already holds the same values, without marking them dirty: the hot
    write paths skip the ORM (docs/design.md, "Hot paths"), and a caller holding an object
    must not read, or return, the value from before."""
    for ident, values in changes:
        loaded = session.identity_map.get(session.identity_key(model, ident))
        if loaded is not None:
            for name, value in values.items():
                set_committed_value(loaded, name, value)
