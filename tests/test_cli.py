"""The `labelwise` command: migrate, create a key in the database, write the spec; and its
failures, each one line on stderr."""

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlmodel import Session

from app.cli import main
from app.db import Database
from app.services.api_keys import authenticate
from app.settings import get_settings
from tests.databases import fresh_database


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("LABELWISE_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_migrate_then_create_api_key(cli_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate"]) == 0
    assert main(["create-api-key", "--name", "ops", "--role", "service", "--tier", "in_house"]) == 0
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("lw_")
    database = Database(get_settings())
    with Session(database.engine) as session:
        principal = authenticate(session, presented=secret)
    database.engine.dispose()
    assert (principal.name, principal.role, principal.tier) == ("ops", "service", "in_house")
    assert main(["create-api-key", "--name", "ops", "--role", "admin"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_openapi_is_written_with_sorted_keys(tmp_path: Path) -> None:
    target = tmp_path / "spec" / "openapi.json"
    assert main(["openapi", "--output", str(target)]) == 0
    text = target.read_text()
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- failures end in one line, never a traceback (real subprocesses) ----------------------

ROOT = Path(__file__).resolve().parent.parent


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_cli(
    tmp_path: Path,
    database_url: str,
    *args: str,
    cwd: Path = ROOT,
    pythonpath: Path = ROOT,
    settings: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELWISE_")}
    env |= {
        "LABELWISE_DATABASE_URL": database_url,
        "LABELWISE_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(pythonpath),
        **(settings or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a failed command (exit status 2)."""
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("labelwise: ")
    return lines[0]


def test_migrate_works_from_any_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    url = f"sqlite:///{tmp_path}/cli.db"
    result = run_cli(tmp_path, url, "migrate", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert not (elsewhere / "data").exists()


def test_migrations_left_out_of_an_install_are_one_line(tmp_path: Path) -> None:
    """An install that copied app/ but not alembic.ini and alembic/ beside it."""
    install = tmp_path / "site"
    shutil.copytree(ROOT / "app", install / "app", ignore=shutil.ignore_patterns("__pycache__"))
    url = f"sqlite:///{tmp_path}/cli.db"
    line = one_line_failure(run_cli(tmp_path, url, "migrate", cwd=tmp_path, pythonpath=install))
    assert f"cannot find {install / 'alembic.ini'}" in line
    assert "pip install -e ." in line


@pytest.mark.parametrize("command", [["migrate"], ["serve", "--port", "0"], ["worker"]])
def test_an_unreachable_postgresql_is_one_line(tmp_path: Path, command: list[str]) -> None:
    url = f"postgresql+psycopg://labelwise:secret@127.0.0.1:{closed_port()}/labelwise"
    queue = {"LABELWISE_JOB_RUNNER": "procrastinate"}  # as a worker's deployment sets it
    line = one_line_failure(run_cli(tmp_path, url, *command, settings=queue))
    assert "cannot use the database postgresql+psycopg://labelwise:***@127.0.0.1:" in line
    assert "Connection refused" in line
    assert "secret" not in line


def test_a_sqlite_file_whose_directory_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    url = f"sqlite:///{tmp_path}/a-file/sub/labelwise.db"
    line = one_line_failure(run_cli(tmp_path, url, "migrate"))
    assert line == f"labelwise: {tmp_path}/a-file/sub: Not a directory"


def test_serve_on_a_database_never_migrated_says_run_migrate(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        if backend == "sqlite":  # an existing, empty file, not only a missing one
            sqlite3.connect(make_url(url).database or "").close()
        line = one_line_failure(run_cli(tmp_path, url, "serve", "--port", str(closed_port())))
    assert "has never been migrated; run `labelwise migrate` first." in line


def test_serve_on_a_taken_port_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    assert run_cli(tmp_path, url, "migrate").returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_failure(run_cli(tmp_path, url, "serve", "--port", str(port)))
    assert line.startswith(f"labelwise: cannot listen on 127.0.0.1:{port}: Address already in use")
