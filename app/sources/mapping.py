"""From source columns to items and labels: a column mapping turns each row a source adapter
reads (files, SQL) into an item-shaped entry and its label, or into why it cannot be one."""

from dataclasses import dataclass
from typing import Any

from app.models.base import ItemSource
from app.models.imports import ColumnMapping
from app.sources.rows import RowChunk


@dataclass(slots=True)
class ImportRow:
    """A source row ready for the core: an ItemIn-shaped entry and its label, or why the row
    could not become one (`item` None). `label_problem`: the label alone is unusable."""

    number: int
    item: dict[str, Any] | None
    label: str | None = None
    problem: str | None = None
    label_problem: str | None = None


@dataclass(frozen=True, slots=True)
class RowMapping:
    text: str
    external_id: str | None = None
    label: str | None = None
    metadata: tuple[str, ...] = ()
    final_label: str | None = None
    stable_only: bool = False

    @classmethod
    def of(cls, mapping: ColumnMapping, *, stable_only: bool = False) -> "RowMapping":
        return cls(
            text=mapping.text,
            external_id=mapping.external_id,
            label=mapping.label,
            metadata=tuple(mapping.metadata),
            final_label=getattr(mapping, "final_label", None),
            stable_only=stable_only,
        )


class _BadValue(ValueError):
    pass


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _external_id(values: dict[str, Any], column: str) -> str | None:
    if column not in values:
        raise _BadValue(f"The row has no {column!r} (external_id) column.")
    value = values[column]
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    raise _BadValue(f"external_id: column {column!r} holds {_kind(value)}, not text or an integer.")


def _text(values: dict[str, Any], column: str) -> str:
    if column not in values:
        raise _BadValue(f"The row has no {column!r} (text) column.")
    value = values[column]
    if value is None:
        raise _BadValue(f"text: column {column!r} is empty.")
    if not isinstance(value, str):
        raise _BadValue(f"text: column {column!r} holds {_kind(value)}, not text.")
    return value


def _label(value: Any, column: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _BadValue(f"label: column {column!r} holds {_kind(value)}, not a label name.")
    return value.strip() or None


class RowMapper:
    """Turns source rows into ImportRows by a column mapping; drops unstable rows (stable_only)
    and counts what it read and dropped."""

    def __init__(self, mapping: RowMapping, *, item_source: ItemSource) -> None:
        self.mapping = mapping
        self.item_source = item_source.value
        self.rows_read = 0
        self.skipped_unstable = 0

    def _unstable(self, values: dict[str, Any]) -> bool:
        m = self.mapping
        assert m.label is not None and m.final_label is not None
        try:
            return _label(values.get(m.label), m.label) != _label(
                values.get(m.final_label), m.final_label
            )
        except _BadValue:
            return values.get(m.label) != values.get(m.final_label)

    def __call__(self, chunk: RowChunk) -> list[ImportRow]:
        m = self.mapping
        rows: list[ImportRow] = []
        for source_row in chunk:
            self.rows_read += 1
            values = source_row.values
            if values is None:
                rows.append(ImportRow(source_row.number, None, problem=source_row.problem))
                continue
            if m.stable_only and self._unstable(values):
                self.skipped_unstable += 1
                continue
            try:
                item: dict[str, Any] = {"text": _text(values, m.text), "source": self.item_source}
                if m.external_id is not None:
                    external_id = _external_id(values, m.external_id)
                    if external_id is not None:
                        item["external_id"] = external_id
            except _BadValue as error:
                rows.append(ImportRow(source_row.number, None, problem=str(error)))
                continue
            if m.metadata:
                item["metadata"] = {c: values[c] for c in m.metadata if c in values}
            row = ImportRow(source_row.number, item)
            if m.label is not None:
                try:
                    row.label = _label(values.get(m.label), m.label)
                except _BadValue as error:
                    row.label_problem = str(error)
            rows.append(row)
        return rows
