"""SQLite writers of one process take turns for the write lock (app.db.WriteLine): in the
order they asked, never in SQLite's busy handler; a turn ends with its transaction, however
it ends; a request's dependencies read apart from its write; one server process on SQLite."""

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from app.cli import main
from app.db import Database, WriteLine, read_apart, write_line
from app.settings import Settings, get_settings

WAIT_S = 30.0  # a bound on waiting for a thread to get somewhere, never an assertion on time


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """A SQLite Database whose connections have NO busy timeout at SQLite's level: a writer
    that met another in SQLite's busy handler would fail at once with "database is locked".
    The write line keeps its own wait (30 s)."""
    database = Database(Settings(data_dir=tmp_path, sqlite_busy_timeout_ms=30_000))

    @event.listens_for(database.engine, "connect")
    def _no_busy_handler(dbapi_connection: object, _record: object) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout = 0")  # type: ignore[attr-defined]

    with database.engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE written (n INTEGER NOT NULL)")
    yield database
    database.engine.dispose()


def line_of(database: Database) -> WriteLine:
    return write_line(database.engine.url.database)


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "a writer never got there"
        time.sleep(0.001)


def write(database: Database, n: int, *, linger: float = 0.0) -> None:
    with database.session(write=True) as session:
        session.execute(sa.text("INSERT INTO written (n) VALUES (:n)"), {"n": n})
        time.sleep(linger)  # hold the write lock a moment, so that writers overlap
        session.commit()


def written(database: Database) -> list[int]:
    with database.engine.connect() as connection:
        return list(connection.exec_driver_sql("SELECT n FROM written ORDER BY rowid").scalars())


def test_concurrent_writers_all_succeed_without_the_busy_handler(database: Database) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            write(database, n, linger=0.005)
        except BaseException as error:  # pragma: no cover - what the test is looking for
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(written(database)) == list(range(16))
    assert not line_of(database).held


def test_writers_take_turns_in_the_order_they_asked(database: Database) -> None:
    line = line_of(database)
    threads = []
    with database.session(write=True) as first:
        first.execute(sa.text("INSERT INTO written (n) VALUES (0)"))
        assert line.held
        for n in range(1, 6):
            thread = threading.Thread(target=write, args=(database, n))
            thread.start()
            threads.append(thread)
            until(lambda n=n: line.waiting == n)  # type: ignore[misc]
        first.commit()
    for thread in threads:
        thread.join()
    assert written(database) == [0, 1, 2, 3, 4, 5]
    assert not line.held and line.waiting == 0


@pytest.mark.parametrize("end", ["rollback", "close", "error"])
def test_a_turn_ends_with_its_transaction(database: Database, end: str) -> None:
    line = line_of(database)
    session = database.session(write=True)
    try:
        session.execute(sa.text("INSERT INTO written (n) VALUES (1)"))
        assert line.held
        if end == "rollback":
            session.rollback()
        elif end == "error":
            with pytest.raises(sa.exc.IntegrityError):
                session.execute(sa.text("INSERT INTO written (n) VALUES (NULL)"))
            session.rollback()
    finally:
        session.close()
    assert not line.held
    write(database, 2)  # the next writer gets its turn at once
    assert written(database) == [2]


def test_a_read_session_takes_no_turn(database: Database) -> None:
    line = line_of(database)
    with database.session() as session:
        session.execute(sa.text("SELECT count(*) FROM written")).scalar_one()
        assert not line.held


def test_a_writer_that_waits_past_the_busy_timeout_is_refused(tmp_path: Path) -> None:
    database = Database(Settings(data_dir=tmp_path, sqlite_busy_timeout_ms=50))
    with database.engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE written (n INTEGER NOT NULL)")
    try:
        with database.session(write=True) as holder:
            holder.execute(sa.text("INSERT INTO written (n) VALUES (1)"))
            with pytest.raises(OperationalError, match="database is locked"):
                write(database, 2)
            holder.commit()
        write(database, 3)
        assert written(database) == [1, 3]
    finally:
        database.engine.dispose()


def test_every_engine_on_one_file_shares_its_line(database: Database) -> None:
    other = Database(database.settings)
    try:
        assert line_of(other) is line_of(database)
        with other.session(write=True) as session:
            session.execute(sa.text("INSERT INTO written (n) VALUES (1)"))
            assert line_of(database).held
            session.commit()
    finally:
        other.engine.dispose()


def test_dependencies_read_apart_from_the_write(database: Database) -> None:
    line = line_of(database)
    with database.session(write=True) as session:
        with read_apart(session):
            assert session.execute(sa.text("SELECT count(*) FROM written")).scalar_one() == 0
            assert not line.held  # a deferred read
        assert not session.in_transaction()
        session.execute(sa.text("INSERT INTO written (n) VALUES (1)"))
        assert line.held  # the first write of the route takes the turn
        with read_apart(session):  # a transaction under way: the block runs within it
            session.execute(sa.text("SELECT count(*) FROM written")).scalar_one()
        assert session.in_transaction() and line.held
        session.commit()
    assert written(database) == [1]


def test_serve_refuses_several_processes_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LABELWISE_DATABASE_URL", f"sqlite:///{tmp_path}/serve.db")
    get_settings.cache_clear()
    try:
        assert main(["serve", "--workers", "2"]) == 2
    finally:
        get_settings.cache_clear()
    assert "--workers 2 needs PostgreSQL" in capsys.readouterr().err
