"""The one error envelope: every problem type is an AppError subclass, rendered as RFC 9457
problem+json.

Each subclass is one problem type (`/problems/<slug>`): its `status`, `slug`, `title` and, as
its docstring, when it happens. docs/errors.md is generated from these classes (`labelwise
errors-doc`), and operations declare the types they can answer with `problem_responses(...)`,
so the spec lists them. A specific type subclasses the general type of its status (e.g.
`NoActiveModel(Conflict)`), so `except Conflict` still catches it; declarations and clients
go by the slug alone.
"""

from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, Field

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_PREFIX = "/problems/"


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description="Where the problem is, e.g. ['body', 3, 'text'].")
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(examples=["/problems/not-found"])
    title: str
    status: int
    detail: str
    errors: list[ErrorDetail] | None = None
    context: dict[str, Any] | None = Field(
        default=None,
        description="Machine-readable facts behind the problem, e.g. the measured agreement "
        "and the threshold it missed.",
    )


def problem_type(slug: str) -> str:
    return f"{PROBLEM_PREFIX}{slug}"


# Every problem type by slug, in the order the classes are defined (the order of docs/errors.md).
PROBLEM_TYPES: dict[str, type["AppError"]] = {}


class AppError(Exception):
    """The base of every problem type; raise a subclass, never this class."""

    status: ClassVar[int]
    slug: ClassVar[str]
    title: ClassVar[str]
    # Only ever a job's `error` (never a response), or only a bulk entry's `problem`: such a
    # type cannot be declared on an operation.
    job_only: ClassVar[bool] = False
    entry_only: ClassVar[bool] = False
    # Seconds a client should wait before retrying: sent as the `Retry-After` header.
    retry_after: ClassVar[int | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register the new problem type; refuse one that would share a slug, or lack one or
        the docstring that docs/errors.md prints as its "when"."""
        super().__init_subclass__(**kwargs)
        if "slug" not in cls.__dict__:
            raise TypeError(f"{cls.__name__}: a problem type names its own slug")
        if cls.slug in PROBLEM_TYPES:
            raise TypeError(f"{cls.__name__}: slug {cls.slug!r} is {PROBLEM_TYPES[cls.slug]}'s")
        if not (cls.__doc__ or "").strip():
            raise TypeError(f"{cls.__name__}: a problem type says when it happens (docstring)")
        if "title" not in cls.__dict__:
            cls.title = HTTPStatus(cls.status).phrase
        PROBLEM_TYPES[cls.slug] = cls

    def __init__(
        self,
        detail: str,
        *,
        errors: list[ErrorDetail] | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.context = context

    @classmethod
    def problem(
        cls,
        detail: str,
        *,
        errors: list[ErrorDetail] | None = None,
        context: dict[str, Any] | None = None,
    ) -> Problem:
        """This type's problem without raising it: a bulk entry's, a job's `error`."""
        return Problem(
            type=problem_type(cls.slug),
            title=cls.title,
            status=cls.status,
            detail=detail,
            errors=errors,
            context=context,
        )

    @classmethod
    def when(cls) -> str:
        """The docstring on one line: when this problem happens."""
        return " ".join((cls.__doc__ or "").split())

    def to_problem(self) -> Problem:
        return self.problem(self.detail, errors=self.errors, context=self.context)


# --- 4xx ----------------------------------------------------------------------------------------


class BadRequest(AppError):
    """The body cannot be decoded (bytes that are not UTF-8 where JSON is expected). Malformed
    JSON that decodes is a 422 `validation-error`. Any operation that takes a body can answer
    it, as the spec says."""

    status = 400
    slug = "bad-request"


class Unauthorized(AppError):
    """No `Authorization: Bearer` key, or an unknown or revoked one. Carries
    `WWW-Authenticate: Bearer`."""

    status = 401
    slug = "unauthorized"


class Forbidden(AppError):
    """The key's role may not do this (e.g. an annotator writing in another's name, a service
    key managing keys)."""

    status = 403
    slug = "forbidden"


class CorsRefused(Forbidden):
    """A browser's CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
    from an origin not in `LABELWISE_CORS_ORIGINS`, or asking for a method or request header
    the API does not take. Answered by the CORS layer, before any route; the browser then
    refuses to send the request."""

    slug = "cors-refused"


class NotFound(AppError):
    """Unknown project, item, key, batch, job, model or dataset version, webhook or delivery,
    or route; an import naming a SQL connection the server does not have
    (`LABELWISE_SQL_SOURCES`). Also a bulk entry's `problem` when it names an unknown item."""

    status = 404
    slug = "not-found"


class MethodNotAllowed(AppError):
    """The route exists but not with this method; `Allow` lists every method the path
    answers. Without `LABELWISE_CORS_ORIGINS`, a browser's CORS preflight is one too."""

    status = 405
    slug = "method-not-allowed"


class Conflict(AppError):
    """The request contradicts stored state: a duplicate name, removing a label in use, a key
    revoking itself, a job that cannot be cancelled or retried in its state, retrying a webhook
    delivery while it is being sent, a batch that kept colliding with concurrent writes (also a
    click-log import job's `error`: chunks already written stay, `retry` it)."""

    status = 409
    slug = "conflict"


class DuplicateText(Conflict):
    """An ingest entry's update would give an item the text of another item."""

    slug = "duplicate-text"
    entry_only = True


class NoActiveModel(Conflict):
    """Prelabels without `model_version`, or CROWDLAB consensus
    (`GET .../consensus?method=crowdlab`, `consensus_method: "crowdlab"`), while the project
    has no active model."""

    slug = "no-active-model"


class AgreementBelowThreshold(Conflict):
    """Moving a project from `pilot` to `production` while Krippendorff's alpha is below
    `agreement_threshold` or not measurable yet; `context` holds `krippendorff_alpha`,
    `agreement_threshold` and `n_pairable_items`. Send `force: true` with a `reason` to move
    anyway."""

    slug = "agreement-below-threshold"


class NoPredictions(Conflict):
    """A named external `model_version` has no stored predictions in the project (prelabels,
    batches)."""

    slug = "no-predictions"


class NotEnoughLabels(Conflict):
    """Training, an active-learning replay or prelabels with `target_precision` need more
    resolved labels (human, or implicit from user behaviour) than the project has; `detail`
    gives the counts and, when answered items wait for more answers (a pilot's second answer),
    how many and what to do. For training and reports `context` holds `label_counts`,
    `min_per_label`, `items_waiting_for_answers`, `answers_required` and `phase`. A
    label-issue report job fails with this problem (in the job's `error`)."""

    slug = "not-enough-labels"


class ReportInProgress(Conflict):
    """A label-issue report is already queued or running for the project; `detail` names its
    job."""

    slug = "report-in-progress"


class SyntheticInProgress(Conflict):
    """A synthetic generation is already queued or running for the project (one at a time
    keeps the cap exact); `detail` names its job."""

    slug = "synthetic-in-progress"


class LeaseHeldByAnother(Conflict):
    """An annotator key read, released or skipped items of another annotator's batch."""

    slug = "lease-held-by-another"


class AlreadyAnswered(Conflict):
    """Skipping batch items that were already answered (resubmit an annotation instead)."""

    slug = "already-answered"


class SplitChanged(Conflict):
    """Freezing a dataset version with a `test_share` other than the latest version's: items
    would move between train and test. Leave `test_share` out to keep the project's split."""

    slug = "split-changed"


class NothingToFreeze(Conflict):
    """Freezing a dataset version while the project has no resolved labels yet; `context`
    holds `items_waiting_for_answers`, `answers_required` and `phase` (answered items that
    wait for more answers, as in a pilot's second answer)."""

    slug = "nothing-to-freeze"


class TrainingRefused(Conflict):
    """The learning library refused the training data or params."""

    slug = "training-refused"
    job_only = True


class IdempotencyKeyInUse(Conflict):
    """A POST with an `Idempotency-Key` this caller already used, whose response is not
    recorded: the first request is still running (retry shortly to get its response), or it
    was applied but its response was lost (the detail says which; read the resource's state
    instead). Nothing was done twice."""

    slug = "idempotency-key-in-use"


class UploadGone(AppError):
    """A file import's uploaded file is no longer stored: a retry of an import that already
    ran to its end, or that waited over a day. Upload the file again. See
    [imports.md](imports.md)."""

    status = 410
    slug = "import-upload-gone"
    job_only = True


class PayloadTooLarge(AppError):
    """The body is over `LABELWISE_MAX_BODY_BYTES`, a JSON ingest has more than 10,000 items,
    a production-samples request more than 10,000 predictions
    (`LABELWISE_MAX_ITEMS_PER_REQUEST`), or (per NDJSON line) a line is over the line limit."""

    status = 413
    slug = "payload-too-large"


class UnsupportedMediaType(AppError):
    """Ingest got neither `application/json` nor NDJSON; a file upload
    (`POST .../imports/upload`) not `multipart/form-data`; a SQL or click-log import
    (`POST .../imports`) neither `application/json` nor, as file imports were once sent,
    `multipart/form-data`."""

    status = 415
    slug = "unsupported-media-type"


class ValidationFailed(AppError):
    """The body, a path or query parameter, or one bulk entry is invalid (for a production
    prediction: also an unknown label, or a `predicted_at` in the future); or every entry of a
    bulk request failed."""

    status = 422
    slug = "validation-error"


class IdempotencyKeyReused(ValidationFailed):
    """An `Idempotency-Key` this caller already sent with a different request (method, path,
    query or body) in the last 24 hours. Nothing was done; use a new key for a new request."""

    slug = "idempotency-key-reused"


class UnreadableFile(ValidationFailed):
    """A file import's file is empty, not Parquet, has no usable CSV header, or (the job's
    `error`) turns out broken while it is read (truncated gzip, damaged Parquet); rows read
    before stay imported."""

    slug = "unreadable-file"


class SqlQueryFailed(ValidationFailed):
    """A SQL import's query failed on the source database: it tried to write (connections are
    read-only), a syntax error, a missing table. The source is unchanged."""

    slug = "sql-query-failed"
    job_only = True


class SqlQueryTimeout(AppError):
    """A SQL import's query ran longer than `LABELWISE_SQL_SOURCE_TIMEOUT_SECONDS` in one
    statement (on PostgreSQL, each fetch of a chunk of rows is one) and was stopped; `detail`
    and `context.timeout_seconds` give the limit. Chunks imported before it stay (running the
    import again is idempotent). Make the query cheaper (an index, a narrower `WHERE`,
    `max_rows`), or raise the limit."""

    status = 504
    slug = "sql-query-timeout"
    job_only = True


class LabelsMissing(ValidationFailed):
    """A click-log import (`POST .../imports`, `kind: "click_logs"`) into a project without
    the labels `relevant` and `not_relevant`; `detail` names the missing ones. Nothing is
    queued."""

    slug = "labels-missing"


class WebhookTargetRefused(ValidationFailed):
    """A webhook `url` the service will not send to: not http(s), credentials in it, a host
    that does not resolve, or one that resolves to a loopback, link-local, private or other
    non-public address (unless `LABELWISE_WEBHOOKS_ALLOW_PRIVATE` is true). `detail` names the
    address. See [webhooks.md](webhooks.md)."""

    slug = "webhook-target-refused"


# --- 5xx ----------------------------------------------------------------------------------------


class InternalError(AppError):
    """A bug. It is logged with its traceback; please report it. Any operation can answer it,
    and a job that failed unexpectedly carries it as its `error`."""

    status = 500
    slug = "internal-error"


class JobInterrupted(InternalError):
    """The process running the job died; `retry` it."""

    slug = "job-interrupted"
    job_only = True


class LLMRefused(AppError):
    """The LLM endpoint of a synthetic generation refused the request (bad key, unknown
    model)."""

    status = 502
    slug = "llm-error"
    job_only = True


class NotReady(AppError):
    """`/readyz`: the database is unreachable or not migrated to the latest revision."""

    status = 503
    slug = "not-ready"


class SqlSourceMisconfigured(NotReady):
    """A SQL import names a connection whose configured URL is not a usable SQLite or
    PostgreSQL URL (the URL is never shown). Nothing is queued."""

    slug = "sql-source-misconfigured"


class SqlSourceUnavailable(NotReady):
    """A SQL import's source database cannot be reached, or its SQLite file does not exist."""

    slug = "sql-source-unavailable"
    job_only = True


class LLMNotConfigured(NotReady):
    """`POST .../synthetic` on a server without `LABELWISE_LLM_BASE_URL` and
    `LABELWISE_LLM_MODEL`. Nothing is queued."""

    slug = "llm-not-configured"


class LLMUnavailable(NotReady):
    """The LLM endpoint of a synthetic generation kept answering 429/5xx or could not be
    reached after `LABELWISE_LLM_MAX_RETRIES` retries, before any item was stored."""

    slug = "llm-unavailable"
    job_only = True


class DatabaseUnavailable(NotReady):
    """The database cannot be reached: the connection was lost (a failover, a restart, a
    connection pooler or an idle timeout closed it), the server is shutting down or starting,
    or it is read-only. Nothing of the request was stored, unless the detail says the outcome
    of its commit is unknown. Sent with `Retry-After`; `context.fault` names the fault. A job
    that meets it fails with it and can be retried."""

    slug = "database-unavailable"
    retry_after = 2


class DatabaseBusy(NotReady):
    """The database was too busy to finish the request in time: another writer held its lock
    past the busy timeout (SQLite), a concurrent transaction conflicted or deadlocked with this
    one (PostgreSQL) after an automatic retry, or every pooled connection stayed taken. Nothing
    was stored. Sent with `Retry-After`; `context.fault` names the fault."""

    slug = "database-busy"
    retry_after = 1


class DatabaseFull(AppError):
    """The database's disk (or quota) is full: writes are refused and nothing of the request
    was stored; reads keep working. Writing resumes, without a restart, once an operator frees
    space. 507, not 503: retrying will not help until someone acts."""

    status = 507
    slug = "database-full"


# --- helpers ------------------------------------------------------------------------------------


def _slug_of_phrase(status: int) -> str:
    return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")


def http_problem(status: int, detail: str) -> Problem:
    """The problem for an HTTP error raised by the framework (no route, wrong method, a body
    it cannot decode): the type named after the status phrase, as it always was."""
    slug = _slug_of_phrase(status)
    if slug in PROBLEM_TYPES:
        return PROBLEM_TYPES[slug].problem(detail)
    phrase = HTTPStatus(status).phrase
    return Problem(type=problem_type(slug), title=phrase, status=status, detail=detail)


class EntryResult(Protocol):
    """One entry's outcome in a bulk report."""

    @property
    def index(self) -> int: ...

    @property
    def problem(self) -> Problem | None: ...


def refuse_if_all_failed(results: Sequence[EntryResult], *, total: int, noun: str) -> None:
    """A bulk request in which every entry failed wrote nothing: answer 422 with every error."""
    failures = [(r.index, r.problem) for r in results if r.problem is not None]
    if not total or len(failures) < total:
        return
    errors = [
        error
        for index, problem in failures
        for error in problem.errors or [ErrorDetail(loc=["body", index], msg=problem.detail)]
    ]
    raise ValidationFailed(f"All {total} {noun} failed; nothing was written.", errors=errors[:1000])


# --- declaring problem types on operations (the OpenAPI `responses`) ----------------------------

Responses = dict[int | str, dict[str, Any]]


def problem_responses(*types: type[AppError]) -> Responses:
    """OpenAPI `responses` entries for the problem types an operation can answer, one entry per
    status: its description and the problem+json media type's `examples` name each type."""
    by_status: dict[int, list[type[AppError]]] = {}
    for kind in _in_definition_order(types):
        if kind.job_only or kind.entry_only:
            raise TypeError(f"{kind.__name__} is never a response; it cannot be declared")
        by_status.setdefault(kind.status, []).append(kind)
    return {status: _problem_response(kinds) for status, kinds in sorted(by_status.items())}


def _in_definition_order(types: Iterable[type[AppError]]) -> list[type[AppError]]:
    order = list(PROBLEM_TYPES.values())
    return sorted(set(types), key=order.index)


def _problem_response(types: list[type[AppError]]) -> dict[str, Any]:
    return {
        "description": f"{types[0].title}: {', '.join(problem_type(t.slug) for t in types)}",
        "content": {
            PROBLEM_MEDIA_TYPE: {
                "schema": {"$ref": "#/components/schemas/Problem"},
                # Each type's example is written once, in components/examples (problem_example).
                "examples": {t.slug: {"$ref": f"#/components/examples/{t.slug}"} for t in types},
            }
        },
    }


def problem_example(kind: type[AppError]) -> dict[str, Any]:
    """The spec's example of a problem type (components/examples/<slug>): its detail says when."""
    value = {"type": problem_type(kind.slug), "title": kind.title, "status": kind.status}
    return {"value": {**value, "detail": kind.when()}}


def declared_problems(response: Mapping[str, Any]) -> list[type[AppError]]:
    """The problem types one OpenAPI response declares (none if it is not a problem response)."""
    media = response.get("content", {}).get(PROBLEM_MEDIA_TYPE, {})
    return [PROBLEM_TYPES[slug] for slug in media.get("examples", {})]


def with_problems(
    responses: Mapping[int | str, dict[str, Any]], *types: type[AppError]
) -> Responses:
    """`responses` with more problem types declared, added to those already declared for the
    same status (FastAPI's own merge of a router's and a route's `responses` replaces a
    status's entry as a whole). Keys keep their form (int in code, str in a built spec)."""
    merged: Responses = dict(responses)
    for status, response in problem_responses(*types).items():
        key = next((k for k in merged if str(k) == str(status)), status)
        before = declared_problems(merged.get(key, {}))
        merged[key] = problem_responses(*before, *types)[status] if before else response
    return merged
