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


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run its command; the exit status (0, 1 on a refused
    request, 2 on a misconfiguration)."""
    args = _parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as error:
        print(f"labelwise: invalid LABELWISE_* settings: {error}", file=sys.stderr)
        return 2
    return COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
