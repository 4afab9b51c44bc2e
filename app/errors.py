"""The one error envelope: AppError and its subclasses, rendered as RFC 9457 problem+json."""

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, Protocol

from pydantic import BaseModel, Field

PROBLEM_MEDIA_TYPE = "application/problem+json"


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
    return f"/problems/{slug}"


def make_problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    errors: list[ErrorDetail] | None = None,
    context: dict[str, Any] | None = None,
) -> Problem:
    phrase = HTTPStatus(status).phrase
    return Problem(
        type=problem_type(slug or phrase.lower().replace(" ", "-").replace("'", "")),
        title=phrase,
        status=status,
        detail=detail,
        errors=errors,
        context=context,
    )


class AppError(Exception):
    status: int = 400
    slug: str = "bad-request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[ErrorDetail] | None = None,
        slug: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.context = context
        if slug is not None:
            self.slug = slug

    def to_problem(self) -> Problem:
        return make_problem(
            self.status, self.detail, slug=self.slug, errors=self.errors, context=self.context
        )


class Unauthorized(AppError):
    status = 401
    slug = "unauthorized"


class Forbidden(AppError):
    status = 403
    slug = "forbidden"


class NotFound(AppError):
    status = 404
    slug = "not-found"


class Conflict(AppError):
    status = 409
    slug = "conflict"


class PayloadTooLarge(AppError):
    status = 413
    slug = "payload-too-large"


class UnsupportedMediaType(AppError):
    status = 415
    slug = "unsupported-media-type"


class ValidationFailed(AppError):
    status = 422
    slug = "validation-error"


class NotReady(AppError):
    status = 503
    slug = "not-ready"


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


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting problem+json bodies for the given statuses."""
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
