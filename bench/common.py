"""What the benchmarks share: a `labelwise serve` subprocess on a free port, and the code
version a result belongs to."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
READY_TIMEOUT_S = 60.0


class BenchError(RuntimeError):
    """A benchmark cannot go on; main() prints it and exits 2."""


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
    """A `labelwise serve` subprocess on a free 127.0.0.1 port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(BIN / "labelwise"), "serve", "--host", HOST, "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
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
def running_server(env: dict[str, str], log_path: Path) -> Iterator[Server]:
    server = Server(env, log_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


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


def admin_engine(admin_url: str) -> sa.Engine:
    """An AUTOCOMMIT engine for CREATE and DROP DATABASE, on a loopback PostgreSQL server only."""
    host = sa.make_url(admin_url).host or "localhost"
    if host not in LOOPBACK:
        raise BenchError(f"the PostgreSQL server must be on this machine (127.0.0.1), not {host}")
    return sa.create_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )


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
