"""ASGI middleware: request body limit (413), one structured log line and metrics per request,
and CORS for browser front-ends on other origins."""

import logging
import re
import time
import uuid
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PROBLEM_MEDIA_TYPE, CorsRefused, PayloadTooLarge, Problem
from app.sources.json_bodies import NDJSON_MEDIA_TYPES

logger = logging.getLogger("labelwise.request")

REQUESTS = Counter(
    "labelwise_http_requests_total",
    "HTTP requests by route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "labelwise_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# The contract makes NDJSON ingest an unbounded stream, processed in chunks.
STREAMED_INGEST_PATH = re.compile(r"^/v1/projects/[^/]+/items/?$")
# File imports are uploads of up to max_import_bytes, spooled to disk as they arrive.
IMPORT_PATH = re.compile(r"^/v1/projects/[^/]+/imports(/upload)?/?$")
MULTIPART = "multipart/form-data"


async def send_problem(send: Send, problem: Problem) -> None:
    body = problem.model_dump_json(exclude_none=True).encode()
    await send(
        {
            "type": "http.response.start",
            "status": problem.status,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def is_file_import(scope: Scope, media_type: str) -> bool:
    return (
        scope["method"] == "POST"
        and media_type == MULTIPART
        and IMPORT_PATH.match(scope["path"]) is not None
    )


def is_streamed_ingest(scope: Scope, media_type: str) -> bool:
    return (
        scope["method"] == "POST"
        and media_type in NDJSON_MEDIA_TYPES
        and STREAMED_INGEST_PATH.match(scope["path"]) is not None
    )


class BodyLimitMiddleware:
    """Refuse bodies over the limit with 413, by Content-Length or while they stream in.

    When a chunked body crosses the limit, the 413 is sent at once and the app is told
    the client went away, so it stops reading and its own answer is dropped. File imports
    (multipart uploads to .../imports/upload, or to .../imports as before) have their own,
    larger limit.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_import_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_import_bytes = max_import_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        media_type = content_type.split(";")[0].strip().lower()
        if is_streamed_ingest(scope, media_type):
            await self.app(scope, receive, send)
            return
        if is_file_import(scope, media_type):
            limit = self.max_import_bytes
            detail = f"The upload is over the import limit of {limit} bytes."
        else:
            limit = self.max_body_bytes
            detail = f"The request body is over the limit of {limit} bytes."
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_problem(send, PayloadTooLarge.problem(detail))
            return

        received = 0
        answered = False  # by this middleware: the app's own response is then dropped
        started = False

        async def limited_receive() -> Message:
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not started:
                        await send_problem(send, PayloadTooLarge.problem(detail))
                    answered = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not answered:
                raise


class RequestLogMiddleware:
    """One JSON log line and one metrics observation per request; never logs headers or bodies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = (
            dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")[:100]
            or uuid.uuid4().hex
        )
        status = 500
        started = time.perf_counter()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(elapsed)
            fields: dict[str, Any] = {
                "request_id": request_id,
                "method": method,
                "path": scope["path"],
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "client": (scope.get("client") or ("-",))[0],
            }
            logger.info("request", extra={"fields": fields})


# What a browser front-end on an allowed origin may send, and read of the answers: besides the
# API's methods, its request headers (the key, the body's type, a request id to correlate
# logs), and the response headers a client acts on (a job's or batch's Location, the request
# id, an export's file name and content hash).
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", "X-Request-ID")
CORS_EXPOSE_HEADERS = ("Content-Disposition", "Location", "X-Dataset-Content-Hash", "X-Request-ID")
# How long a browser may cache a preflight's answer.
CORS_MAX_AGE_SECONDS = 600


class ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, answering a refused preflight in problem+json and saying
    what was refused. It wraps the whole app (app/main.py), so every answer, a 413 or a 500
    included, carries the CORS headers its origin is due."""

    def __init__(
        self, app: ASGIApp, *, origins: list[str], allow_credentials: bool, methods: list[str]
    ) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=methods,
            allow_headers=CORS_ALLOW_HEADERS,
            allow_credentials=allow_credentials,
            expose_headers=CORS_EXPOSE_HEADERS,
            max_age=CORS_MAX_AGE_SECONDS,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = []
        origin = request_headers["origin"]
        if not self.is_allowed_origin(origin=origin):
            refused.append(f"origin {origin} is not in LABELWISE_CORS_ORIGINS")
        method = request_headers["access-control-request-method"]
        if method not in self.allow_methods:
            refused.append(f"method {method} is not one of {', '.join(self.allow_methods)}")
        wanted = request_headers.get("access-control-request-headers", "")
        extra = sorted(
            {h.strip().lower() for h in wanted.split(",") if h.strip()} - set(self.allow_headers)
        )
        if extra:
            refused.append(
                f"request headers {', '.join(extra)} are not among "
                f"{', '.join(CORS_ALLOW_HEADERS)} and the CORS-safelisted ones"
            )
        if "access-control-request-private-network" in request_headers:
            refused.append("private network access is not offered")
        problem = CorsRefused.problem(f"CORS preflight refused: {'; '.join(refused)}.")
        headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-type", "content-length")
        }
        return JSONResponse(
            problem.model_dump(mode="json", exclude_none=True),
            status_code=problem.status,
            media_type=PROBLEM_MEDIA_TYPE,
            headers=headers,
        )
