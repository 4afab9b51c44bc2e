"""What the benchmarks share, so that each piece of logic exists once.

* data: the Debian descriptions (`debian_data`, `find_debian_data`, `read_rows`,
  `load_sources`), the unique copies a bench cycles them into (`copy_of`) and the leading
  columns of those items' rows (`item_heads`, ITEM_HEAD_COLUMNS);
* databases: a fresh one per backend in a temporary directory (`fresh_database`, `Database`)
  and a bench's run on each of them (`on_each_database`); on PostgreSQL a loopback admin
  engine (`admin_engine`, `postgres_server`), a throwaway database (`throwaway_database`,
  `postgres_database`) and the server version; the --only option (`add_backends_option`);
* setup steps, timed and printed (`Setup`, `timed`, `progress`);
* CPU accounting from /proc (`cpu_seconds`, `postgres_cpu_seconds`);
* the server: a `labelwise serve` subprocess on a free port (`Server`, `running_server`,
  `migrated_server`), its environment (`service_env`) and an authenticated client
  (`api_client`, `expect`);
* bulk loading straight into the tables (`BulkLoader`, `bulk_loader`: COPY on PostgreSQL,
  executemany on SQLite; then setval + VACUUM ANALYZE, or a WAL checkpoint);
* the report: `percentile`, `ms`, `table`, `setup_table`, `write_report` (Markdown), and what
  a result belongs to (`code_version`, `source_digest`, `machine`, `load_average`).
"""

import argparse
import gzip
import hashlib
import json
import math
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import sqlalchemy as sa

from app.db import build_engine
from app.migrations import upgrade
from app.models.base import UTCDateTime
from app.services.items import content_hash
from app.settings import Settings

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
READY_TIMEOUT_S = 60.0
DEBIAN_DATA = REPO.parent / "shared" / "data" / "debian-dev.jsonl.gz"
BACKENDS = ("sqlite", "postgres")
LOAD_CHUNK = 20_000

T = TypeVar("T")


class BenchError(RuntimeError):
    """A benchmark cannot go on: it is printed, and the exit status is 1."""


# --- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """One row of the Debian descriptions: package id, description, section (the label)."""

    id: str
    text: str
    label: str


def debian_data() -> Path:
    """The Debian descriptions: LABELWISE_DEBIAN_DATA, else ../shared/data/debian-dev.jsonl.gz."""
    return Path(os.environ.get("LABELWISE_DEBIAN_DATA") or DEBIAN_DATA)


def find_debian_data() -> Path | None:
    """debian_data() if the file is there; else None, after saying so on stderr."""
    path = debian_data()
    if not path.is_file():
        print(f"no data at {path}; set LABELWISE_DEBIAN_DATA", file=sys.stderr)
        return None
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a gzipped JSON-lines file (blank lines skipped); none is an error."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    if not rows:
        raise BenchError(f"{path} has no rows")
    return rows


def load_sources(path: Path) -> list[Source]:
    """The rows of `path` as Sources (id, text, label)."""
    return [Source(r["id"], r["text"], r["label"]) for r in read_rows(path)]


def copy_of(row_id: str, text: str, k: int) -> tuple[str, str]:
    """The external_id and text of the k-th copy of a row: "<row id>-k" and the text with
    " [copy k <row id>]" appended. The row id is in the suffix because the source has
    normalized-text duplicates (9,069 distinct texts in 10,330 rows), which a bare " [copy k]"
    would keep."""
    return f"{row_id}-{k}", f"{text} [copy {k} {row_id}]"


ITEM_HEAD_COLUMNS = "id, project_id, external_id, text, content_hash, data, metadata, source"


def item_heads(
    sources: Sequence[Source], count: int, project_id: int, first_id: int = 1
) -> Iterator[tuple[Source, tuple[Any, ...]]]:
    """`count` items cycled from the sources (ids first_id.., 1.. by default; the k-th pass
    over the sources makes the k-th copies, see copy_of): each item's source and the first
    columns of its item row (ITEM_HEAD_COLUMNS): data and metadata {} as JSON text, source
    "manual"."""
    for position in range(count):
        k, index = divmod(position, len(sources))
        source = sources[index]
        external_id, text = copy_of(source.id, source.text, k)
        head = (
            first_id + position,
            project_id,
            external_id,
            text,
            content_hash(text),
            "{}",
            "{}",
            "manual",
        )
        yield source, head


# --- databases -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Database:
    """A fresh database for one backend: its URL, and the temporary directory that holds the
    SQLite file, the server's data_dir and its log."""

    backend: str
    url: str
    workdir: Path


def admin_engine(admin_url: str) -> sa.Engine:
    """An AUTOCOMMIT engine for CREATE and DROP DATABASE, on a loopback PostgreSQL server only."""
    host = sa.make_url(admin_url).host or "localhost"
    if host not in LOOPBACK:
        raise BenchError(f"the PostgreSQL server must be on this machine (127.0.0.1), not {host}")
    return sa.create_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )


@contextmanager
def postgres_server(admin_url: str, skipped: str) -> Iterator[sa.Engine | None]:
    """The admin engine of the loopback server at `admin_url`, or None if it is unreachable
    (after printing "<skipped>: <the driver's reason>" to stderr); always disposed."""
    admin = admin_engine(admin_url)
    try:
        try:
            with admin.connect():
                pass
        except sa.exc.OperationalError as error:
            reason = str(error.orig).strip().splitlines()[0]
            print(f"{skipped}: {reason}", file=sys.stderr)
            yield None
            return
        yield admin
    finally:
        admin.dispose()


@contextmanager
def throwaway_database(admin: sa.Engine, name: str) -> Iterator[str]:
    """CREATE DATABASE `name`; yield its URL; always DROP it (FORCE ends stray sessions)."""
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def postgres_database(admin_url: str, name: str, skipped: str) -> Iterator[str | None]:
    """A throwaway database `name` on the loopback server at `admin_url`: its URL, or None if
    the server is unreachable (see postgres_server); always DROPped."""
    with postgres_server(admin_url, skipped) as admin:
        if admin is None:
            yield None
            return
        with throwaway_database(admin, name) as url:
            yield url


@contextmanager
def fresh_database(backend: str, postgres_url: str | None, name: str) -> Iterator[Database | None]:
    """A fresh, empty database for `backend` ("sqlite" or "postgres") in a temporary
    directory: a SQLite file, or a throwaway database `name` on the loopback PostgreSQL
    server at `postgres_url` (None if that server is unreachable). Always removed after."""
    with tempfile.TemporaryDirectory(prefix="labelwise-bench-") as tmp:
        workdir = Path(tmp)
        if backend == "sqlite":
            yield Database(backend, f"sqlite:///{workdir / 'labelwise.db'}", workdir)
            return
        if postgres_url is None:
            raise BenchError(f"{backend}: no PostgreSQL URL")
        skipped = f"{backend}: skipped, the server is unreachable"
        with postgres_database(postgres_url, name, skipped) as url:
            yield None if url is None else Database(backend, url, workdir)


@contextmanager
def served_postgres(
    postgres_url: str, name: str, admin_key: str
) -> Iterator[tuple[Database, dict[str, str]]]:
    """A fresh, migrated PostgreSQL database `name` and the environment of servers on it
    with `admin_key` as their bootstrap admin key; BenchError if PostgreSQL is unreachable."""
    with fresh_database("postgres", postgres_url, name) as database:
        if database is None:
            raise BenchError("PostgreSQL is unreachable: nothing measured")
        upgrade(database.url)
        yield database, service_env(database.url, database.workdir, bootstrap_admin_key=admin_key)


def load_unlabeled_items(
    database: Database, sources: list[Source], count: int, project_id: int, first_id: int = 1
) -> None:
    """`count` unlabeled items of `project_id` (the Debian descriptions cycled, ids from
    `first_id`), created an hour ago, bulk-loaded straight into the item table."""
    created = datetime.now(UTC) - timedelta(hours=1)
    with bulk_loader(
        database, {"item": f"{ITEM_HEAD_COLUMNS}, status, created_at, updated_at"}
    ) as loader:
        rows = (
            (*head, "unlabeled", loader.time(created), loader.time(created))
            for _, head in item_heads(sources, count, project_id, first_id)
        )
        loader.load("item", rows)
        loader.finish()


def on_each_database(
    backends: list[str], postgres_url: str | None, name: str, run: Callable[[Database], T]
) -> tuple[list[T], int]:
    """run(database) on a fresh database per backend in turn (see fresh_database; a skipped
    server is left out): what the runs returned, and the exit status, 0, or 1 after printing
    the BenchError that stopped them."""
    results: list[T] = []
    try:
        for backend in backends:
            with fresh_database(backend, postgres_url, name) as database:
                if database is not None:
                    results.append(run(database))
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return results, 1
    return results, 0


def postgres_version(url: str) -> str:
    """SHOW server_version, or "unreachable"."""
    engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            return str(connection.exec_driver_sql("SHOW server_version").scalar_one())
    except sa.exc.OperationalError:
        return "unreachable"
    finally:
        engine.dispose()


def parse_backends(value: str) -> set[str]:
    """--only: comma-separated names from BACKENDS ("postgresql" means "postgres")."""
    aliases = {"postgresql": "postgres"}
    chosen = {aliases.get(p.strip(), p.strip()) for p in value.split(",") if p.strip()}
    if not chosen or chosen - set(BACKENDS):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(BACKENDS)} (comma-separated)")
    return chosen


def add_backends_option(parser: argparse.ArgumentParser) -> None:
    """--only BACKENDS (parse_backends), all of them by default."""
    parser.add_argument(
        "--only",
        type=parse_backends,
        default=set(BACKENDS),
        metavar="BACKENDS",
        help="comma-separated, from sqlite,postgres",
    )


# --- setup steps ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Setup:
    """What preparing one database took: named steps and their seconds, rows per table, the
    database size, and the server's peak RSS."""

    backend: str
    steps: list[tuple[str, float]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    size_mib: float | None = None
    server_rss_mib: float | None = None

    @property
    def total(self) -> float:
        return sum(seconds for _, seconds in self.steps)


def progress(message: str) -> None:
    """An indented progress line on stderr, flushed at once."""
    print(f"  {message}", file=sys.stderr, flush=True)


def timed(setup: Setup, step: str) -> Callable[[Callable[[], Any]], Any]:
    """Run a callable, record its seconds as `step` of `setup`, print them, return its value."""

    def run(work: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = work()
        setup.steps.append((step, time.perf_counter() - started))
        progress(f"{setup.backend}: {step} in {setup.steps[-1][1]:.1f} s")
        return value

    return run


# --- the server ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU seconds used so far by the processes named postgres on this machine (the server and
    its backends; a backend that has exited no longer counts, so read this around work done
    on long-lived connections)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    total += cpu_seconds(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    return total


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def service_env(database_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a server process: the database, quiet logs, and LABELWISE_* extras."""
    return {
        **os.environ,
        "LABELWISE_DATABASE_URL": database_url,
        "LABELWISE_DATA_DIR": str(data_dir),
        "LABELWISE_LOG_LEVEL": "WARNING",
        **{f"LABELWISE_{name.upper()}": value for name, value in settings.items()},
    }


class Server:
    """A `labelwise serve` subprocess on a free 127.0.0.1 port: of this checkout, or of the
    source tree `tree` (another commit's checkout, for an A/B in one run) with this venv."""

    def __init__(self, env: dict[str, str], log_path: Path, tree: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_path
        serve = ["serve", "--host", HOST, "--port", str(self.port)]
        if tree is None:
            command, cwd = [str(BIN / "labelwise"), *serve], None
        else:
            main = "import sys; from app.cli import main; sys.argv[0] = 'labelwise'; main()"
            command, cwd = [sys.executable, "-c", main, *serve], tree
            env = {**env, "PYTHONPATH": str(tree)}
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise BenchError(f"the server was not ready within {READY_TIMEOUT_S:.0f} s:\n{self.log()}")

    def reset_peak_rss(self) -> None:
        """Restart VmHWM from the current RSS (Linux clear_refs 5), so each leg has its own."""
        with suppress(OSError):
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def peak_rss_mib(self) -> float | None:
        with suppress(OSError):
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL: a running job may hold a graceful shutdown for a while."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)

    def log(self, lines: int = 30) -> str:
        with suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextmanager
def running_server(
    env: dict[str, str], log_path: Path, tree: Path | None = None
) -> Iterator[Server]:
    """A Server with `env`, logging to `log_path`, once it is ready; stopped after."""
    server = Server(env, log_path, tree)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@contextmanager
def migrated_server(setup: Setup, database: Database, admin_key: str) -> Iterator[Server]:
    """Migrate the database and start a server on it with `admin_key` as its bootstrap admin
    key, both timed as setup steps ("migrate", "start the server")."""
    timed(setup, "migrate")(lambda: upgrade(database.url))
    env = service_env(database.url, database.workdir, bootstrap_admin_key=admin_key)
    started = time.perf_counter()
    with running_server(env, database.workdir / "server.log") as server:
        setup.steps.append(("start the server", time.perf_counter() - started))
        yield server


def api_client(server: Server, key: str, timeout: float) -> httpx.Client:
    """An httpx client for `server` that sends `key` as its bearer token."""
    return httpx.Client(
        base_url=server.url, headers={"authorization": f"Bearer {key}"}, timeout=timeout
    )


def expect(response: httpx.Response, status: int, what: str) -> Any:
    """The response's JSON body (None when it has none) if its status is `status`; else a
    BenchError naming `what` with the start of the body."""
    if response.status_code != status:
        raise BenchError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
    return response.json() if response.content else None


def expect_batch(response: httpx.Response, what: str) -> Any:
    """A POST .../batches answer: 201 with the leased batch, or 200 when there was nothing to
    hand out (`id` null, no items, nothing stored)."""
    return expect(response, 200 if response.status_code == 200 else 201, what)


# --- bulk loading --------------------------------------------------------------------------------


# Items with a resolved label and their answers, as bulk-loaded by the benchmarks that start
# from a labeled project (agreement, label issues, exports).
LABELED_ITEM_TABLES = {
    "item": f"{ITEM_HEAD_COLUMNS}, status, resolved_label, resolved_by, consensus_quality, "
    "created_at, updated_at",
    "annotation": "id, project_id, item_id, annotator, label, abstain, source, duration_ms, "
    "is_current, created_at",
}


class BulkLoader:
    """Bulk rows into the tables: COPY on PostgreSQL, executemany per chunk on SQLite.

    `tables` maps each table to its comma-separated columns. Rows are tuples in the table's
    column order, with JSON already serialized (json.dumps, as SQLAlchemy's JSON type does)
    and timestamps passed through `self.time`.
    """

    def __init__(self, engine: sa.Engine, tables: dict[str, str]) -> None:
        self.engine = engine
        self.tables = tables
        self.postgres = engine.dialect.name == "postgresql"
        processor = UTCDateTime().bind_processor(engine.dialect)
        self._time: Callable[[datetime], Any] = processor or (lambda value: value)

    def time(self, value: datetime | None) -> Any:
        return None if value is None else self._time(value)

    def load(self, table: str, rows: Iterable[tuple[Any, ...]]) -> int:
        columns = self.tables[table]
        count = 0
        if self.postgres:
            with self.engine.begin() as connection:
                driver = connection.connection.driver_connection
                assert driver is not None
                with (
                    driver.cursor() as cursor,
                    cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
                ):
                    for row in rows:
                        copy.write_row(row)
                        count += 1
            return count
        marks = ", ".join("?" * (columns.count(",") + 1))
        statement = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
        chunk: list[tuple[Any, ...]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= LOAD_CHUNK:
                count += self._insert(statement, chunk)
                chunk = []
        if chunk:
            count += self._insert(statement, chunk)
        return count

    def _insert(self, statement: str, rows: list[tuple[Any, ...]]) -> int:
        with self.engine.begin() as connection:
            connection.exec_driver_sql(statement, rows)
        return len(rows)

    def finish(self) -> None:
        """After the load: on PostgreSQL move every loaded table's id sequence past the
        explicit ids and VACUUM ANALYZE it; on SQLite checkpoint the WAL (the service never
        runs ANALYZE).

        Only the loaded tables: analyzing a table while it is empty records zero rows, and the
        planner then seq-scans it inside every correlated subquery long after it has grown
        (bench/load.py's annotation and lease tables did, until autovacuum came round).
        A table never analyzed is estimated from its size on disk instead."""
        if not self.postgres:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            return
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in self.tables:
                connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
                connection.exec_driver_sql(f"VACUUM ANALYZE {table}")

    def size_mib(self) -> float:
        """The database's size: pg_database_size, or the SQLite file's."""
        if not self.postgres:
            return Path(self.engine.url.database or "").stat().st_size / 2**20
        with self.engine.connect() as connection:
            size = connection.exec_driver_sql("SELECT pg_database_size(current_database())")
            return float(size.scalar_one() / 2**20)


@contextmanager
def bulk_loader(database: Database, tables: dict[str, str]) -> Iterator[BulkLoader]:
    """A BulkLoader on the engine the service itself builds for `database`; disposed after."""
    engine = build_engine(Settings(database_url=database.url, data_dir=database.workdir))
    try:
        yield BulkLoader(engine, tables)
    finally:
        engine.dispose()


# --- the report ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile of the values (numpy's linear interpolation); NaN if there are none."""
    return float(np.percentile(values, q)) if values else math.nan


def ms(seconds: float) -> str:
    """Seconds as milliseconds with one decimal, for the tables."""
    return f"{seconds * 1e3:.1f}"


def table(header: list[str], rows: list[list[str]], *, text_columns: int = 1) -> list[str]:
    """Aligned columns: the first `text_columns` to the left, the figures to the right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def cells(values: list[str]) -> str:
        return "  ".join(
            v.ljust(w) if i < text_columns else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    line = cells(header)
    return [line, "-" * len(line), *(cells(row) for row in rows)]


def setup_table(setups: Sequence[Setup]) -> list[str]:
    """The setup steps of every database, with their total, as a table."""
    return table(
        ["database", "step", "seconds"],
        [
            [s.backend, step, f"{seconds:.1f}"]
            for s in setups
            for step, seconds in [*s.steps, ("total", s.total)]
        ],
        text_columns=2,
    )


def write_report(out: Path, script: str, lines: list[str]) -> None:
    """The report as Markdown: the command (from the repository root), the machine, and the
    lines in a code block."""
    command = shlex.join([".venv/bin/python", script, *sys.argv[1:]])
    out.write_text(
        f"# {script}\n\n"
        f"Command (from the repository root): `{command}`\n\n"
        f"Machine: {machine()}\n\n```\n" + "\n".join(lines) + "\n```\n"
    )
    print(f"wrote {out}", file=sys.stderr)


def load_average() -> float:
    """The 1-minute load average: other work on the machine shows in the figures."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return math.nan


def source_digest() -> str:
    """A fingerprint of the service code measured (app/**/*.py), without asking git."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "app").rglob("*.py")):
        digest.update(path.relative_to(REPO).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def code_version() -> str:
    """The commit the service code is at, and whether the working tree differs from it."""
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def machine() -> str:
    """'N CPUs (model), M GiB RAM' from /proc, for the header of every report."""
    cpu = "unknown CPU"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    return f"{os.cpu_count()} CPUs ({cpu}){memory}"
