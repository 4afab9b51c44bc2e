"""create_app(): the FastAPI application with its lifespan, routers and problem+json handlers."""

import gc
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.metadata import version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import TypeAdapter
from sqlalchemy.exc import DataError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Scope

from app import __doc__ as app_doc
from app.api.docs import add_offline_docs
from app.api.routes import (
    active_learning,
    annotations,
    api_keys,
    batches,
    cost,
    dataset_versions,
    health,
    imports,
    items,
    jobs,
    label_issues,
    me,
    models,
    predictions,
    prelabels,
    production,
    projects,
    quality,
    reviews,
    synthetic,
    webhooks,
)
from app.api.web import add_web_app
from app.db import Database, refusal_reason
from app.db_faults import classify, fault_error
from app.errors import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_TYPES,
    AppError,
    BadRequest,
    DatabaseBusy,
    DatabaseFull,
    DatabaseUnavailable,
    ErrorDetail,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InternalError,
    PayloadTooLarge,
    Problem,
    ValidationFailed,
    declared_problems,
    http_problem,
    problem_example,
    with_problems,
)
from app.jobs.runner import build_runner
from app.logs import configure_logging
from app.middleware import BodyLimitMiddleware, ProblemCORSMiddleware, RequestLogMiddleware
from app.models.idempotency import IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_MAX_LENGTH
from app.models.imports import FileImportForm, JsonImport
from app.models.item import ItemIn
from app.models.production import ProductionPredictionIn
from app.models.webhook import EVENT_PAYLOADS, EventType
from app.services.api_keys import PrincipalCache, ensure_bootstrap_admin
from app.services.retrain_watch import RetrainWatcher
from app.services.webhook_delivery import WebhookSender
from app.settings import Settings, get_settings

logger = logging.getLogger("labelwise")

# The spec's version is the installed package's (pyproject.toml), so they cannot drift.
VERSION = version("labelwise")
# Relative: the server that serves the spec (so /docs calls the server it came from).
# Generated clients take their base URL as an argument (docs/clients.md).
SERVERS = [{"url": "/", "description": "The server that serves this document."}]
LICENSE = {"name": "Apache-2.0", "identifier": "Apache-2.0"}


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        problem.model_dump(mode="json", exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


async def handle_app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    headers: dict[str, str] = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return problem_response(exc.to_problem(), headers or None)


async def handle_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        ErrorDetail(
            loc=[str(part) if not isinstance(part, int) else part for part in error["loc"]],
            msg=error["msg"],
        )
        for error in exc.errors()
    ]
    first = errors[0] if errors else None
    detail = f"{'.'.join(map(str, first.loc))}: {first.msg}" if first else "The request is invalid."
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return problem_response(ValidationFailed.problem(detail, errors=errors))


def routed_methods(app: FastAPI, scope: Scope | None = None) -> list[str]:
    """Every method some route answers on the scope's path (on any path without one).
    Starlette's 405 names only the first route whose path matched, and GET and POST of one
    path are two routes."""
    methods: set[str] = set()
    for route in iter_route_contexts(app.routes):  # the included routers' routes too
        if route.methods and (scope is None or route.matches(scope)[0] != Match.NONE):
            methods |= route.methods
    return sorted(methods)


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 404 and exc.detail == "Not Found":
        detail = f"No route {request.method} {request.url.path}; see /docs for the API."
    elif exc.status_code == 405:
        allowed = ", ".join(routed_methods(request.app, request.scope)) or headers.get("Allow", "")
        detail = f"{request.method} is not allowed on {request.url.path}."
        if allowed:
            headers["Allow"] = allowed
            detail = f"{request.method} is not allowed on {request.url.path}; it answers {allowed}."
    else:
        detail = str(exc.detail)
    return problem_response(http_problem(exc.status_code, detail), headers)


async def handle_data_error(_: Request, exc: Exception) -> JSONResponse:
    """A value validation let through but the database cannot store (e.g. out of range)."""
    assert isinstance(exc, DataError)
    detail = f"The database cannot store a value in this request: {refusal_reason(exc)}."
    return problem_response(ValidationFailed.problem(detail))


async def handle_database_error(request: Request, exc: Exception) -> JSONResponse:
    """A database fault met outside a route's retries (app.api.routing handles its own): its
    503 or 507; anything else the database raised is a bug."""
    error = fault_error(exc)
    if error is None:
        return await handle_unexpected(request, exc)
    logger.warning("database fault: %s", error.detail, exc_info=exc)
    return await handle_app_error(request, error)


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    if (error := fault_error(exc)) is not None:  # the driver's own error, unwrapped
        logger.warning("database fault: %s", error.detail, exc_info=exc)
        return await handle_app_error(request, error)
    logger.exception("unhandled error", exc_info=exc)
    if isinstance(exc, SQLAlchemyError):
        detail = "The database failed to complete the request; it was rolled back."
    else:
        detail = "An unexpected error; it has been logged. This is a bug."
    return problem_response(InternalError.problem(detail))


def operation_id(route: APIRoute) -> str:
    """The route function's name in camelCase (`create_batch` -> `createBatch`): what
    generated clients call the operation. Unique across the app (build_openapi checks), and
    stable: renaming a route function renames a client method (tests/test_openapi.py pins
    them)."""
    return operation_id_of(route.name)


def operation_id_of(name: str) -> str:
    """`create_batch` -> `createBatch`."""
    return re.sub(r"_([a-z0-9])", lambda match: match.group(1).upper(), name)


# Every router, included in this order (a path two routers could match goes to the first).
ROUTERS = (
    health.router,
    api_keys.router,
    projects.router,
    items.router,
    annotations.router,
    reviews.router,
    batches.router,
    me.router,
    models.algorithms_router,
    models.router,
    predictions.router,
    prelabels.router,
    active_learning.router,
    quality.router,
    cost.router,
    label_issues.router,
    synthetic.router,
    production.router,
    imports.router,
    dataset_versions.router,
    jobs.router,
    webhooks.router,
)


class Labelwise(FastAPI):
    """The app; with LABELWISE_CORS_ORIGINS set, CORS wraps its whole middleware stack, so the
    500s that Starlette's outermost ServerErrorMiddleware answers carry CORS headers too."""

    def __init__(self, *, settings: Settings, **options: Any) -> None:
        super().__init__(**options)
        self.state.settings = settings

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        settings: Settings = self.state.settings
        if not settings.cors_origins:
            return stack  # same-origin only: no CORS headers, and a preflight is a 405
        return ProblemCORSMiddleware(
            stack,
            origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials,
            methods=routed_methods(self),
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    app = Labelwise(
        settings=settings,
        title="Labelwise",
        version=VERSION,
        description=(app_doc or "").strip()
        + " All errors are RFC 9457 problem+json."
        + " Authenticate with `Authorization: Bearer <api-key>`.",
        lifespan=_lifespan(settings),
        generate_unique_id_function=operation_id,
        docs_url=None,
        redoc_url=None,
    )
    app.state.principals = PrincipalCache(settings.auth_cache_seconds)
    for router in ROUTERS:
        app.include_router(router)
    add_offline_docs(app)
    add_web_app(app)
    _declare_webhooks(app)
    _add_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_import_bytes=settings.max_import_bytes,
    )
    app.add_middleware(RequestLogMiddleware)
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    return app


def _lifespan(settings: Settings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Open the database, bootstrap it, start the job runner and the webhook sender; on
    shutdown stop them and close the engine."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings)
        app.state.database = database
        _bootstrap(database, settings)
        runner = build_runner(database, settings)
        app.state.runner = runner
        try:
            runner.start()
        except SQLAlchemyError as error:
            logger.warning("job runner not started: %s", _why_not_started(error))
        watcher = RetrainWatcher(database, runner.enqueue, every=settings.retrain_check_seconds)
        app.state.retrain_watcher = watcher
        watcher.start()
        sender = WebhookSender(database, settings) if settings.webhooks_sender else None
        if sender is not None:
            sender.start()
        tune_garbage_collector()
        yield
        if sender is not None:
            sender.stop()
        watcher.stop()
        runner.stop()
        database.engine.dispose()

    return lifespan


def _webhook_receiver() -> Callable[..., None]:
    def receive() -> None:
        """Labelwise POSTs this body, signed per Standard Webhooks (webhook-id,
        webhook-timestamp, webhook-signature headers; docs/webhooks.md)."""

    return receive


def _declare_webhooks(app: FastAPI) -> None:
    """The events an endpoint can subscribe to, in the spec's `webhooks` section. Each body
    is the payload model as Labelwise sends it (serialization schema, added by
    build_openapi), not as a route would read it."""
    for event_type in EventType:
        body = EVENT_PAYLOADS[event_type].__name__
        app.webhooks.add_api_route(
            event_type.value,
            _webhook_receiver(),
            methods=["POST"],
            name=event_type.value.replace(".", "_"),
            operation_id=operation_id_of(f"on_{event_type.value.replace('.', '_')}"),
            summary=f"The {event_type.value} event",
            tags=["webhooks"],
            openapi_extra={
                # Labelwise calls the receiver, which checks the signature, not a key.
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}
                    },
                },
            },
        )


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answers in the one problem+json envelope (app/errors.py)."""
    app.add_exception_handler(AppError, handle_app_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(DataError, handle_data_error)
    app.add_exception_handler(SQLAlchemyError, handle_database_error)
    app.add_exception_handler(Exception, handle_unexpected)


def tune_garbage_collector() -> None:
    """Collect less often: a bulk request allocates ~10^5 short-lived objects, and with the
    default thresholds Python re-scans the long-lived heap many times per request (bench/
    ingest.py measures the difference). Start-up objects are frozen out of every scan."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _why_not_started(error: SQLAlchemyError) -> str:
    """A start-up step that met the database: unreachable (a fault), else not migrated."""
    if (fault := classify(error)) is not None:
        return f"the database is unavailable ({fault.value}); requests answer 503 until it is back"
    return f"the schema is not migrated ({type(error).__name__}); run `labelwise migrate`"


def _bootstrap(database: Database, settings: Settings) -> None:
    try:
        with database.session(write=True) as session:
            secret = ensure_bootstrap_admin(session, configured_key=settings.bootstrap_admin_key)
    except SQLAlchemyError as error:
        logger.warning("no bootstrap admin key: %s", _why_not_started(error))
        return
    if secret:
        # The one time a key is logged: the contract prints the first admin key once.
        logger.warning("bootstrap admin key (shown once, store it now): %s", secret)


# Operations that never touch the database.
WITHOUT_DATABASE = frozenset({"getHealth", "getMetrics"})


def with_common_problems(operation: dict[str, Any], method: str) -> dict[str, dict[str, Any]]:
    """The operation's responses plus the problems any operation of its shape can answer: a
    bug (500); a database fault (503 unavailable or busy, and for a write 507 full:
    app.db_faults); for a body, one that cannot be decoded (400: bytes that are not UTF-8) or
    is over the size limit (413, BodyLimitMiddleware), refused before a route sees it; and, in
    place of FastAPI's own 422 for the parameters it validates, the problem+json one."""
    responses = dict(operation["responses"])
    common: list[type[AppError]] = [InternalError]
    if operation.get("operationId") not in WITHOUT_DATABASE:
        common += [DatabaseUnavailable, DatabaseBusy]
        if method.upper() not in {"GET", "HEAD", "OPTIONS"}:
            common.append(DatabaseFull)
    if "requestBody" in operation:
        common += [BadRequest, PayloadTooLarge]
    if "422" in responses and not declared_problems(responses["422"]):
        del responses["422"]
        common.append(ValidationFailed)
    return {str(status): response for status, response in with_problems(responses, *common).items()}


def declare_idempotency_key(operation: dict[str, Any]) -> None:
    """Every POST takes an optional `Idempotency-Key` (app/api/idempotency.py), and can answer
    its two problems."""
    operation.setdefault("parameters", []).append(
        {
            "name": IDEMPOTENCY_KEY_HEADER,
            "in": "header",
            "required": False,
            "description": "Makes retrying this POST safe: a request sent again with the same "
            "key (by the same API key, within 24 hours) gets the first response again "
            "(`Idempotent-Replayed: true`) instead of doing the work twice. E.g. a UUID. "
            "See docs/hardening.md.",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
                "pattern": "^[\\x21-\\x7e]+$",
            },
        }
    )
    operation["responses"] = {
        str(status): response
        for status, response in with_problems(
            operation["responses"], IdempotencyKeyInUse, IdempotencyKeyReused
        ).items()
    }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        webhooks=app.webhooks.routes,
        servers=SERVERS,
        license_info=LICENSE,
    )
    for operation in schema.get("webhooks", {}).values():
        operation["post"]["responses"] = {
            "2XX": {"description": "Received. Any other answer, or none in time, is retried."}
        }
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    # Schemas referenced by hand: the raw-body ingest and import routes, the problem envelope.
    ref_template = "#/components/schemas/{model}"
    for model in (ItemIn, ProductionPredictionIn, Problem, FileImportForm):
        extra = model.model_json_schema(ref_template=ref_template)
        components.update(extra.pop("$defs", {}))
        components[model.__name__] = extra
    for payload in EVENT_PAYLOADS.values():
        sent = payload.model_json_schema(ref_template=ref_template, mode="serialization")
        components.update(sent.pop("$defs", {}))
        components[payload.__name__] = sent
    json_import = TypeAdapter(JsonImport).json_schema(ref_template=ref_template)
    components.update(json_import.pop("$defs", {}))
    components["JsonImport"] = json_import
    declared: set[type[AppError]] = set()
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if method == "post" and path.startswith("/v1/"):
                declare_idempotency_key(operation)
            operation["responses"] = with_common_problems(operation, method)
            for response in operation["responses"].values():
                declared.update(declared_problems(response))
            undeclared = [
                status
                for status, response in operation["responses"].items()
                if status.isdigit() and int(status) >= 400 and not declared_problems(response)
            ]
            if undeclared:
                raise RuntimeError(
                    f"{method.upper()} {path}: declare its {', '.join(undeclared)} answers with "
                    "problem_responses(...) (app/errors.py)"
                )
    schema["components"]["examples"] = {
        slug: problem_example(kind) for slug, kind in PROBLEM_TYPES.items() if kind in declared
    }
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema
