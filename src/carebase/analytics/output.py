"""View rows written as CSV, NDJSON, a JSON array or Parquet, to a file or as byte chunks."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

import orjson

from carebase.analytics.view_errors import ViewEvaluationError
from carebase.analytics.view_model import ColumnInfo, ViewDefinition
from carebase.errors import BadRequest

#: output format name -> media type (what `$viewdefinition-run` answers with)
MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv",
    "ndjson": "application/x-ndjson",
    "json": "application/json",
    "parquet": "application/vnd.apache.parquet",
}
FORMATS = tuple(MEDIA_TYPES)
#: other spellings clients use for the formats (`_format` values and Accept media types)
_ALIASES = {
    "application/ndjson": "ndjson",
    "application/fhir+ndjson": "ndjson",
    "application/fhir+json": "json",
    "application/parquet": "parquet",
    "application/x-parquet": "parquet",
    "text/csv": "csv",
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/vnd.apache.parquet": "parquet",
}
#: bytes collected before a chunk is handed on (an HTTP body frame, a file write)
CHUNK_BYTES = 64 * 1024
#: rows per Parquet row group (bounded memory: one group is held at a time)
ROW_GROUP_ROWS = 10_000


def parse_format(value: str, location: str = "_format") -> str:
    """The format named by `value` (a name such as `csv` or a media type); 400 otherwise."""
    key = value.split(";")[0].strip().lower()
    if key in MEDIA_TYPES:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise BadRequest(
        f"{location}={value!r} is not an output format; use one of {', '.join(FORMATS)}",
        location=location,
    )


def write_rows(
    view: ViewDefinition,
    rows: Iterable[Mapping[str, object]],
    fmt: str,
    out: IO[bytes],
    *,
    header: bool = True,
) -> int:
    """Write `rows` of `view` to the binary file `out` as `fmt` (CSV with a header row unless
    `header` is False); returns the rows written."""
    encoder = RowEncoder(view, fmt, header=header)
    for chunk in encoder.chunks(rows):
        out.write(chunk)
    return encoder.rows_written


class RowEncoder:
    """Encodes rows of one view as one format, `CHUNK_BYTES` at a time (`chunks`), counting
    them (`rows_written`, final once the chunks are exhausted). `header`: CSV only."""

    def __init__(self, view: ViewDefinition, fmt: str, *, header: bool = True) -> None:
        self.columns = view.columns
        self.fmt = parse_format(fmt, "format")
        self.header = header
        self.rows_written = 0

    def chunks(self, rows: Iterable[Mapping[str, object]]) -> Iterator[bytes]:
        """The encoded output in chunks; an empty result is still a valid document."""
        if self.fmt == "parquet":
            yield from self._parquet(rows)
            return
        pending: list[bytes] = []
        size = 0
        for piece in self._pieces(rows):
            pending.append(piece)
            size += len(piece)
            if size >= CHUNK_BYTES:
                yield b"".join(pending)
                pending, size = [], 0
        if pending:
            yield b"".join(pending)

    def _counted(self, rows: Iterable[Mapping[str, object]]) -> Iterator[Mapping[str, object]]:
        for row in rows:
            self.rows_written += 1
            yield row

    def _pieces(self, rows: Iterable[Mapping[str, object]]) -> Iterator[bytes]:
        names = [c.name for c in self.columns]
        if self.fmt == "ndjson":
            for row in self._counted(rows):
                yield orjson.dumps(row, default=_plain, option=orjson.OPT_APPEND_NEWLINE)
        elif self.fmt == "json":
            yield b"["
            separator = b"\n"
            for row in self._counted(rows):
                yield separator + orjson.dumps(row, default=_plain)
                separator = b",\n"
            yield b"\n]\n"
        else:  # csv (parse_format allows nothing else here)
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180 line ends
            if self.header:
                writer.writerow(names)
            for row in self._counted(rows):
                writer.writerow([csv_cell(row.get(name)) for name in names])
                yield buffer.getvalue().encode("utf-8")
                buffer.seek(0)
                buffer.truncate()
            yield buffer.getvalue().encode("utf-8")

    def _parquet(self, rows: Iterable[Mapping[str, object]]) -> Iterator[bytes]:
        import pyarrow as pa  # imported here: only Parquet output needs it
        import pyarrow.parquet as pq

        schema = arrow_schema(self.columns)
        converters = [_converter(c) for c in self.columns]
        sink = _ChunkSink()
        writer = pq.ParquetWriter(sink, schema)
        try:
            batch: list[Mapping[str, object]] = []
            for row in self._counted(rows):
                batch.append(row)
                if len(batch) >= ROW_GROUP_ROWS:
                    writer.write_table(_table(pa, schema, self.columns, converters, batch))
                    batch = []
                    yield from sink.drain()
            if batch or self.rows_written == 0:
                writer.write_table(_table(pa, schema, self.columns, converters, batch))
        finally:
            writer.close()
        yield from sink.drain()


def _plain(value: object) -> object:
    """A decimal kept with its written text (`FhirDecimal`) as the number it is: rows hold
    values, written alike by every engine (70.50 -> 70.5)."""
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def csv_cell(value: object) -> str:
    """A value as CSV text: empty for null, JSON for lists and objects, `true`/`false`."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list | dict):
        return orjson.dumps(value, default=_plain).decode("utf-8")
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


# --- Parquet ------------------------------------------------------------------------------------

#: FHIR primitive type -> Arrow type name. Dates and times stay strings: FHIR allows partial
#: dates (`1970-06`) and offsets that Arrow's date and timestamp types cannot hold unchanged.
_ARROW_TYPES = {
    "boolean": "bool_",
    "integer": "int32",
    "positiveInt": "int32",
    "unsignedInt": "int32",
    "integer64": "int64",
    "decimal": "float64",
}


def arrow_type(column: ColumnInfo) -> Any:
    """The Arrow type of a column: from its FHIR `type` (string when absent or textual),
    wrapped in a list for collection columns."""
    import pyarrow as pa

    base = getattr(pa, _ARROW_TYPES.get(column.type or "", "string"))()
    return pa.list_(base) if column.collection else base


def arrow_schema(columns: Iterable[ColumnInfo]) -> Any:
    """The Arrow schema of a view's output columns (column descriptions kept as metadata)."""
    import pyarrow as pa

    fields = []
    for column in columns:
        meta = {"description": column.description} if column.description else None
        fields.append(pa.field(column.name, arrow_type(column), metadata=meta))
    return pa.schema(fields)


def _scalar_converter(column: ColumnInfo) -> Callable[[object], object]:
    kind = _ARROW_TYPES.get(column.type or "", "string")

    def bad(value: object) -> ViewEvaluationError:
        return ViewEvaluationError(
            f"column {column.name}",
            f"value {value!r} is not of the declared type {column.type}",
        )

    def convert(value: object) -> object:
        if value is None:
            return None
        if kind == "string":
            return value if isinstance(value, str) else csv_cell(value)
        if kind == "bool_":
            if not isinstance(value, bool):
                raise bad(value)
            return value
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise bad(value)
        try:
            return float(value) if kind == "float64" else int(value)
        except ValueError as exc:
            raise bad(value) from exc

    return convert


def _converter(column: ColumnInfo) -> Callable[[object], object]:
    scalar = _scalar_converter(column)
    if not column.collection:
        return scalar

    def convert(value: object) -> object:
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        return [scalar(item) for item in items]

    return convert


def _table(
    pa: Any,
    schema: Any,
    columns: tuple[ColumnInfo, ...],
    converters: list[Callable[[object], object]],
    rows: list[Mapping[str, object]],
) -> Any:
    arrays = [
        pa.array([convert(row.get(c.name)) for row in rows], type=schema.field(c.name).type)
        for c, convert in zip(columns, converters, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


class _ChunkSink(io.RawIOBase):
    """A write-only file that keeps what was written until `drain` hands it on."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def drain(self) -> Iterator[bytes]:
        if self._parts:
            data = b"".join(self._parts)
            self._parts = []
            yield data
