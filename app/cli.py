"""The `labelwise` command: migrate, serve, run a job worker, create an API key, write the spec
and the error reference."""

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from app.settings import Settings, get_settings


def write_openapi(path: Path) -> None:
    from app.main import create_app

    spec = create_app().openapi()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def concurrency_arg(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if not 1 <= value <= 16:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 16, not {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labelwise", description="Labelwise labeling service.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="Upgrade the database schema to the latest migration.")
    serve = commands.add_parser("serve", help="Start the HTTP server (does not migrate).")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Server processes (PostgreSQL only; SQLite is served by one process, whose "
        "writers take turns for the write lock).",
    )
    worker = commands.add_parser(
        "worker",
        help="Run jobs from the PostgreSQL queue until SIGTERM/SIGINT "
        "(for LABELWISE_JOB_RUNNER=procrastinate).",
    )
    worker.add_argument(
        "--concurrency",
        type=concurrency_arg,
        default=1,
        help="Jobs this process runs at once, each on its own thread (1-16; default 1). "
        "For CPU-bound training, run more worker processes instead.",
    )
    key = commands.add_parser(
        "create-api-key", help="Create a key directly in the database; prints it."
    )
    key.add_argument("--name", required=True)
    key.add_argument("--role", required=True, choices=["admin", "service", "annotator"])
    key.add_argument("--tier")
    spec = commands.add_parser("openapi", help="Write the OpenAPI spec deterministically.")
    spec.add_argument("--output", type=Path, default=Path("openapi/openapi.json"))
    errors_doc = commands.add_parser(
        "errors-doc", help="Write docs/errors.md from the problem types in app/errors.py."
    )
    errors_doc.add_argument("--output", type=Path, default=Path("docs/errors.md"))
    return parser


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from app.migrations import upgrade

    url = settings.resolved_database_url
    # procrastinate's tables (the workers' queue) only where workers will use them.
    with_queue = settings.job_runner == "procrastinate"
    if with_queue:
        from app.jobs.procrastinate_runner import (
            ProcrastinateNeedsPostgres,
            procrastinate_conninfo,
        )

        try:
            procrastinate_conninfo(url)  # refuse SQLite before migrating anything
        except ProcrastinateNeedsPostgres as error:
            print(f"labelwise: {error}", file=sys.stderr)
            return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    if with_queue:
        from app.jobs.procrastinate_runner import ensure_procrastinate_schema

        if ensure_procrastinate_schema(url):
            print("labelwise: applied procrastinate's schema (the job queue).")
    return 0


def _port_in_use(host: str, port: int) -> str | None:
    """Why `host:port` cannot be bound (as the server would bind it), or None."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error.strerror or str(error)
    return None


def _never_migrated(settings: Settings) -> bool:
    """Whether the database has no schema revision at all; raises the driver's error when it
    cannot be reached (main() says so in one line)."""
    from sqlalchemy.engine import make_url

    from app.db import build_engine, is_sqlite
    from app.migrations import current_revision

    url = settings.resolved_database_url
    if is_sqlite(url):
        database = make_url(url).database
        if not database or database == ":memory:":
            return False
        if not Path(database).exists():
            return True  # checked before build_engine, which would create the file
    engine = build_engine(settings)
    try:
        return current_revision(engine) is None
    finally:
        engine.dispose()


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.db import is_sqlite

    if args.workers != 1 and is_sqlite(settings.resolved_database_url):
        print(
            f"labelwise: --workers {args.workers} needs PostgreSQL: SQLite is served by one "
            "process, whose writers take turns for the database's one write lock (several "
            "processes would meet in SQLite's busy handler instead). Start one process, or "
            "set LABELWISE_DATABASE_URL to a postgresql+psycopg:// URL.",
            file=sys.stderr,
        )
        return 2
    taken = _port_in_use(args.host, args.port)
    if taken is not None:
        print(
            f"labelwise: cannot listen on {args.host}:{args.port}: {taken}; stop what uses it "
            "or choose another --port.",
            file=sys.stderr,
        )
        return 2
    if _never_migrated(settings):
        print(
            f"labelwise: the database {_database_label(settings.resolved_database_url)} has "
            "never been migrated; run `labelwise migrate` first.",
            file=sys.stderr,
        )
        return 2
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        proxy_headers=True,
    )
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from app.jobs.procrastinate_runner import (
        ProcrastinateNeedsPostgres,
        ProcrastinateSchemaMissing,
        run_worker,
    )

    if settings.job_runner != "procrastinate":
        print(
            "labelwise: warning: LABELWISE_JOB_RUNNER is not procrastinate, so API "
            "processes with these settings run jobs themselves and defer none to workers.",
            file=sys.stderr,
        )
    try:
        run_worker(settings, args.concurrency)
    except (ProcrastinateNeedsPostgres, ProcrastinateSchemaMissing) as error:
        print(f"labelwise: {error}", file=sys.stderr)
        return 2
    return 0


def _create_api_key(settings: Settings, args: argparse.Namespace) -> int:
    from app.db import Database
    from app.errors import AppError
    from app.models.api_key import ApiKeyCreate
    from app.services.api_keys import create_api_key

    database = Database(settings)
    try:
        with database.session(write=True) as session:
            _, secret = create_api_key(
                session, data=ApiKeyCreate(name=args.name, role=args.role, tier=args.tier)
            )
    except AppError as error:
        print(f"labelwise: {error.detail}", file=sys.stderr)
        return 1
    print(secret)
    return 0


def _openapi(settings: Settings, args: argparse.Namespace) -> int:
    write_openapi(args.output)
    return 0


def _errors_doc(settings: Settings, args: argparse.Namespace) -> int:
    from app.errors_doc import write_errors_doc

    write_errors_doc(args.output)
    return 0


# Each command's function; heavy imports stay inside them, so `labelwise openapi` does not
# load uvicorn and `labelwise migrate` does not load the app.
COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "migrate": _migrate,
    "serve": _serve,
    "worker": _worker,
    "create-api-key": _create_api_key,
    "openapi": _openapi,
    "errors-doc": _errors_doc,
}


def _database_label(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run its command; the exit status (0, 1 on a refused
    request, 2 on a misconfiguration). A database that cannot be reached, migrations that
    cannot be found and a directory that cannot be created end the command with one line on
    stderr, not a traceback."""
    from sqlalchemy.exc import OperationalError

    from app.migrations import MigrationsMissing

    args = _parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as error:
        print(f"labelwise: invalid LABELWISE_* settings: {error}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](settings, args)
    except MigrationsMissing as error:
        print(f"labelwise: {error}", file=sys.stderr)
    except OperationalError as error:
        print(
            f"labelwise: cannot use the database {_database_label(settings.resolved_database_url)}"
            f": {_first_line(error.orig or error)}",
            file=sys.stderr,
        )
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"labelwise: {where}{error.strerror or error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
