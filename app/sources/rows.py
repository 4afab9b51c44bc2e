"""What every import adapter yields: numbered rows of JSON-safe values, in chunks."""

import base64
import datetime as dt
import math
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(slots=True)
class SourceRow:
    """One row of a source: its 1-based number and its values by column, or, when it could
    not be read (a line that is not JSON, a CSV record of the wrong width), why not."""

    number: int
    values: dict[str, Any] | None
    problem: str | None = None


RowChunk = list[SourceRow]


def json_safe(value: Any) -> Any:
    """A value from a database driver or pyarrow as JSON can store it: dates as ISO 8601,
    decimals as numbers, bytes as UTF-8 text (else base64), NaN and infinities as null."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        return json_safe(int(value) if value == value.to_integral_value() else float(value))
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)
