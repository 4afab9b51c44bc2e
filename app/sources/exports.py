"""Export writers: JSON lines, CSV and Parquet, written from chunks of rows as a stream of
bytes, so an export of any size is sent as it is produced with flat memory.

The same rows always give the same bytes: fixed column order, fixed number formatting, no
timestamps in the output, Parquet row groups of a fixed size.
"""

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

PARQUET_ROW_GROUP = 2_000
MEDIA_TYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(
        json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n" for row in rows
    ).encode()


def jsonl_chunks(chunks: Iterable[list[dict[str, Any]]]) -> Iterator[bytes]:
    for chunk in chunks:
        yield _jsonl(chunk)


def csv_chunks(chunks: Iterable[list[dict[str, Any]]], columns: list[str]) -> Iterator[bytes]:
    """CSV with a header line; null is an empty field."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for chunk in chunks:
        for row in chunk:
            writer.writerow(["" if row[c] is None else row[c] for c in columns])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


class _Sink:
    """A write-only file for pyarrow that hands each written block back to the stream."""

    def __init__(self) -> None:
        self.blocks: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        block = bytes(data)
        self.blocks.append(block)
        self.position += len(block)
        return len(block)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None: ...

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data, self.blocks = b"".join(self.blocks), []
        return data


_ARROW_TYPES = {
    "item_id": "int64",
    "external_id": "string",
    "text": "string",
    "label": "string",
    "label_source": "string",
    "split": "string",
    "n_annotators": "int32",
    "agreement": "float64",
    "weight": "float64",
}


def parquet_chunks(chunks: Iterable[list[dict[str, Any]]], columns: list[str]) -> Iterator[bytes]:
    """Parquet, one row group per PARQUET_ROW_GROUP rows, each sent once written.

    Each row group is parsed from its JSON lines by pyarrow's JSON reader, not built with
    pa.array from Python objects: that path imports pandas (43 MiB) into the API process
    for good (docs/design.md, "Import weight")."""
    # Imported on first use: docs/design.md, "Import weight".
    import pyarrow as pa
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    schema = pa.schema([(c, getattr(pa, _ARROW_TYPES[c])()) for c in columns])
    parse = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    # malloc, not Arrow's default mimalloc pool, which keeps freed pages in the process.
    pool = pa.system_memory_pool()
    sink = _Sink()
    writer = pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema, memory_pool=pool)

    def write(rows: list[dict[str, Any]]) -> None:
        data = _jsonl(rows)
        # One block for the whole group: a JSON line may not straddle two blocks.
        read = pa_json.ReadOptions(use_threads=False, block_size=len(data) + 1)
        table = pa_json.read_json(
            io.BytesIO(data), read_options=read, parse_options=parse, memory_pool=pool
        )
        writer.write_table(table.select(columns))

    pending: list[dict[str, Any]] = []
    for chunk in chunks:
        pending.extend(chunk)
        while len(pending) >= PARQUET_ROW_GROUP:
            group, pending = pending[:PARQUET_ROW_GROUP], pending[PARQUET_ROW_GROUP:]
            write(group)
            yield sink.take()
    if pending:
        write(pending)
    writer.close()
    yield sink.take()


def export_chunks(
    file_format: str, chunks: Iterable[list[dict[str, Any]]], columns: list[str]
) -> Iterator[bytes]:
    if file_format == "csv":
        return csv_chunks(chunks, columns)
    if file_format == "parquet":
        return parquet_chunks(chunks, columns)
    return jsonl_chunks(chunks)
