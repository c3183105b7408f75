"""FHIR JSON in and out: decimals keep their written precision, bad JSON is refused."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from carebase.fhir import json_io
from carebase.fhir.json_io import FhirDecimal
from carebase.fhir.patch import apply_json_patch
from carebase.fhir.primitives import check_decimal, check_integer
from carebase.store.index_values import decimal_range


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":1.50}',
        b'{"a":[1.0,2,1e3,0.1,-0.0]}',
        b'{"a":3.14159265358979323846}',
        b'{"a":1.5E-7,"b":"1.50 in a string"}',
        b'{"a":{"b":[{"c":100.000}]}}',
        b'{"a":12,"b":-3,"c":true,"d":null}',
    ],
)
def test_round_trip_is_exact(text: bytes) -> None:
    assert json_io.dumps(json_io.loads(text)) == text


def test_lossless_numbers_stay_plain_floats() -> None:
    value = json_io.loads(b'{"a":1.5,"b":2}')
    assert type(value["a"]) is float and type(value["b"]) is int


def test_decimal_behaves_as_a_number_and_keeps_its_precision() -> None:
    value = json_io.loads(b'{"a":1.50}')["a"]
    assert isinstance(value, FhirDecimal) and value == 1.5 and repr(value) == "1.50"
    assert check_decimal(value) is None
    assert check_integer(value) is not None
    low, high = decimal_range(value)
    assert low == pytest.approx(1.495) and high == pytest.approx(1.505)  # 1.50, not 1.5
    assert copy.deepcopy(value).text == "1.50"
    assert pickle.loads(pickle.dumps(value)).text == "1.50"


def test_patch_keeps_untouched_decimals() -> None:
    resource = json_io.loads(b'{"resourceType":"Observation","valueQuantity":{"value":1.50}}')
    patched = apply_json_patch(resource, [{"op": "add", "path": "/status", "value": "final"}])
    assert json_io.dumps(patched).endswith(b'"valueQuantity":{"value":1.50},"status":"final"}')


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":NaN,"b":1.50}',
        b'{"a":Infinity}',
        b'{"a":1.50,,}',
        b'{"a":1.50,"b":"\\ud800"}',
        b'{"a":1.50,"b":"\xff"}',
        b"",
    ],
)
def test_malformed_json_is_refused(text: bytes) -> None:
    with pytest.raises(json.JSONDecodeError):
        json_io.loads(text)


def test_pretty_output_keeps_decimals() -> None:
    out = json_io.dumps(json_io.loads(b'{"a":1.50}'), pretty=True)
    assert out == b'{\n  "a": 1.50\n}'
