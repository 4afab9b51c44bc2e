"""File readers for imports: JSON lines, CSV with a header, and Parquet, read as a stream of
byte chunks into chunks of numbered rows with bounded memory.

JSONL and CSV are decoded incrementally, line by line (gzip-compressed files are detected by
their magic bytes and decompressed as they stream); a line over the line limit is dropped as
it streams in and reported as a bad row. Parquet needs random access to its footer, so its
bytes are spooled to a temporary file first and read back one record batch at a time.
"""

import codecs
import csv
import os
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import PurePosixPath, PureWindowsPath
from typing import IO, TYPE_CHECKING, Literal

from app.errors import UnreadableFile
from app.sources.json_bodies import strict_loads
from app.sources.rows import RowChunk, SourceRow, json_safe

if TYPE_CHECKING:
    import pyarrow.parquet as pq

FileFormat = Literal["jsonl", "csv", "parquet"]
EXTENSIONS: dict[str, FileFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = codecs.BOM_UTF8
READ_BYTES = 64 * 1024  # what the request-time checks read at a time
GUNZIP_OUT_BYTES = 1024 * 1024  # decompressed bytes produced at a time


def base_name(file_name: str) -> str:
    """The file's own name, without any directory a client sent with it."""
    return PureWindowsPath(PurePosixPath(file_name).name).name


def format_from_name(file_name: str) -> FileFormat | None:
    """jsonl, csv or parquet from the extension (a trailing .gz is looked through)."""
    name = base_name(file_name).lower().removesuffix(".gz")
    return EXTENSIONS.get(os.path.splitext(name)[1])


def stem(file_name: str) -> str:
    """The file name without its format extensions: "crm-2024.csv.gz" -> "crm-2024"."""
    name = base_name(file_name)
    lowered = name.lower()
    if lowered.endswith(".gz"):
        name, lowered = name[:-3], lowered[:-3]
    extension = os.path.splitext(lowered)[1]
    return name[: -len(extension)] if extension in EXTENSIONS else name


# --- byte streams --------------------------------------------------------------------------------


def _gunzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Decompress a (possibly multi-member) gzip stream, GUNZIP_OUT_BYTES at most at a time."""
    decompressor = zlib.decompressobj(wbits=31)
    started = False  # the current member has had input
    try:
        for data in chunks:
            while data or started:
                started = True
                out = decompressor.decompress(data, GUNZIP_OUT_BYTES)
                if out:
                    yield out
                if decompressor.eof:
                    data = decompressor.unused_data
                    decompressor, started = zlib.decompressobj(wbits=31), False
                    continue
                data = decompressor.unconsumed_tail
                if not data and len(out) < GUNZIP_OUT_BYTES:
                    break  # all input so far is decompressed; wait for more
        if started:
            tail = decompressor.flush()
            if tail:
                yield tail
            if not decompressor.eof:
                raise UnreadableFile("The gzip stream ends early: the file is truncated.")
    except zlib.error as error:
        raise UnreadableFile(f"The file is not valid gzip: {error}.") from None


def decompressed(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The bytes of a file, gunzipped when they start with the gzip magic bytes."""
    iterator = iter(chunks)
    first = b""
    for data in iterator:
        first += data
        if len(first) >= len(GZIP_MAGIC):
            break
    if not first:
        return iter(())
    stream = chain([first], iterator)
    return _gunzip(stream) if first.startswith(GZIP_MAGIC) else stream


def lines(chunks: Iterable[bytes], *, max_line_bytes: int) -> Iterator[bytes | None]:
    """The lines of a byte stream without their b"\\n"; None for a line over max_line_bytes,
    which is dropped as it streams in so memory stays bounded."""
    pending = b""
    overlong = False
    for data in chunks:
        *complete, rest = (pending + data).split(b"\n")
        for line in complete:
            yield None if overlong or len(line) > max_line_bytes else line
            overlong = False
        pending = rest
        if len(pending) > max_line_bytes:
            overlong, pending = True, b""
    if overlong:
        yield None
    elif pending:
        yield pending if len(pending) <= max_line_bytes else None


def _file_blocks(file: IO[bytes]) -> Iterator[bytes]:
    file.seek(0)
    while block := file.read(READ_BYTES):
        yield block


# --- JSON lines ----------------------------------------------------------------------------------


def _jsonl_rows(
    data: Iterable[bytes], *, chunk_size: int, max_line_bytes: int
) -> Iterator[RowChunk]:
    chunk: RowChunk = []
    for number, line in enumerate(lines(data, max_line_bytes=max_line_bytes), start=1):
        if line is None:
            chunk.append(SourceRow(number, None, f"The line is over {max_line_bytes} bytes."))
        elif not line.strip():
            continue
        else:
            try:
                value = strict_loads(line)
            except ValueError as error:
                chunk.append(SourceRow(number, None, f"The line is not JSON: {error}."))
            else:
                if isinstance(value, dict):
                    chunk.append(SourceRow(number, value))
                else:
                    problem = f"The line is a JSON {type(value).__name__}, not an object."
                    chunk.append(SourceRow(number, None, problem))
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- CSV -----------------------------------------------------------------------------------------


class _CsvLines:
    """Decoded lines for csv.reader. Undecodable bytes are kept as surrogates (the record is
    then refused); an overlong line becomes an empty line and raises the `overlong` flag."""

    def __init__(self, data: Iterable[bytes], *, max_line_bytes: int) -> None:
        self._lines = lines(data, max_line_bytes=max_line_bytes)
        self._first = True
        self.overlong = False

    def __iter__(self) -> "_CsvLines":
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        if line is None:
            self.overlong = True
            return "\n"
        if self._first:
            self._first = False
            line = line.removeprefix(UTF8_BOM)
        return line.decode("utf-8", "surrogateescape") + "\n"


def _undecodable(record: list[str]) -> bool:
    for value in record:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def _csv_header(reader: Iterator[list[str]], csv_lines: _CsvLines) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise UnreadableFile("The CSV file is empty: it needs a header line.") from None
    except csv.Error as error:
        raise UnreadableFile(f"The CSV header is not valid CSV: {error}.") from None
    if csv_lines.overlong:
        raise UnreadableFile("The CSV header line is over the line limit.")
    if not header or not any(name.strip() for name in header):
        raise UnreadableFile("The CSV file's first line is blank: it needs a header line.")
    if _undecodable(header):
        raise UnreadableFile("The CSV header is not valid UTF-8.")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise UnreadableFile(f"The CSV header names a column more than once: {repeated}.")
    return header


def _allow_long_fields(max_line_bytes: int) -> None:
    # csv's own field limit (128 KiB) would refuse texts that the line limit allows.
    if csv.field_size_limit() < max_line_bytes:
        csv.field_size_limit(max_line_bytes)


def _csv_rows(data: Iterable[bytes], *, chunk_size: int, max_line_bytes: int) -> Iterator[RowChunk]:
    _allow_long_fields(max_line_bytes)
    csv_lines = _CsvLines(data, max_line_bytes=max_line_bytes)
    reader = csv.reader(csv_lines)
    header = _csv_header(reader, csv_lines)
    chunk: RowChunk = []
    number = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            number += 1
            chunk.append(SourceRow(number, None, f"The record is not valid CSV: {error}."))
            continue
        if csv_lines.overlong:
            csv_lines.overlong = False
            number += 1
            chunk.append(SourceRow(number, None, f"A line is over {max_line_bytes} bytes."))
        elif not record:
            continue  # a blank line
        else:
            number += 1
            if len(record) != len(header):
                problem = f"The record has {len(record)} fields; the header has {len(header)}."
                chunk.append(SourceRow(number, None, problem))
            elif _undecodable(record):
                chunk.append(SourceRow(number, None, "The record is not valid UTF-8."))
            else:
                chunk.append(SourceRow(number, dict(zip(header, record, strict=True))))
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- Parquet -------------------------------------------------------------------------------------


def _parquet_file(source: IO[bytes]) -> "pq.ParquetFile":
    # Imported on first use: docs/design.md, "Import weight".
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(source, pre_buffer=False)
    except (pa.ArrowException, OSError) as error:
        raise UnreadableFile(f"The file is not a readable Parquet file: {error}") from None


# --- the public readers --------------------------------------------------------------------------


def read_columns(
    file_format: FileFormat, file: IO[bytes], *, max_line_bytes: int
) -> list[str] | None:
    """The columns a CSV header or a Parquet schema names (None for JSONL, whose rows say it
    each), read from the start of a seekable file, which is rewound after. UnreadableFile
    when the file is empty or not of its format."""
    try:
        file.seek(0, os.SEEK_END)
        if file.tell() == 0:
            raise UnreadableFile("The file is empty.")
        if file_format == "parquet":
            file.seek(0)
            return list(_parquet_file(file).schema_arrow.names)
        if file_format == "csv":
            _allow_long_fields(max_line_bytes)
            data = decompressed(_file_blocks(file))
            csv_lines = _CsvLines(data, max_line_bytes=max_line_bytes)
            return _csv_header(csv.reader(csv_lines), csv_lines)
        return None
    finally:
        file.seek(0)


class FileRows:
    """Iterate chunks of rows from a file given as byte chunks; `fraction_done` tells how far
    it got (by bytes for JSONL and CSV, by rows for Parquet)."""

    def __init__(
        self,
        file_format: FileFormat,
        chunks: Iterable[bytes],
        *,
        total_bytes: int,
        chunk_size: int,
        max_line_bytes: int,
        columns: list[str] | None = None,
    ) -> None:
        self.file_format = file_format
        self._chunks = chunks
        self._total_bytes = max(total_bytes, 1)
        self._chunk_size = chunk_size
        self._max_line_bytes = max_line_bytes
        self._columns = columns
        self._bytes_read = 0
        self._rows_done = 0
        self._total_rows = 0

    def _counted(self) -> Iterator[bytes]:
        for data in self._chunks:
            self._bytes_read += len(data)
            yield data

    @property
    def fraction_done(self) -> float:
        if self.file_format == "parquet":
            spooled = 0.1 * self._bytes_read / self._total_bytes
            return spooled + 0.9 * self._rows_done / max(self._total_rows, 1)
        return self._bytes_read / self._total_bytes

    def __iter__(self) -> Iterator[RowChunk]:
        if self.file_format == "parquet":
            yield from self._parquet()
            return
        data = decompressed(self._counted())
        size, limit = self._chunk_size, self._max_line_bytes
        if self.file_format == "csv":
            yield from _csv_rows(data, chunk_size=size, max_line_bytes=limit)
        else:
            yield from _jsonl_rows(data, chunk_size=size, max_line_bytes=limit)

    def _parquet(self) -> Iterator[RowChunk]:
        import pyarrow as pa

        with tempfile.TemporaryFile(prefix="labelwise-import-") as spool:
            for data in self._counted():
                spool.write(data)
            spool.seek(0)
            parquet = _parquet_file(spool)
            self._total_rows = parquet.metadata.num_rows
            missing = [c for c in self._columns or [] if c not in parquet.schema_arrow.names]
            if missing:
                raise UnreadableFile(f"The Parquet file has no column {missing[0]!r}.")
            try:
                for batch in parquet.iter_batches(
                    batch_size=self._chunk_size, columns=self._columns
                ):
                    first = self._rows_done + 1
                    chunk = [
                        SourceRow(number, {k: json_safe(v) for k, v in values.items()})
                        for number, values in enumerate(batch.to_pylist(), start=first)
                    ]
                    self._rows_done += batch.num_rows
                    yield chunk
            except (pa.ArrowException, OSError) as error:
                raise UnreadableFile(
                    f"The Parquet file cannot be read after row {self._rows_done}: {error}"
                ) from None
