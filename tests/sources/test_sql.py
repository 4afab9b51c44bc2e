"""The SQL adapter: named connections only, read-only by construction on SQLite and
PostgreSQL (writes fail and change nothing), parameters bound, rows streamed and capped, and
no connection URL in any message."""

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app.errors import (
    NotFound,
    SqlQueryFailed,
    SqlQueryTimeout,
    SqlSourceMisconfigured,
    SqlSourceUnavailable,
    ValidationFailed,
)
from app.sources.sql import (
    SqlSource,
    check_params,
    open_query,
    resolve_source,
)
from tests.databases import POSTGRES_URL, fresh_database

TICKETS = [(i, f"ticket {i}", "bug" if i % 2 else "feature") for i in range(1, 8)]
WRITES = [
    "DELETE FROM tickets",
    "INSERT INTO tickets (id, body, category) VALUES (100, 'x', 'bug') RETURNING id",
    "UPDATE tickets SET category = 'oops' RETURNING id",
    "DROP TABLE tickets",
]


def read_all(source: SqlSource, query: str, **options: Any) -> tuple[list[list[Any]], bool]:
    """The rows of each chunk (as (id, body) pairs), and whether the cap cut the query."""
    options = {"params": {}, "max_rows": 1000, "chunk_size": 3, **options}
    with open_query(source, query=query, **options) as rows:
        chunks = [[(r.values or {}).get("id") for r in chunk] for chunk in rows]
        return chunks, rows.capped


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE tickets (id INTEGER PRIMARY KEY, body TEXT, category TEXT)"
        )
        connection.executemany("INSERT INTO tickets VALUES (?, ?, ?)", TICKETS)
    connection.close()
    return path


@pytest.fixture
def sqlite_source(sqlite_file: Path) -> SqlSource:
    return resolve_source({"crm": f"sqlite:///{sqlite_file}"}, "crm")


class TestNamedConnections:
    def test_an_unknown_name_is_a_404_naming_the_configured_ones(self) -> None:
        sources = {"crm": "postgresql+psycopg://reader:hunter2@db.internal/crm"}
        with pytest.raises(NotFound) as caught:
            resolve_source(sources, "billing")
        assert caught.value.status == 404
        assert "'billing'" in caught.value.detail and "crm" in caught.value.detail
        assert "hunter2" not in caught.value.detail and "db.internal" not in caught.value.detail

    @pytest.mark.parametrize(
        "url",
        [
            "mysql+pymysql://reader:hunter2@db.internal/crm",
            "not a url hunter2",
            "sqlite://",
            "sqlite:///:memory:",
        ],
    )
    def test_an_unusable_url_is_a_503_that_never_shows_it(self, url: str) -> None:
        with pytest.raises(SqlSourceMisconfigured) as caught:
            resolve_source({"crm": url}, "crm")
        assert caught.value.status == 503 and "'crm'" in caught.value.detail
        assert "hunter2" not in caught.value.detail and url not in caught.value.detail

    def test_the_repr_hides_the_url(self, sqlite_file: Path) -> None:
        source = resolve_source({"crm": f"sqlite:///{sqlite_file}"}, "crm")
        assert str(sqlite_file) not in repr(source)


class TestParams:
    def test_placeholders_and_params_must_match(self) -> None:
        check_params("SELECT * FROM t WHERE a = :a AND b::text = :b", {"a": 1, "b": "x"})
        check_params("SELECT '10:30' AS t, '\\:literal' AS u", {})
        with pytest.raises(ValidationFailed) as caught:
            check_params("SELECT * FROM t WHERE a = :a AND b = :b", {"a": 1, "c": 2})
        locs = [e.loc for e in caught.value.errors or []]
        assert locs == [["body", "params"], ["body", "params", "c"]]
        assert ":b" in caught.value.detail


class TestSqliteReadOnly:
    def test_rows_stream_in_chunks_and_the_cap_says_it_cut(self, sqlite_source: SqlSource) -> None:
        query = "SELECT id, body FROM tickets ORDER BY id"
        assert read_all(sqlite_source, query) == ([[1, 2, 3], [4, 5, 6], [7]], False)
        assert read_all(sqlite_source, query, max_rows=5) == ([[1, 2, 3], [4, 5]], True)
        assert read_all(sqlite_source, query, max_rows=7) == ([[1, 2, 3], [4, 5, 6], [7]], False)

    def test_params_are_bound_never_interpolated(self, sqlite_source: SqlSource) -> None:
        query = "SELECT id FROM tickets WHERE category = :category ORDER BY id"
        assert read_all(sqlite_source, query, params={"category": "bug"})[0] == [[1, 3, 5], [7]]
        injection = {"category": "bug' OR '1'='1"}
        assert read_all(sqlite_source, query, params=injection) == ([], False)

    @pytest.mark.parametrize(
        "query",
        [
            *WRITES,
            "CREATE TABLE evil (a INTEGER)",
            "PRAGMA writable_schema = 1",
            "PRAGMA journal_mode = DELETE",
            "REPLACE INTO tickets VALUES (1, 'changed', 'bug')",
        ],
    )
    def test_a_write_fails_and_the_file_is_untouched(
        self, sqlite_source: SqlSource, sqlite_file: Path, query: str
    ) -> None:
        before = sqlite_file.read_bytes()
        with pytest.raises(SqlQueryFailed, match="read-only") as caught:
            read_all(sqlite_source, query)
        assert caught.value.status == 422
        assert str(sqlite_file) not in caught.value.detail
        assert sqlite_file.read_bytes() == before
        with sqlite3.connect(sqlite_file) as connection:
            rows = connection.execute("SELECT * FROM tickets ORDER BY id").fetchall()
        connection.close()
        assert rows == TICKETS

    def test_attaching_another_file_is_refused(
        self, sqlite_source: SqlSource, tmp_path: Path
    ) -> None:
        target = tmp_path / "created.db"
        with pytest.raises(SqlQueryFailed):
            read_all(sqlite_source, f"ATTACH DATABASE '{target}' AS other")
        assert not target.exists()

    def test_a_missing_file_is_unavailable_and_not_created(self, tmp_path: Path) -> None:
        path = tmp_path / "nope.db"
        source = resolve_source({"gone": f"sqlite:///{path}"}, "gone")
        with pytest.raises(SqlSourceUnavailable) as caught:
            read_all(source, "SELECT 1")
        assert caught.value.status == 503 and str(path) not in caught.value.detail
        assert not path.exists()


@pytest.fixture(scope="module")
def postgres_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlSource]:
    """A table (and a function and a sequence that write) in a throwaway database."""
    if not POSTGRES_URL:
        pytest.skip("LABELWISE_TEST_POSTGRES_URL is not set")
    with fresh_database("postgresql", tmp_path_factory.mktemp("pg-source")) as url:
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TABLE tickets (id INTEGER PRIMARY KEY, body TEXT, category TEXT)"
            )
            connection.execute(
                sa.text("INSERT INTO tickets VALUES (:id, :body, :category)"),
                [{"id": i, "body": b, "category": c} for i, b, c in TICKETS],
            )
            connection.exec_driver_sql(
                "CREATE FUNCTION wipe() RETURNS bigint LANGUAGE sql AS "
                "'WITH gone AS (DELETE FROM tickets RETURNING 1) SELECT count(*) FROM gone'"
            )
            connection.exec_driver_sql("CREATE SEQUENCE counter")
        engine.dispose()
        yield resolve_source({"pg": url}, "pg")


def postgres_tickets(source: SqlSource) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(source.url, poolclass=sa.NullPool)
    with engine.connect() as connection:
        rows = [tuple(r) for r in connection.exec_driver_sql("SELECT * FROM tickets ORDER BY id")]
        counter = connection.exec_driver_sql("SELECT last_value, is_called FROM counter").one()
    engine.dispose()
    assert tuple(counter) == (1, False)  # nextval never ran
    return rows


class TestPostgresReadOnly:
    def test_rows_stream_from_a_server_side_cursor(self, postgres_source: SqlSource) -> None:
        query = "SELECT id, body FROM tickets WHERE id > :after ORDER BY id"
        assert read_all(postgres_source, query, params={"after": 2}, max_rows=4) == (
            [[3, 4, 5], [6]],
            True,
        )
        with open_query(
            postgres_source,
            query="SELECT current_setting('transaction_read_only') AS ro",
            params={},
            max_rows=1,
            chunk_size=1,
        ) as rows:
            assert [r.values for chunk in rows for r in chunk] == [{"ro": "on"}]

    @pytest.mark.parametrize(
        ("query", "reason"),
        [
            *((q, None) for q in WRITES),
            ("SELECT wipe()", "cannot execute .* in a read-only transaction"),
            ("SELECT nextval('counter')", "read-only transaction"),
            ("SELECT set_config('transaction_read_only', 'off', false), wipe()", None),
        ],
    )
    def test_a_write_fails_and_the_table_is_unchanged(
        self, postgres_source: SqlSource, query: str, reason: str | None
    ) -> None:
        with pytest.raises(SqlQueryFailed, match=reason) as caught:
            read_all(postgres_source, query)
        assert "postgres" not in caught.value.detail.replace("postgres_source", "")
        assert postgres_tickets(postgres_source) == TICKETS

    def test_a_connection_failure_never_shows_the_url(self) -> None:
        url = "postgresql+psycopg://reader:hunter2@127.0.0.1:1/crm"
        source = resolve_source({"crm": url}, "crm")
        with pytest.raises(SqlSourceUnavailable) as caught:
            read_all(source, "SELECT 1")
        assert "'crm'" in caught.value.detail
        assert "hunter2" not in caught.value.detail and "reader" not in caught.value.detail
        assert "127.0.0.1" not in caught.value.detail


# A query SQLite never finishes: it counts forever.
ENDLESS_SQLITE = (
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) AS id FROM n"
)


class TestTimeLimit:
    """A statement that runs past the limit is stopped with sql-query-timeout, naming it."""

    def check(self, caught: pytest.ExceptionInfo[SqlQueryTimeout], seconds: float) -> None:
        problem = caught.value.to_problem()
        assert problem.type == "/problems/sql-query-timeout" and problem.status == 504
        assert f"longer than the {seconds:g} s" in problem.detail
        assert "LABELWISE_SQL_SOURCE_TIMEOUT_SECONDS" in problem.detail
        assert problem.context is not None and problem.context["timeout_seconds"] == seconds

    def test_sqlite_is_interrupted_at_the_limit(self, sqlite_source: SqlSource) -> None:
        started = time.monotonic()
        with pytest.raises(SqlQueryTimeout) as caught:
            read_all(sqlite_source, ENDLESS_SQLITE, timeout_seconds=0.3)
        assert 0.3 <= time.monotonic() - started < 10
        self.check(caught, 0.3)

    def test_sqlite_within_the_limit_reads_every_row(self, sqlite_source: SqlSource) -> None:
        query = "SELECT id FROM tickets ORDER BY id"
        assert read_all(sqlite_source, query, timeout_seconds=5)[0] == [[1, 2, 3], [4, 5, 6], [7]]

    def test_sqlite_times_each_chunk_not_the_whole_read(self, sqlite_source: SqlSource) -> None:
        """The limit bounds the query's own work: time the reader spends between chunks (an
        import writing them) does not count."""
        query = "SELECT id FROM tickets ORDER BY id"
        with open_query(
            sqlite_source, query=query, params={}, max_rows=10, chunk_size=3, timeout_seconds=0.2
        ) as rows:
            ids = []
            for chunk in rows:
                ids += [r.values["id"] for r in chunk if r.values]
                time.sleep(0.3)
        assert ids == [1, 2, 3, 4, 5, 6, 7]

    def test_postgres_statement_timeout_stops_a_slow_query(
        self, postgres_source: SqlSource
    ) -> None:
        started = time.monotonic()
        with pytest.raises(SqlQueryTimeout) as caught:
            read_all(
                postgres_source,
                "SELECT id, pg_sleep(5)::text AS body FROM tickets",
                timeout_seconds=0.3,
            )
        assert time.monotonic() - started < 4
        self.check(caught, 0.3)
        assert postgres_tickets(postgres_source) == TICKETS
