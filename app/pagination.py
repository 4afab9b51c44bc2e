"""The one page envelope {items, next_cursor} and opaque keyset cursors over integer ids."""

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlmodel.sql.expression import SelectOfScalar

from app.errors import ErrorDetail, ValidationFailed
from app.models.base import MAX_DB_ID, ResponseModel

T = TypeVar("T")


class Page(ResponseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(last_id: int) -> str:
    raw = json.dumps({"after": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id after which the next page starts, or None for the first page."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_DB_ID:
            raise TypeError
        return value
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        raise ValidationFailed(
            "The cursor is not one this service issued; pass next_cursor back unchanged.",
            errors=[ErrorDetail(loc=["query", "cursor"], msg="invalid cursor")],
        ) from None


@dataclass(frozen=True)
class PageRequest:
    """Where a page starts and how long it is, decoded and clamped."""

    after_id: int | None
    limit: int


class HasId(Protocol):
    @property
    def id(self) -> int | None: ...


M = TypeVar("M")
H = TypeVar("H", bound=HasId)


def page_request(
    *, limit: int | None, cursor: str | None, default: int, maximum: int
) -> PageRequest:
    size = default if limit is None else max(1, min(limit, maximum))
    return PageRequest(after_id=decode_cursor(cursor), limit=size)


def keyset(
    query: SelectOfScalar[M], id_column: Any, page: PageRequest, *, descending: bool = False
) -> SelectOfScalar[M]:
    """Restrict a query to one page in id order (or newest first), fetching one extra row to
    see if more follow."""
    if page.after_id is not None:
        query = query.where(id_column < page.after_id if descending else id_column > page.after_id)
    order = id_column.desc() if descending else id_column
    return query.order_by(order).limit(page.limit + 1)


def make_page(rows: Sequence[H], page: PageRequest, convert: Callable[[H], T]) -> Page[T]:
    """The page of converted rows, with a cursor if the query found one more row."""
    kept = rows[: page.limit]
    last_id = kept[-1].id if kept else None
    more = len(rows) > page.limit and last_id is not None
    return Page[T](
        items=[convert(row) for row in kept],
        next_cursor=encode_cursor(last_id) if more and last_id is not None else None,
    )
