"""Rows written as csv, ndjson, json and parquet read back to the same values."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pyarrow.parquet as pq
import pytest

from carebase.analytics import output
from carebase.analytics.output import RowEncoder, parse_format, write_rows
from carebase.analytics.view_errors import ViewEvaluationError
from carebase.analytics.view_model import parse_view_definition
from carebase.errors import BadRequest

VIEW = parse_view_definition(
    {
        "resourceType": "ViewDefinition",
        "status": "active",
        "resource": "Observation",
        "select": [
            {
                "column": [
                    {"name": "id", "path": "id", "type": "id", "description": "the key"},
                    {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
                    {"name": "n", "path": "component.count()", "type": "integer"},
                    {"name": "final", "path": "status = 'final'", "type": "boolean"},
                    {"name": "codes", "path": "code.coding.code", "collection": True},
                    {"name": "untyped", "path": "issued"},
                ]
            }
        ],
    }
)
ROWS: list[dict[str, Any]] = [
    {"id": "a", "value": 1.5, "n": 2, "final": True, "codes": ["x", "y,z"], "untyped": "2020"},
    {"id": 'b"q', "value": None, "n": 0, "final": False, "codes": [], "untyped": None},
    {"id": "c", "value": 7, "n": None, "final": None, "codes": ["ü"], "untyped": "t"},
]


def encode(fmt: str, rows: list[dict[str, Any]] = ROWS, **kw: Any) -> bytes:
    out = io.BytesIO()
    assert write_rows(VIEW, rows, fmt, out, **kw) == len(rows)
    return out.getvalue()


def test_csv_has_a_header_and_json_encoded_lists() -> None:
    table = list(csv.reader(io.StringIO(encode("csv").decode("utf-8"))))
    assert table[0] == ["id", "value", "n", "final", "codes", "untyped"]
    assert table[1] == ["a", "1.5", "2", "true", '["x","y,z"]', "2020"]
    assert table[2] == ['b"q', "", "0", "false", "[]", ""]
    assert json.loads(table[3][4]) == ["ü"]
    assert len(list(csv.reader(io.StringIO(encode("csv", header=False).decode())))) == 3


def test_ndjson_and_json_round_trip_in_column_order() -> None:
    lines = encode("ndjson").decode().splitlines()
    assert [json.loads(line) for line in lines] == ROWS
    assert list(json.loads(lines[0])) == list(VIEW.column_names)
    assert json.loads(encode("json")) == ROWS
    assert json.loads(encode("json", [])) == []


def test_parquet_round_trips_with_a_schema_from_the_column_types() -> None:
    table = pq.read_table(io.BytesIO(encode("parquet")))
    types = {f.name: str(f.type) for f in table.schema}
    assert types == {
        "id": "string", "value": "double", "n": "int32", "final": "bool",
        "codes": "list<element: string>", "untyped": "string",
    }  # fmt: skip
    assert table.schema.field("id").metadata == {b"description": b"the key"}
    expected = [{**r, "value": None if r["value"] is None else float(r["value"])} for r in ROWS]
    assert table.to_pylist() == expected
    empty = pq.read_table(io.BytesIO(encode("parquet", [])))
    assert empty.num_rows == 0 and empty.column_names == list(VIEW.column_names)


def test_large_outputs_come_in_several_chunks_and_row_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(output, "ROW_GROUP_ROWS", 10)
    rows = [{**ROWS[0], "id": f"r{i}"} for i in range(5000)]
    for fmt in ("csv", "ndjson", "json", "parquet"):
        encoder = RowEncoder(VIEW, fmt)
        chunks = list(encoder.chunks(iter(rows)))
        assert encoder.rows_written == 5000 and len(chunks) > 1, fmt
    parquet = pq.ParquetFile(io.BytesIO(b"".join(RowEncoder(VIEW, "parquet").chunks(rows))))
    assert parquet.metadata.num_row_groups == 500 and parquet.metadata.num_rows == 5000


def test_a_value_of_the_wrong_type_names_the_column() -> None:
    with pytest.raises(ViewEvaluationError, match="column n"):
        encode("parquet", [{**ROWS[0], "n": "many"}])


@pytest.mark.parametrize(
    ("value", "fmt"),
    [("CSV", "csv"), ("text/csv", "csv"), ("application/x-ndjson", "ndjson"),
     ("application/vnd.apache.parquet", "parquet"), ("application/fhir+json", "json")],
)  # fmt: skip
def test_formats_by_name_or_media_type(value: str, fmt: str) -> None:
    assert parse_format(value) == fmt


def test_unknown_format_is_400_naming_the_parameter() -> None:
    with pytest.raises(BadRequest, match="xml") as caught:
        parse_format("xml", "_format")
    assert caught.value.issues[0].expression == ["_format"]
