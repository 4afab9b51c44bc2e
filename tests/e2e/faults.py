"""Database faults under load, for tests/e2e/test_db_faults.py and bench/faults.py (issue 24).

One harness, used by both: the tests run each scenario briefly and assert the contract, the
bench runs the same scenarios longer and prints what happened.

* `Annotators`: N annotator threads, each with its own key, looping "POST a batch, answer its
  items" against a live server, optionally with reader threads (GETs) and a /readyz poller.
  Every request is recorded (`Call`: kind, start and end, status, problem type, the problem's
  `context.fault`, Retry-After), transport errors (a connection that ended without a
  response, a timeout) apart from statuses. An answer counts as acknowledged when a 200 to
  its POST .../annotations reported it created, replaced or unchanged.
* `check_database`: through SQL, every acknowledged answer is stored as the annotator's
  current answer with its label, and no item has more answers than the project's overlap.
* the faults: `terminate_backends` (pg_terminate_backend of every session of a database),
  `ThrowawayCluster` (a PostgreSQL cluster of its own on a free port, stopped and started),
  `hold_sqlite_lock` (another process holding SQLite's write lock), `Tmpfs` (a small tmpfs
  filled to the last byte).
* the scenarios (`terminations`, `restart`, `sqlite_lock`, `full_disk`), each returning a
  `Run`: the calls, the fault windows, the job started before the fault and how it ended,
  the database check and the server log.
"""

import contextlib
import errno
import json
import os
import pwd
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app.migrations import upgrade
from tests.databases import POSTGRES_URL, fresh_database
from tests.e2e.conftest import ADMIN_KEY, LiveServer, free_port, start_server, stop_server

LABELS = ["bug", "feature", "question"]
WRITES = ("batch", "annotations")
UNAVAILABLE = "/problems/database-unavailable"
BUSY = "/problems/database-busy"
ALLOWED_503 = (UNAVAILABLE, BUSY)
FULL = "/problems/database-full"
# The line of a traceback that names the exception: "psycopg.errors.AdminShutdown: ...".
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Shutdown|Exit|Interrupt)\b")


# --- the load ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One request and what came back: a status, or a transport error (status None)."""

    kind: str  # "batch", "annotations", "read", "readyz", "job"
    started: float  # time.monotonic()
    ended: float
    status: int | None
    problem: str | None = None  # the problem's type
    fault: str | None = None  # the problem's context.fault
    retry_after: str | None = None
    error: str | None = None  # the transport error: "RemoteProtocolError: ..."
    who: str = ""  # the client (an annotator's name, "reader-0", "readyz")

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def outcome(self) -> str:
        """ "201", "503 /problems/database-busy", "transport RemoteProtocolError"."""
        if self.status is None:
            return f"transport {(self.error or '').split(':')[0]}"
        if self.problem:
            return f"{self.status} {self.problem}" + (f" ({self.fault})" if self.fault else "")
        return str(self.status)


def outcome_of(
    kind: str, started: float, response: httpx.Response | None, error: str | None, who: str = ""
) -> Call:
    ended = time.monotonic()
    if response is None:
        return Call(kind, started, ended, None, error=error, who=who)
    problem = fault = None
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if isinstance(body, dict):
            problem = body.get("type")
            context = body.get("context")
            if isinstance(context, dict):
                fault = context.get("fault")
    return Call(
        kind,
        started,
        ended,
        response.status_code,
        problem,
        fault,
        response.headers.get("retry-after"),
        who=who,
    )


class Recorder:
    """Calls from many threads, in the order they ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[Call] = []

    def request(
        self, client: httpx.Client, kind: str, method: str, url: str, **kwargs: Any
    ) -> tuple[Call, httpx.Response | None]:
        started = time.monotonic()
        response: httpx.Response | None = None
        error = None
        try:
            response = client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            error = f"{type(exc).__name__}: {exc}"
        call = outcome_of(kind, started, response, error, threading.current_thread().name)
        with self._lock:
            self.calls.append(call)
        return call, response


def pause_after(call: Call, rng: random.Random, cap: float) -> float:
    """How long a client waits before trying again: the Retry-After (at most `cap`) with
    jitter; none after an error without one (a client retries at once, on the same
    connection when it is kept alive), a little after a transport error."""
    if call.status is None:
        return 0.05
    if not call.retry_after:
        return 0.0
    try:
        wanted = float(call.retry_after)
    except ValueError:
        wanted = cap
    return min(wanted, cap) * rng.uniform(0.5, 1.0)


class Annotators:
    """`keys` (name -> secret) label project `project_id` until stopped, each on its own
    thread: POST a batch of `batch_size`, answer every item; an answer refused (or lost in
    transport) is sent again, up to `attempts` times, on the same kept-alive connection
    (`pause_after`: at once after an error without Retry-After, else after the Retry-After
    capped at `max_pause` s, so recovery is seen when it happens). `readers` threads GET the
    project's stats and items with the admin key, and one thread polls /readyz every 0.1 s."""

    def __init__(
        self,
        base_url: str,
        keys: dict[str, str],
        project_id: int,
        *,
        batch_size: int = 5,
        readers: int = 1,
        attempts: int = 5,
        max_pause: float = 0.25,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url
        self.keys = keys
        self.base = f"/v1/projects/{project_id}"
        self.batch_size = batch_size
        self.readers = readers
        self.attempts = attempts
        self.max_pause = max_pause
        self.timeout = timeout
        self.recorder = Recorder()
        self.acknowledged: dict[tuple[str, int], str] = {}  # (annotator, item id) -> label
        self._ack_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.failures: list[str] = []  # a thread that died of an exception (a harness bug)

    @property
    def calls(self) -> list[Call]:
        return self.recorder.calls

    def __enter__(self) -> "Annotators":
        targets: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = [
            (name, self._annotate, (name, key)) for name, key in self.keys.items()
        ]
        targets += [(f"reader-{n}", self._read, (n,)) for n in range(self.readers)]
        targets.append(("readyz", self._poll_readyz, ()))
        for name, target, args in targets:
            thread = threading.Thread(
                target=self._guarded, args=(target, *args), name=name, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 10)
        alive = sum(thread.is_alive() for thread in self._threads)
        if alive:
            self.failures.append(f"{alive} load threads still running after stop")

    def _guarded(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except Exception as exc:  # reported: the test fails on it
            self.failures.append(f"{type(exc).__name__}: {exc}")

    def _client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout)

    def _annotate(self, name: str, key: str) -> None:
        rng = random.Random(name)
        pending: list[dict[str, Any]] = []
        annotator = name
        tries = 0
        with self._client(key) as client:
            while not self._stop.is_set():
                if not pending:
                    call, response = self.recorder.request(
                        client,
                        "batch",
                        "POST",
                        f"{self.base}/batches",
                        json={"size": self.batch_size},
                    )
                    if response is None or not call.ok:
                        time.sleep(pause_after(call, rng, self.max_pause))
                        continue
                    batch = response.json()
                    if not batch["items"]:
                        time.sleep(0.05)
                        continue
                    annotator = batch["annotator"]
                    pending = [
                        {"item_id": entry["item"]["id"], "label": rng.choice(LABELS)}
                        for entry in batch["items"]
                    ]
                    tries = 0
                call, response = self.recorder.request(
                    client, "annotations", "POST", f"{self.base}/annotations", json=pending
                )
                if response is not None and response.status_code == 200:
                    with self._ack_lock:
                        for entry in response.json()["results"]:
                            if entry["status"] in ("created", "replaced", "unchanged"):
                                answer = pending[entry["index"]]
                                self.acknowledged[(annotator, answer["item_id"])] = answer["label"]
                    pending = []
                    continue
                tries += 1
                if tries >= self.attempts:
                    pending = []  # given up: these answers were never acknowledged
                time.sleep(pause_after(call, rng, self.max_pause))

    def _read(self, n: int) -> None:
        rng = random.Random(n)
        paths = [f"{self.base}/stats", f"{self.base}/items?limit=20", self.base]
        with self._client(ADMIN_KEY) as client:
            while not self._stop.is_set():
                self.recorder.request(client, "read", "GET", rng.choice(paths))
                time.sleep(0.05)

    def _poll_readyz(self) -> None:
        with self._client(None) as client:
            while not self._stop.is_set():
                self.recorder.request(client, "readyz", "GET", "/readyz")
                time.sleep(0.1)

    def wait_for_answers(self, count: int, timeout: float = 30.0) -> None:
        """Until `count` answers are acknowledged (the load is under way)."""
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"only {len(self.acknowledged)} answers acknowledged in {timeout:g} s: "
                    f"{summarize(self.calls)}"
                )
            time.sleep(0.05)


def summarize(calls: list[Call], kinds: tuple[str, ...] | None = None) -> dict[str, int]:
    """Outcomes counted by "<kind> <outcome>", e.g. {"annotations 200": 812}."""
    counts = Counter(f"{c.kind} {c.outcome}" for c in calls if kinds is None or c.kind in kinds)
    return dict(sorted(counts.items()))


def first_ok_after(calls: list[Call], moment: float, kinds: tuple[str, ...]) -> float | None:
    """Seconds from `moment` to the end of the first 2xx call of `kinds` that started after it
    (None if there was none)."""
    ends = [c.ended for c in calls if c.kind in kinds and c.ok and c.started >= moment]
    return min(ends) - moment if ends else None


# --- the database check ---------------------------------------------------------------------------


@dataclass
class DatabaseCheck:
    acknowledged: int
    stored: int  # current human answers in the project (acknowledged or not)
    missing: list[str]  # acknowledged answers not stored as acknowledged
    over_overlap: int  # items with more answers than the project's annotators_per_item

    @property
    def problems(self) -> list[str]:
        problems = list(self.missing[:10])
        if len(self.missing) > 10:
            problems.append(f"... {len(self.missing)} acknowledged answers missing in all")
        if self.over_overlap:
            problems.append(f"{self.over_overlap} items have more answers than the overlap")
        return problems


def check_database(
    database_url: str, project_id: int, acknowledged: dict[tuple[str, int], str]
) -> DatabaseCheck:
    """Through SQL: every acknowledged answer stored, no item over its overlap."""
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT annotator, item_id, label FROM annotation WHERE project_id = :p"
                    " AND is_current AND source = 'human'"
                ),
                {"p": project_id},
            ).all()
            overlap = connection.execute(
                sa.text("SELECT annotators_per_item FROM project WHERE id = :p"), {"p": project_id}
            ).scalar_one()
    finally:
        engine.dispose()
    stored = {(annotator, item_id): label for annotator, item_id, label in rows}
    missing = [
        f"{annotator} item {item_id}: acknowledged {label!r}, "
        f"stored {stored.get((annotator, item_id))!r}"
        for (annotator, item_id), label in sorted(acknowledged.items())
        if stored.get((annotator, item_id)) != label
    ]
    per_item = Counter(item_id for _, item_id in stored)
    over = sum(1 for count in per_item.values() if count > overlap)
    return DatabaseCheck(len(acknowledged), len(stored), missing, over)


# --- jobs ----------------------------------------------------------------------------------------


@dataclass
class JobOutcome:
    """A training job started before the fault: its status when the fault began, how it
    ended, its error, and (if it failed) how its retry ended."""

    job_id: int
    status_at_fault: str = "unknown"
    final: dict[str, Any] = field(default_factory=dict)
    retry: dict[str, Any] | None = None

    @property
    def summary(self) -> str:
        text = f"job {self.job_id}: {self.status_at_fault} at the fault, {self.final.get('status')}"
        error = self.final.get("error")
        if error:
            text += f" ({error.get('type')}: {error.get('detail', '')[:120]})"
        if self.retry is not None:
            text += f"; retried as job {self.retry.get('id')}: {self.retry.get('status')}"
        return text

    @property
    def brief(self) -> str:
        """ "succeeded", "failed (database-unavailable), retry succeeded", "running"."""
        status = str(self.final.get("status"))
        error = self.final.get("error") or {}
        if error:
            status += f" ({str(error.get('type', '')).removeprefix('/problems/')})"
        if self.retry is not None:
            status += f", retry {self.retry.get('status')}"
        return status

    def problems(self) -> list[str]:
        """What breaks the contract: never stuck running, failed only with a retryable
        problem whose retry succeeds."""
        status = self.final.get("status")
        if status == "succeeded":
            return []
        if status != "failed":
            return [f"job {self.job_id} ended {status!r}, not succeeded or failed: {self.final}"]
        problems = []
        error = self.final.get("error") or {}
        if not {"type", "title", "status", "detail"} <= error.keys():
            problems.append(f"job {self.job_id} failed without a problem: {error}")
        if error.get("status") == 500:
            problems.append(f"job {self.job_id} failed with a 500 problem: {error}")
        if not self.final.get("retryable"):
            problems.append(f"job {self.job_id} failed and is not retryable: {self.final}")
        if self.retry is None or self.retry.get("status") != "succeeded":
            problems.append(f"the retry of job {self.job_id} did not succeed: {self.retry}")
        return problems


def job_status(client: httpx.Client, job_id: int) -> dict[str, Any] | None:
    """The job, or None while the server cannot say (a fault, a dropped connection)."""
    with contextlib.suppress(httpx.TransportError):
        response = client.get(f"/v1/jobs/{job_id}")
        if response.status_code == 200:
            job: dict[str, Any] = response.json()
            return job
    return None


def wait_job(
    client: httpx.Client, job_id: int, until: tuple[str, ...], timeout: float
) -> dict[str, Any]:
    """Poll through faults until the job's status is one of `until`; the job (its last seen
    state, if the time ran out)."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = job_status(client, job_id)
        if job is not None:
            last = job
            if job["status"] in until:
                return job
        time.sleep(0.1)
    return last


def training_project(client: httpx.Client, per_label: int) -> int:
    """A production project of `per_label` labeled items per topic, to train a model on."""
    from tests.e2e.conftest import topics_project

    project, _, _ = topics_project(client, name="faults-job", per_label=per_label, seed=11)
    project_id: int = project["id"]
    return project_id


def finish_job(client: httpx.Client, outcome: JobOutcome, timeout: float = 30.0) -> None:
    """Wait for the job to end, `timeout` seconds at most (a training of a few thousand items
    takes a few; a job still running after that is stuck); if it failed, retry it and wait
    for the retry."""
    outcome.final = wait_job(client, outcome.job_id, ("succeeded", "failed", "cancelled"), timeout)
    if outcome.final.get("status") != "failed":
        return
    response = client.post(f"/v1/jobs/{outcome.job_id}/retry")
    if response.status_code != 202:
        outcome.retry = {"status": f"retry answered {response.status_code}: {response.text[:300]}"}
        return
    retry_id = response.json()["id"]
    outcome.retry = wait_job(client, retry_id, ("succeeded", "failed", "cancelled"), timeout)


# --- the faults ----------------------------------------------------------------------------------


def maintenance_url(postgres_url: str = "") -> str:
    """A psycopg URL of the PostgreSQL server (LABELWISE_TEST_POSTGRES_URL by default), for
    sessions that end or create other databases' sessions and databases."""
    url = make_url(postgres_url or POSTGRES_URL).set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def terminate_backends(server_url: str, database_url: str) -> int:
    """pg_terminate_backend of every session on `database_url`'s database (the service's
    and its job process's), from a session on `server_url`; how many were ended."""
    name = make_url(database_url).database
    engine = sa.create_engine(server_url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            ended = connection.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            ).scalar_one()
    finally:
        engine.dispose()
    return int(ended)


def postgres_binaries() -> Path | None:
    """Debian's PostgreSQL bin directory with initdb and pg_ctl (the newest), or None; None
    too when we are root and there is no postgres user to run them as."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return None
    for directory in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


class ThrowawayCluster:
    """A PostgreSQL cluster of its own in a temporary directory, on a free port, trust auth on
    127.0.0.1, run with Debian's binaries (as the postgres user when we are root: initdb
    refuses to run as root). `stop()` is `pg_ctl stop -m fast`; `start()` returns once the
    server accepts connections (pg_ctl start -w)."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="labelwise-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")
            self.root.chmod(0o755)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}{log[-2000:]}")

    def init(self) -> None:
        self._run(
            str(self.binaries / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.binaries / "pg_ctl"),
            "start",
            "-w",
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            options,
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.binaries / "pg_ctl"), "stop", "-w", "-m", mode, "-D", str(self.data))

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    engine = sa.create_engine(server_url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(False)


@contextlib.contextmanager
def hold_sqlite_lock(path: Path, seconds: float) -> Iterator["LockHolder"]:
    """Another process (python's sqlite3) takes the database's write lock with BEGIN
    IMMEDIATE and holds it `seconds`; the block starts once it holds it, and on leaving it
    the holder's `released_at` is when it gave the lock back (not when its process ended: a
    writer may commit in between)."""
    script = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "print('releasing', flush=True)\n"
        "c.execute('ROLLBACK')\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    holder = LockHolder(process)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if line.strip() != "locked":
            raise RuntimeError(f"the lock holder did not take the lock: {line!r}")
        yield holder
        line = process.stdout.readline()  # just before its ROLLBACK
        holder.released_at = time.monotonic()
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=seconds + 30)
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@dataclass
class LockHolder:
    process: subprocess.Popen[str]
    released_at: float | None = None


class Tmpfs:
    """A tmpfs of `size_mib` MiB mounted on a fresh directory (root only); `fill()` writes a
    filler file until the disk is full, `drain()` deletes it."""

    def __init__(self, size_mib: int) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="labelwise-tmpfs-"))
        self.filler = self.path / "filler"
        self.size_mib = size_mib
        self.mounted = False

    def mount(self) -> str | None:
        """Mount it; None, or why it cannot be mounted."""
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mib}m", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return (done.stderr or done.stdout).strip() or f"mount exited {done.returncode}"
        self.mounted = True
        return None

    def fill(self) -> int:
        """Write the filler until ENOSPC; the bytes written."""
        written = 0
        chunk = b"\0" * (1 << 20)
        with self.filler.open("ab", buffering=0) as filler:
            for size in (1 << 20, 1 << 12, 1):
                block = chunk[:size]
                while True:
                    try:
                        written += filler.write(block) or 0
                    except OSError as error:
                        if error.errno != errno.ENOSPC:
                            raise
                        break
        return written

    def free_bytes(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def drain(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)
            self.mounted = False
        shutil.rmtree(self.path, ignore_errors=True)


def integrity_check(path: Path) -> str:
    """PRAGMA integrity_check of the SQLite file, read-only: "ok" when it is sound."""
    import sqlite3

    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    finally:
        connection.close()
    return "; ".join(str(row[0]) for row in rows)


# --- the scenarios --------------------------------------------------------------------------------


@dataclass
class Run:
    """What one scenario saw."""

    name: str
    calls: list[Call] = field(default_factory=list)
    faults: list[tuple[float, float]] = field(default_factory=list)  # (began, ended) monotonic
    recovered_at: float | None = None  # the database is back (accepts connections, lock free)
    outage: tuple[float, float] | None = None  # a restart: from stopped to starting again
    job: JobOutcome | None = None
    check: DatabaseCheck | None = None
    log: str = ""
    notes: list[str] = field(default_factory=list)
    harness_failures: list[str] = field(default_factory=list)
    phases: list[tuple[str, float]] = field(default_factory=list)  # (phase, seconds)
    _since: float = field(default_factory=time.monotonic)

    def mark(self, phase: str) -> None:
        """`phase` took the time since the last mark (or the start)."""
        now = time.monotonic()
        self.phases.append((phase, now - self._since))
        self._since = now

    def transport_errors(self) -> list[Call]:
        return [c for c in self.calls if c.status is None]

    def statuses(self, status: int) -> list[Call]:
        return [c for c in self.calls if c.status == status]

    def contract_violations(self) -> list[Call]:
        """Calls no fault may cause: a 500 (or any 5xx but the documented 503s and 507), a
        503 without Retry-After, a transport error, a fault problem without context.fault."""
        bad = []
        for call in self.calls:
            if call.kind == "readyz":
                if call.status not in (200, 503):
                    bad.append(call)
                continue
            if call.status is None or call.status == 500:
                bad.append(call)
            elif call.status == 503:
                if call.problem not in ALLOWED_503 or not call.retry_after or not call.fault:
                    bad.append(call)
            elif call.status == 507:
                if call.problem != FULL or not call.fault:
                    bad.append(call)
            elif call.status >= 400:
                bad.append(call)
        return bad

    def during(self, began: float, ended: float, kinds: tuple[str, ...]) -> list[Call]:
        """Calls of `kinds` that started at or after `began` and ended by `ended`."""
        return [
            c for c in self.calls if c.kind in kinds and c.started >= began and c.ended <= ended
        ]

    def tracebacks(self) -> list[str]:
        """The server log's errors, counted: each JSON line of level error by its message and
        the last line of its traceback, and uvicorn's plain "ERROR:" lines."""
        found: Counter[str] = Counter()
        for line in self.log.splitlines():
            if line.startswith("ERROR:"):
                found[line[:200]] += 1
                continue
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict) or entry.get("level") not in ("error", "critical"):
                continue
            exc = [text for text in str(entry.get("exc", "")).splitlines() if text.strip()]
            raised = [text for text in exc if EXCEPTION_LINE.match(text)]
            last = (raised or exc or [""])[-1][:200]
            found[f"{entry.get('logger')}: {entry.get('msg')}: {last}"] += 1
        return [f"{n}x {text}" for text, n in found.most_common()]

    def report(self) -> str:
        """Everything a failing test or the bench shows about the run."""
        parts = [f"scenario {self.name}", f"calls: {summarize(self.calls)}"]
        if self.job is not None:
            parts.append(self.job.summary)
        if self.check is not None:
            parts.append(
                f"answers: {self.check.acknowledged} acknowledged, {self.check.stored} stored; "
                f"problems: {self.check.problems}"
            )
        parts += self.notes
        if self.phases:
            parts.append("phases: " + ", ".join(f"{p} {t:.1f} s" for p, t in self.phases))
        parts += [f"harness: {failure}" for failure in self.harness_failures]
        bad = self.contract_violations()
        for call in bad[:8]:
            parts.append(f"  violation: {call}")
        parts += [f"  server log: {tb}" for tb in self.tracebacks()[:12]]
        return "\n".join(parts)


def prepare(
    server: LiveServer, annotators: int, items: int, job_per_label: int, overlap: int = 2
) -> tuple[int, dict[str, str], int]:
    """A production project of `items` unlabeled items shared by `overlap` annotators,
    `annotators` annotator keys made through the API, and a project to train a model on
    (`training_project`): their ids and the keys."""
    with server.client() as admin:
        body = {
            "name": f"faults-{uuid.uuid4().hex[:6]}",
            "labels": LABELS,
            "phase": "production",
            "annotators_per_item": overlap,
        }
        project = admin.post("/v1/projects", json=body).json()
        texts = [{"text": f"ticket {i} about faults {uuid.uuid4().hex[:8]}"} for i in range(items)]
        for start in range(0, items, 5_000):
            admin.post(f"/v1/projects/{project['id']}/items", json=texts[start : start + 5_000])
        keys = {}
        for n in range(annotators):
            name = f"faults-{n}-{uuid.uuid4().hex[:4]}"
            response = admin.post("/v1/api-keys", json={"name": name, "role": "annotator"})
            keys[name] = response.json()["key"]
        training = training_project(admin, job_per_label)
    return project["id"], keys, training


@contextlib.contextmanager
def served(
    database_url: str, workdir: Path, settings: dict[str, str] | None = None
) -> Iterator[LiveServer]:
    server = start_server(
        database_url, workdir / "server.log", bootstrap_key=ADMIN_KEY, settings=settings
    )
    try:
        yield server
    finally:
        stop_server(server)


def _job_client(server: LiveServer) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    )


def _start_job(server: LiveServer, training: int, run: Run) -> JobOutcome:
    """Start training a model on project `training` and wait until the job runs (the fault
    comes next)."""
    with server.client() as admin:
        response = admin.post(f"/v1/projects/{training}/models", json={})
        assert response.status_code == 202, response.text
    outcome = JobOutcome(response.json()["id"])
    with _job_client(server) as client:
        job = wait_job(client, outcome.job_id, ("running", "succeeded", "failed", "cancelled"), 20)
    outcome.status_at_fault = job.get("status", "unknown")
    if outcome.status_at_fault != "running":
        run.notes.append(
            f"the job was {outcome.status_at_fault}, not running, when the fault began"
        )
    return outcome


def _finish(run: Run, server: LiveServer, load: Annotators, project_id: int) -> None:
    run.mark("load and fault")
    run.calls = list(load.calls)
    run.harness_failures = list(load.failures)
    if run.job is not None:
        with _job_client(server) as client:
            finish_job(client, run.job)
        run.mark("job to its end")
    run.check = check_database(server.database_url, project_id, load.acknowledged)
    if server.process.poll() is not None:
        run.notes.append(f"the server exited with {server.process.returncode}")


def terminations(
    database_url: str,
    server_url: str,
    workdir: Path,
    *,
    annotators: int = 6,
    items: int = 3_000,
    times: int = 4,
    every: float = 2.5,
    settle: float = 2.0,
    job_per_label: int = 600,
) -> Run:
    """PostgreSQL: every session of the service's database terminated `times` times, `every`
    seconds apart (from a session on `server_url`, the server's maintenance database), while
    `annotators` label and a model trains."""
    run = Run("terminations")
    with served(database_url, workdir) as server:
        project_id, keys, training = prepare(server, annotators, items, job_per_label)
        run.mark("server and project")
        with Annotators(server.base_url, keys, project_id) as load:
            load.wait_for_answers(20)
            run.job = _start_job(server, training, run)
            run.mark("job running")
            for n in range(times):
                began = time.monotonic()
                ended = terminate_backends(server_url, database_url)
                run.faults.append((began, time.monotonic()))
                run.notes.append(f"termination {n + 1}: {ended} sessions ended")
                time.sleep(every)
            run.recovered_at = run.faults[-1][1]
            time.sleep(settle)
        _finish(run, server, load, project_id)
        run.log = server.log()
    return run


def restart(
    workdir: Path,
    binaries: Path,
    *,
    annotators: int = 6,
    items: int = 3_000,
    outage: float = 3.0,
    before: float = 1.0,
    settle: float = 3.0,
    job_per_label: int = 600,
) -> Run:
    """PostgreSQL restart: a cluster of its own, stopped (fast) under load for `outage`
    seconds and started again."""
    run = Run("restart")
    cluster = ThrowawayCluster(binaries)
    try:
        cluster.init()
        database_url = create_database(cluster.url, "labelwise_faults")
        upgrade(database_url)
        with served(database_url, workdir) as server:
            project_id, keys, training = prepare(server, annotators, items, job_per_label)
            run.mark("server and project")
            with Annotators(server.base_url, keys, project_id) as load:
                load.wait_for_answers(20)
                run.job = _start_job(server, training, run)
                run.mark("job running")
                time.sleep(before)
                began = time.monotonic()
                cluster.stop("fast")
                down = time.monotonic()
                run.notes.append(f"pg_ctl stop -m fast took {down - began:.2f} s")
                time.sleep(outage)
                restarting = time.monotonic()
                run.outage = (down, restarting)
                cluster.start()
                run.recovered_at = time.monotonic()
                run.faults.append((began, run.recovered_at))
                run.notes.append(
                    f"down {restarting - down:.2f} s; pg_ctl start -w took "
                    f"{run.recovered_at - restarting:.2f} s"
                )
                time.sleep(settle)
            _finish(run, server, load, project_id)
            run.log = server.log()
    finally:
        cluster.destroy()
    return run


def sqlite_lock(
    workdir: Path,
    *,
    annotators: int = 6,
    items: int = 3_000,
    busy_timeout_ms: int = 300,
    hold: float = 3.0,
    settle: float = 2.0,
    job_per_label: int = 600,
) -> Run:
    """SQLite: another process holds the write lock for `hold` seconds, past the service's
    busy timeout (LABELWISE_SQLITE_BUSY_TIMEOUT_MS)."""
    run = Run("sqlite lock")
    with fresh_database("sqlite", workdir) as database_url:
        upgrade(database_url)
        settings = {"LABELWISE_SQLITE_BUSY_TIMEOUT_MS": str(busy_timeout_ms)}
        with served(database_url, workdir, settings) as server:
            project_id, keys, training = prepare(server, annotators, items, job_per_label)
            run.mark("server and project")
            path = Path(make_url(database_url).database or "")
            with Annotators(server.base_url, keys, project_id) as load:
                load.wait_for_answers(20)
                run.job = _start_job(server, training, run)
                run.mark("job running")
                with hold_sqlite_lock(path, hold) as holder:
                    began = time.monotonic()
                assert holder.released_at is not None
                run.recovered_at = holder.released_at
                run.faults.append((began, run.recovered_at))
                time.sleep(settle)
            _finish(run, server, load, project_id)
            run.log = server.log()
    return run


@dataclass
class FullDiskRun(Run):
    integrity: str = ""
    filled_bytes: int = 0


def full_disk(
    workdir: Path,
    tmpfs: Tmpfs,
    *,
    annotators: int = 6,
    items: int = 3_000,
    full_for: float = 2.0,
    wait_for_refusal: float = 15.0,
    settle: float = 2.0,
    job_per_label: int = 600,
) -> FullDiskRun:
    """SQLite on a small tmpfs filled to the last byte while annotators write: writes are
    refused until the filler is deleted, `full_for` seconds after the first refusal."""
    run = FullDiskRun("full disk")
    with fresh_database("sqlite", tmpfs.path) as database_url:
        upgrade(database_url)
        with served(database_url, workdir) as server:
            project_id, keys, training = prepare(server, annotators, items, job_per_label)
            run.mark("server and project")
            path = Path(make_url(database_url).database or "")
            with Annotators(server.base_url, keys, project_id) as load:
                load.wait_for_answers(20)
                run.job = _start_job(server, training, run)
                run.mark("job running")
                began = time.monotonic()
                run.filled_bytes = tmpfs.fill()
                deadline = time.monotonic() + wait_for_refusal
                while time.monotonic() < deadline and not any(
                    c.status == 507
                    or (c.status is not None and c.status >= 500 and c.kind in WRITES)
                    for c in load.calls
                    if c.started >= began
                ):
                    time.sleep(0.05)
                first = [c.ended for c in load.calls if c.started >= began and c.status == 507]
                run.notes.append(
                    f"filled {run.filled_bytes / 2**20:.1f} MiB; first 507 "
                    + (f"{min(first) - began:.2f} s after filling" if first else "never seen")
                )
                time.sleep(full_for)
                run.integrity = integrity_check(path)
                tmpfs.drain()
                run.recovered_at = time.monotonic()
                run.faults.append((began, run.recovered_at))
                time.sleep(settle)
            _finish(run, server, load, project_id)
            run.log = server.log()
            after = integrity_check(path)
            run.notes.append(f"integrity_check while full: {run.integrity}; after: {after}")
            if after != "ok":
                run.integrity = after
    return run
