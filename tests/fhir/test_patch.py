"""JSON Patch (RFC 6902): the RFC's appendix A scenarios restated, every error path, properties."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carebase.errors import BadRequest, Unprocessable
from carebase.fhir.patch import apply_json_patch, json_equal

# --- RFC 6902 appendix A, restated as cases: (document, patch, expected) ------------------------

APPENDIX_A = {
    "A.1 add a member to an object": (
        {"a": "x"},
        [{"op": "add", "path": "/b", "value": "y"}],
        {"a": "x", "b": "y"},
    ),
    "A.2 add an item in the middle of an array": (
        {"a": {"list": ["one", "three"]}},
        [{"op": "add", "path": "/a/list/1", "value": "two"}],
        {"a": {"list": ["one", "two", "three"]}},
    ),
    "A.3 remove a member": (
        {"keep": 1, "drop": 2},
        [{"op": "remove", "path": "/drop"}],
        {"keep": 1},
    ),
    "A.4 remove an array item": (
        {"list": ["p", "q", "r"]},
        [{"op": "remove", "path": "/list/1"}],
        {"list": ["p", "r"]},
    ),
    "A.5 replace a value": (
        {"keep": "k", "swap": "old"},
        [{"op": "replace", "path": "/swap", "value": 42}],
        {"keep": "k", "swap": 42},
    ),
    "A.6 move a member between objects": (
        {"src": {"item": "v", "other": 1}, "dst": {"x": 2}},
        [{"op": "move", "from": "/src/item", "path": "/dst/item"}],
        {"src": {"other": 1}, "dst": {"x": 2, "item": "v"}},
    ),
    "A.7 move an array item to another position": (
        {"list": [1, 2, 3, 4]},
        [{"op": "move", "from": "/list/1", "path": "/list/3"}],
        {"list": [1, 3, 4, 2]},
    ),
    "A.8 successful tests leave the document as it was": (
        {"word": "hello", "nums": [1, 2, 3]},
        [
            {"op": "test", "path": "/word", "value": "hello"},
            {"op": "test", "path": "/nums", "value": [1, 2, 3]},
        ],
        {"word": "hello", "nums": [1, 2, 3]},
    ),
    "A.10 add a whole nested object": (
        {"a": 1},
        [{"op": "add", "path": "/child", "value": {"grand": {"x": 1}}}],
        {"a": 1, "child": {"grand": {"x": 1}}},
    ),
    "A.11 unknown members of an operation are ignored": (
        {"a": 1},
        [{"op": "add", "path": "/b", "value": 2, "extra": "ignored"}],
        {"a": 1, "b": 2},
    ),
    "A.14 ~ escapes: ~1 is / and ~0 is ~": (
        {"a/b": 1, "m~n": 2},
        [
            {"op": "test", "path": "/a~1b", "value": 1},
            {"op": "add", "path": "/m~0n", "value": 3},
            {"op": "add", "path": "/~01", "value": "tilde-one"},
        ],
        {"a/b": 1, "m~n": 3, "~1": "tilde-one"},
    ),
    "A.16 add an array as a single value": (
        {"list": ["a"]},
        [{"op": "add", "path": "/list/-", "value": ["b", "c"]}],
        {"list": ["a", ["b", "c"]]},
    ),
}


@pytest.mark.parametrize("case", sorted(APPENDIX_A))
def test_rfc6902_appendix_a(case: str) -> None:
    document, patch, expected = APPENDIX_A[case]
    before = copy.deepcopy(document)
    assert apply_json_patch(document, patch) == expected
    assert document == before  # never mutates its input


def test_a9_failed_test_is_422_naming_the_operation() -> None:
    with pytest.raises(Unprocessable, match=r"operation 1 \(test\).*'/word'"):
        apply_json_patch(
            {"word": "hello"},
            [
                {"op": "test", "path": "/word", "value": "hello"},
                {"op": "test", "path": "/word", "value": "bye"},
            ],
        )


def test_a12_add_under_a_missing_parent_is_422() -> None:
    with pytest.raises(Unprocessable, match="'/missing' does not exist"):
        apply_json_patch({"a": 1}, [{"op": "add", "path": "/missing/child", "value": 1}])


def test_a15_string_is_not_number() -> None:
    with pytest.raises(Unprocessable, match="test failed"):
        apply_json_patch({"n": 10}, [{"op": "test", "path": "/n", "value": "10"}])


def test_numbers_compare_by_value_but_booleans_are_not_numbers() -> None:
    assert apply_json_patch({"n": 1}, [{"op": "test", "path": "/n", "value": 1.0}]) == {"n": 1}
    with pytest.raises(Unprocessable):
        apply_json_patch({"b": True}, [{"op": "test", "path": "/b", "value": 1}])
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})


def test_copy_and_whole_document_replace() -> None:
    doc = {"resourceType": "Patient", "id": "p", "name": [{"family": "X"}]}
    out = apply_json_patch(doc, [{"op": "copy", "from": "/name/0", "path": "/name/-"}])
    assert out["name"] == [{"family": "X"}, {"family": "X"}]
    out["name"][0]["family"] = "changed"
    assert out["name"][1]["family"] == "X"  # the copy is independent
    swapped = {"resourceType": "Patient", "id": "p", "active": True}
    assert apply_json_patch(doc, [{"op": "replace", "path": "", "value": swapped}]) == swapped


def test_move_to_same_place_is_a_no_op() -> None:
    assert apply_json_patch({"a": 1}, [{"op": "move", "from": "/a", "path": "/a"}]) == {"a": 1}


# --- malformed documents: 400 naming the operation and field ----------------------------------


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ({"op": "add"}, "JSON array"),
        (["x"], "operation 0: must be a JSON object"),
        ([{"path": "/a"}], "operation 0: 'op' is required"),
        ([{"op": "frobnicate", "path": "/a"}], "'op' must be one of"),
        ([{"op": "test", "path": "/a", "value": 1}, {"op": "remove"}], "operation 1: 'path'"),
        ([{"op": "add", "path": "/a"}], "'value' is required for 'add'"),
        ([{"op": "replace", "path": "/a"}], "'value' is required"),
        ([{"op": "move", "path": "/a"}], "'from' is required for 'move'"),
        ([{"op": "copy", "path": "/a", "from": 3}], "'from' must be a string"),
        ([{"op": "remove", "path": "a"}], "must be empty or start with '/'"),
        ([{"op": "remove", "path": "/a~2"}], "invalid '~' escape"),
        ([{"op": "move", "from": "/a", "path": "/a/b"}], "into its own child"),
    ],
)
def test_malformed_patch_is_400(ops: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        apply_json_patch({"a": {"b": 1}}, ops)


# --- well-formed but not applicable: 422 -------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "message"),
    [
        ({"op": "remove", "path": "/nope"}, "'/nope' does not exist"),
        ({"op": "replace", "path": "/nope", "value": 1}, "'/nope' does not exist"),
        ({"op": "test", "path": "/list/9", "value": 1}, "index 9 .* out of bounds"),
        ({"op": "add", "path": "/list/4", "value": 1}, "index 4 .* out of bounds"),
        ({"op": "remove", "path": "/list/-"}, "not an array index"),
        ({"op": "remove", "path": "/list/01"}, "not an array index"),
        ({"op": "add", "path": "/list/x", "value": 1}, "not an array index"),
        ({"op": "add", "path": "/s/x", "value": 1}, "not an object or array"),
        ({"op": "copy", "from": "/nope", "path": "/x"}, "'/nope' does not exist"),
        ({"op": "move", "from": "/s/deep", "path": "/x"}, "does not exist"),
        ({"op": "remove", "path": ""}, "whole document"),
        ({"op": "replace", "path": "/id", "value": "other"}, "'id' is not allowed"),
        ({"op": "remove", "path": "/resourceType"}, "'resourceType' is not allowed"),
        ({"op": "replace", "path": "", "value": [1]}, "no longer a JSON object"),
    ],
)
def test_inapplicable_patch_is_422(op: dict[str, Any], message: str) -> None:
    doc = {"resourceType": "Basic", "id": "b", "list": [1, 2, 3], "s": "text"}
    with pytest.raises(Unprocessable, match=message):
        apply_json_patch(doc, [op])


def test_failure_leaves_input_untouched() -> None:
    doc = {"resourceType": "Basic", "id": "b", "list": [1]}
    with pytest.raises(Unprocessable):
        apply_json_patch(
            doc, [{"op": "add", "path": "/x", "value": 1}, {"op": "remove", "path": "/y"}]
        )
    assert doc == {"resourceType": "Basic", "id": "b", "list": [1]}


# --- properties over random JSON documents ----------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
_documents = st.dictionaries(st.text(max_size=6), _json, max_size=5)


def _pointers(value: Any, prefix: str = "") -> list[str]:
    """Every JSON Pointer into `value` (escaped), the document root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            escaped = key.replace("~", "~0").replace("/", "~1")
            found += _pointers(child, f"{prefix}/{escaped}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _pointers(child, f"{prefix}/{index}")
    return found


@settings(max_examples=150, deadline=None)
@given(doc=_documents, key=st.text(max_size=6), value=_json)
def test_add_then_remove_round_trips(doc: dict[str, Any], key: str, value: Any) -> None:
    doc.pop(key, None)
    path = "/" + key.replace("~", "~0").replace("/", "~1")
    patch = [{"op": "add", "path": path, "value": value}, {"op": "remove", "path": path}]
    assert apply_json_patch(doc, patch) == doc


@settings(max_examples=150, deadline=None)
@given(doc=_documents, data=st.data())
def test_a_copied_value_tests_equal(doc: dict[str, Any], data: st.DataObject) -> None:
    source = data.draw(st.sampled_from(_pointers(doc)))
    patch = [{"op": "copy", "from": source, "path": "/copied-here"}]
    out = apply_json_patch(doc, patch)
    expected = apply_json_patch(doc, [{"op": "test", "path": source, "value": out["copied-here"]}])
    assert expected == doc


@settings(max_examples=100, deadline=None)
@given(items=st.lists(_scalars, min_size=1, max_size=6), data=st.data())
def test_array_insert_then_remove_round_trips(items: list[Any], data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(items)))
    doc = {"items": items}
    patch = [
        {"op": "add", "path": f"/items/{position}", "value": "new"},
        {"op": "test", "path": f"/items/{position}", "value": "new"},
        {"op": "remove", "path": f"/items/{position}"},
    ]
    assert apply_json_patch(doc, patch) == doc
