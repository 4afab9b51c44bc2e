"""Read bulk bodies: a JSON array held in memory, or NDJSON streamed in bounded chunks.

Parsing is strict: NaN and Infinity are not JSON and no database stores them faithfully,
and pathologically deep nesting is an invalid entry, not a crash.
"""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NoReturn

from app.errors import ErrorDetail, PayloadTooLarge, Problem, ValidationFailed

NDJSON_MEDIA_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})


@dataclass(frozen=True, slots=True)
class InvalidEntry:
    """An entry that failed before validation (e.g. an NDJSON line that is not JSON)."""

    problem: Problem


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every call: json.loads with options builds a new one each time.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def strict_loads(data: bytes | str) -> Any:
    """Parse UTF-8 JSON; NaN, Infinity, invalid UTF-8 and runaway nesting are ValueErrors."""
    try:
        return _DECODER.decode(data.decode() if isinstance(data, bytes) else data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_json_array(body: bytes, *, max_items: int) -> list[Any]:
    """The entries of a JSON array body; 422 if it is not one, 413 if it is too long."""
    try:
        entries = strict_loads(body)
    except ValueError as error:
        raise ValidationFailed(
            f"The body is not valid JSON: {error}.",
            errors=[ErrorDetail(loc=["body"], msg=str(error))],
        ) from None
    if not isinstance(entries, list):
        raise ValidationFailed(
            "Send a JSON array.", errors=[ErrorDetail(loc=["body"], msg="expected an array")]
        )
    if len(entries) > max_items:
        raise PayloadTooLarge(
            f"{len(entries)} entries in one JSON request; the limit is {max_items}. "
            "Split the request, or stream any number as application/x-ndjson."
        )
    return entries


async def ndjson_chunks(
    stream: AsyncIterator[bytes], *, chunk_size: int, max_line_bytes: int
) -> AsyncIterator[list[tuple[int, Any]]]:
    """Yield chunks of (index, entry); an entry's index is its line number - 1.

    Blank lines are skipped (but counted). A line over max_line_bytes is dropped as it
    streams in and reported as an InvalidEntry, so memory stays bounded per line.
    """
    chunk: list[tuple[int, Any]] = []
    line_number = 0
    pending = b""  # the start of a line whose end has not arrived yet
    overlong = False

    def take(line: bytes) -> None:
        if overlong or len(line) > max_line_bytes:
            chunk.append((line_number, _overlong(max_line_bytes)))
        elif line.strip():
            chunk.append((line_number, _parse_line(line)))

    async for data in stream:
        *complete, rest = (pending + data).split(b"\n")
        for line in complete:
            take(line)
            overlong = False
            line_number += 1
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
        pending = rest
        if len(pending) > max_line_bytes:
            overlong, pending = True, b""
    if overlong or pending.strip():
        take(pending)
    if chunk:
        yield chunk


def _parse_line(line: bytes) -> Any:
    try:
        return strict_loads(line)
    except ValueError as error:
        message = f"This line is not JSON: {error}."
        return InvalidEntry(ValidationFailed.problem(message))


def _overlong(max_line_bytes: int) -> InvalidEntry:
    message = f"This line is over {max_line_bytes} bytes."
    return InvalidEntry(PayloadTooLarge.problem(message))
