"""PythonRunner details the conformance suite does not pin down."""

from __future__ import annotations

from typing import Any

import pytest
from suite_cases import check_boundaries

from carebase.analytics import ViewEvaluationError, get_runner
from carebase.analytics.python_runner import compile_view
from carebase.errors import BadRequest

OBS: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "subject": {"reference": "http://x.org/fhir/Patient/p1/_history/2"},
    "valueQuantity": {"value": 1.25, "unit": "mg"},
    "effectiveDateTime": "2020-03",
    "component": [{"valueString": "a"}, {"valueString": "b"}],
}


def _rows(columns: list[dict[str, Any]], resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    view = {"resource": "Observation", "select": [{"column": columns}]}
    return list(get_runner("python").run(view, resources))


def test_rows_keep_column_order_and_skip_other_types() -> None:
    rows = _rows(
        [
            {"name": "subject", "path": "subject.getReferenceKey(Patient)"},
            {"name": "id", "path": "getResourceKey()"},
            {"name": "v", "path": "value.ofType(Quantity).value"},
            {"name": "bare", "path": "value.unit"},
        ],
        [OBS, {"resourceType": "Patient", "id": "p1"}],
    )
    assert rows == [{"subject": "p1", "id": "o1", "v": 1.25, "bare": "mg"}]
    assert list(rows[0]) == ["subject", "id", "v", "bare"]


def test_boundaries_and_arithmetic() -> None:
    rows = _rows(
        [
            {"name": "lo", "path": "value.ofType(Quantity).value.lowBoundary()"},
            {"name": "hi", "path": "effective.ofType(dateTime).highBoundary()"},
            {"name": "calc", "path": "(7 div 2) + (7 mod 4) * 2.5"},
            {"name": "cat", "path": "'a' & {} & 'b'"},
        ],
        [OBS],
    )
    assert rows == [{"lo": 1.245, "hi": "2020-03-31T23:59:59.999-12:00", "calc": 10.5, "cat": "ab"}]


def test_decimal_boundaries_follow_written_digits() -> None:
    check_boundaries(get_runner("python"))


def test_three_valued_logic() -> None:
    rows = _rows(
        [
            {"name": "a", "path": "{} and false"},
            {"name": "b", "path": "{} or false"},
            {"name": "c", "path": "false implies {}"},
            {"name": "d", "path": "true xor false"},
        ],
        [OBS],
    )
    assert rows == [{"a": False, "b": None, "c": True, "d": True}]


def test_several_values_in_single_column_is_an_error_naming_the_column() -> None:
    with pytest.raises(ViewEvaluationError) as caught:
        _rows([{"name": "s", "path": "component.value"}], [OBS])
    assert caught.value.location == "ViewDefinition.select[0].column[0].path"
    assert "Observation/o1" in str(caught.value)
    assert caught.value.status == 422


def test_compiled_view_is_reusable_across_resources() -> None:
    compiled = compile_view(
        {
            "resource": "Observation",
            "select": [{"forEach": "component", "column": [{"name": "i", "path": "%rowIndex"}]}],
        }
    )
    assert [r["i"] for r in compiled.rows(OBS)] == [0, 1]
    assert [r["i"] for r in compiled.rows(OBS)] == [0, 1]


def test_unknown_engine() -> None:
    with pytest.raises(BadRequest, match=r"unknown view engine 'nope'; known engines: .*python"):
        get_runner("nope")
