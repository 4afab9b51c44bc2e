"""The file readers: JSONL, CSV and Parquet into numbered rows, bad rows reported one by one,
gzip looked through, memory bounded by the line limit, headers and schemas read up front."""

import datetime as dt
import gzip
import io
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.errors import UnreadableFile
from app.sources.files import (
    FileRows,
    format_from_name,
    lines,
    read_columns,
    stem,
)
from app.sources.rows import SourceRow


def pieces(data: bytes, size: int) -> list[bytes]:
    """The bytes cut into pieces of `size`, as the database hands them back."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def read(file_format: Any, data: bytes, *, piece: int = 7, **options: Any) -> list[list[SourceRow]]:
    defaults: dict[str, Any] = {"chunk_size": 2, "max_line_bytes": 1000}
    rows = FileRows(
        file_format, pieces(data, piece), total_bytes=len(data), **{**defaults, **options}
    )
    return list(rows)


def flat(chunks: Iterable[list[SourceRow]]) -> list[tuple[int, Any, str | None]]:
    return [(r.number, r.values, r.problem) for chunk in chunks for r in chunk]


@pytest.fixture
def spooled() -> Iterator[Callable[[bytes], Any]]:
    """Seekable files like the ones an upload is spooled to (on disk past 64 bytes)."""
    opened: list[Any] = []

    def make(data: bytes) -> Any:
        file = tempfile.SpooledTemporaryFile(max_size=64)  # noqa: SIM115 (closed below)
        opened.append(file)
        file.write(data)
        file.seek(0)
        return file

    yield make
    for file in opened:
        file.close()


def parquet_bytes(table: pa.Table, **options: Any) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)
    return buffer.getvalue()


class TestNames:
    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("tickets.jsonl", "jsonl"),
            ("TICKETS.NDJSON", "jsonl"),
            ("dir/sub/tickets.csv", "csv"),
            ("C:\\exports\\tickets.csv.gz", "csv"),
            ("tickets.jsonl.gz", "jsonl"),
            ("tickets.parquet", "parquet"),
            ("tickets.txt", None),
            ("tickets", None),
        ],
    )
    def test_format_from_the_extension(self, name: str, expected: str | None) -> None:
        assert format_from_name(name) == expected

    def test_stem_drops_directories_and_format_extensions_only(self) -> None:
        assert stem("/tmp/crm-2024.csv.gz") == "crm-2024"
        assert stem("crm.v2.parquet") == "crm.v2"
        assert stem("notes.txt") == "notes.txt"


class TestLines:
    def test_lines_across_pieces_and_an_overlong_one_dropped(self) -> None:
        data = b"first\nsecond line\n" + b"x" * 50 + b"\nlast"
        assert list(lines(pieces(data, 4), max_line_bytes=20)) == [
            b"first",
            b"second line",
            None,
            b"last",
        ]


class TestJsonl:
    def test_rows_are_numbered_by_line_and_bad_lines_are_reported_alone(self) -> None:
        data = (
            b'{"id": 1, "text": "caf\xc3\xa9"}\n'
            b"\n"  # blank: skipped, still counted
            b"[1, 2]\n"
            b"{not json}\n"
            b'{"id": 3, "text": "NaN is refused", "x": NaN}\n'
            b'{"id": 4, "text": "\xff"}\n'
            b'{"id": 5, "text": "' + b"y" * 2000 + b'"}\n'
            b'{"id": 6, "text": "last, no newline"}'
        )
        rows = flat(read("jsonl", data))
        assert [(n, v) for n, v, _ in rows if v is not None] == [
            (1, {"id": 1, "text": "café"}),
            (8, {"id": 6, "text": "last, no newline"}),
        ]
        problems = {n: p for n, v, p in rows if v is None and p is not None}
        assert sorted(problems) == [3, 4, 5, 6, 7]
        assert "not an object" in problems[3]
        assert "not JSON" in problems[4] and "NaN" in problems[5]
        assert "not JSON" in problems[6]  # invalid UTF-8
        assert "over 1000 bytes" in problems[7]

    def test_chunks_hold_at_most_chunk_size_rows(self) -> None:
        data = b"".join(json.dumps({"n": i}).encode() + b"\n" for i in range(5))
        chunks = read("jsonl", data, chunk_size=2)
        assert [len(c) for c in chunks] == [2, 2, 1]
        assert [r.values for c in chunks for r in c] == [{"n": i} for i in range(5)]

    def test_gzip_is_read_through_and_progress_reaches_the_end(self) -> None:
        plain = b"".join(json.dumps({"n": i}).encode() + b"\n" for i in range(100))
        data = gzip.compress(plain)
        rows = FileRows(
            "jsonl", pieces(data, 50), total_bytes=len(data), chunk_size=30, max_line_bytes=100
        )
        seen = []
        for chunk in rows:
            seen += [r.values["n"] for r in chunk if r.values]
            assert 0 < rows.fraction_done <= 1
        assert seen == list(range(100))
        assert rows.fraction_done == 1

    def test_a_truncated_gzip_file_is_unreadable(self) -> None:
        data = gzip.compress(b'{"n": 1}\n' * 1000)[:-20]
        with pytest.raises(UnreadableFile, match="truncated"):
            read("jsonl", data)


class TestCsv:
    def test_header_names_the_columns_and_bad_records_fail_alone(self) -> None:
        data = (
            "\ufeffid,text,label\r\n"
            '1,"a ""quoted"" text, with a comma",positive\r\n'
            '2,"two\nlines",negative\r\n'
            "\r\n"
            "3,too,many,fields\r\n"
            "4,short\r\n"
        ).encode() + b"5,\xff\xfe,neutral\r\n6,fine,\r\n"
        rows = flat(read("csv", data))
        assert rows[0] == (
            1,
            {"id": "1", "text": 'a "quoted" text, with a comma', "label": "positive"},
            None,
        )
        assert rows[1] == (2, {"id": "2", "text": "two\nlines", "label": "negative"}, None)
        assert [(n, p) for n, v, p in rows[2:5]] == [
            (3, "The record has 4 fields; the header has 3."),
            (4, "The record has 2 fields; the header has 3."),
            (5, "The record is not valid UTF-8."),
        ]
        assert rows[5] == (6, {"id": "6", "text": "fine", "label": ""}, None)

    def test_an_overlong_line_fails_its_record_and_reading_goes_on(self) -> None:
        data = b"id,text\n1," + b"z" * 500 + b"\n2,ok\n"
        rows = flat(read("csv", data, max_line_bytes=100))
        assert rows == [
            (1, None, "A line is over 100 bytes."),
            (2, {"id": "2", "text": "ok"}, None),
        ]

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"", "empty"),
            (b"\n1,2\n", "blank"),
            (b"id,text,id\n1,2,3\n", "more than once"),
        ],
    )
    def test_a_file_without_a_usable_header_is_unreadable(self, data: bytes, message: str) -> None:
        with pytest.raises(UnreadableFile, match=message):
            read("csv", data)

    def test_read_columns_reads_the_header_only_and_rewinds(
        self, spooled: Callable[[bytes], Any]
    ) -> None:
        file = spooled(b"id,text,category\n" + b"1,x,y\n" * 10_000)
        assert read_columns("csv", file, max_line_bytes=1000) == ["id", "text", "category"]
        assert file.tell() == 0
        compressed = spooled(gzip.compress(b"a,b\n1,2\n"))
        assert read_columns("csv", compressed, max_line_bytes=1000) == ["a", "b"]
        assert read_columns("jsonl", spooled(b'{"a": 1}\n'), max_line_bytes=1000) is None
        with pytest.raises(UnreadableFile, match="empty"):
            read_columns("jsonl", spooled(b""), max_line_bytes=1000)


class TestParquet:
    def test_batches_read_only_the_mapped_columns_as_json_values(self) -> None:
        table = pa.table(
            {
                "id": pa.array([10, 11, 12], pa.int64()),
                "text": ["one", "two", None],
                "when": [dt.datetime(2024, 5, 1, 12, 30)] * 3,
                "amount": pa.array([Decimal("1.50"), Decimal("2"), None], pa.decimal128(5, 2)),
                "blob": [b"\x00\xff", b"ok", b""],
                "unused": ["a", "b", "c"],
            }
        )
        data = parquet_bytes(table, row_group_size=2)
        columns = ["id", "text", "when", "amount", "blob"]
        rows = FileRows(
            "parquet",
            pieces(data, 100),
            total_bytes=len(data),
            chunk_size=2,
            max_line_bytes=1000,
            columns=columns,
        )
        chunks = list(rows)
        assert [len(c) for c in chunks] == [2, 1]
        values = [r.values for c in chunks for r in c if r.values is not None]
        assert [r.number for c in chunks for r in c] == [1, 2, 3]
        assert values[0] == {
            "id": 10,
            "text": "one",
            "when": "2024-05-01T12:30:00",
            "amount": 1.5,
            "blob": "AP8=",  # not UTF-8: base64
        }
        assert values[1]["amount"] == 2 and values[1]["blob"] == "ok"
        assert values[2]["text"] is None and values[2]["amount"] is None
        assert rows.fraction_done == pytest.approx(1.0)

    def test_schema_up_front_and_garbage_is_unreadable(
        self, spooled: Callable[[bytes], Any]
    ) -> None:
        data = parquet_bytes(pa.table({"id": [1], "body": ["x"]}))
        assert read_columns("parquet", spooled(data), max_line_bytes=10) == ["id", "body"]
        with pytest.raises(UnreadableFile, match="Parquet"):
            read_columns("parquet", spooled(b"id,body\n1,x\n"), max_line_bytes=10)

    def test_a_mapped_column_missing_from_the_file_is_unreadable(self) -> None:
        data = parquet_bytes(pa.table({"id": [1]}))
        with pytest.raises(UnreadableFile, match="no column 'text'"):
            read("parquet", data, columns=["id", "text"])
