"""ViewDefinition parsing: the model, column order, and errors that name the bad element."""

from __future__ import annotations

from typing import Any

import pytest

from carebase.analytics.view_errors import ViewDefinitionError
from carebase.analytics.view_model import ColumnInfo, parse_view_definition


def _view(select: list[Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "ViewDefinition", "resource": "Patient", "select": select, **extra}


def test_model_and_column_order() -> None:
    view = parse_view_definition(
        _view(
            [
                {
                    "column": [{"name": "id", "path": "getResourceKey()", "type": "id"}],
                    "select": [
                        {"forEach": "name", "column": [{"name": "family", "path": "family"}]}
                    ],
                    "unionAll": [
                        {"column": [{"name": "v", "path": "'a'", "collection": False}]},
                        {"forEach": "telecom", "column": [{"name": "v", "path": "value"}]},
                    ],
                },
                {"column": [{"name": "given", "path": "name.given", "collection": True}]},
            ],
            constant=[{"name": "x", "valueCode": "male"}],
            where=[{"path": "gender = %x"}],
        )
    )
    assert view.resource == "Patient"
    assert view.column_names == ("id", "family", "v", "given")
    assert view.columns[0] == ColumnInfo("id", "id", False, None)
    assert view.columns[3].collection is True
    assert view.constants[0].type == "code"
    assert view.select[0].selects[0].iteration == "forEach"
    assert view.select[0].union_all[1].iteration_paths[0].location == (
        "ViewDefinition.select[0].unionAll[1].forEach"
    )
    assert view.where[0].text == "gender = %x"


@pytest.mark.parametrize(
    ("doc", "location", "words"),
    [
        ({}, "ViewDefinition.resource", "non-empty string"),
        ({"resource": "Patientx", "select": [{}]}, "ViewDefinition.resource", "not an R4"),
        ({"resource": "Patient"}, "ViewDefinition.select", "required"),
        (_view([{"forEach": 1}]), "ViewDefinition.select[0].forEach", "non-empty string"),
        (
            _view([{"column": [{"name": "a", "path": "id"}, {"name": "b", "path": "name."}]}]),
            "ViewDefinition.select[0].column[1].path",
            "cannot parse FHIRPath",
        ),
        (
            _view([{"column": [{"name": "1a", "path": "id"}]}]),
            "ViewDefinition.select[0].column[0].name",
            "not a usable column name",
        ),
        (
            _view(
                [
                    {"column": [{"name": "a", "path": "id"}]},
                    {"column": [{"name": "a", "path": "id"}]},
                ]
            ),
            "ViewDefinition.select[1].column[0].name",
            "already used at ViewDefinition.select[0].column[0].name",
        ),
        (
            _view([{"column": [{"name": "a", "path": "id", "collection": "yes"}]}]),
            "ViewDefinition.select[0].column[0].collection",
            "true or false",
        ),
        (
            _view([{"column": [{"name": "a", "path": "id", "pth": "x"}]}]),
            "ViewDefinition.select[0].column[0].pth",
            "not an element here",
        ),
        (
            _view([{"forEach": "name", "forEachOrNull": "name"}]),
            "ViewDefinition.select[0]",
            "only one of",
        ),
        (
            _view(
                [
                    {
                        "unionAll": [
                            {"column": [{"name": "a", "path": "id"}]},
                            {"column": [{"name": "b", "path": "id"}]},
                        ]
                    }
                ]
            ),
            "ViewDefinition.select[0].unionAll[1]",
            "same columns in the same order",
        ),
        (
            _view([{"column": [{"name": "a", "path": "%nope"}]}]),
            "ViewDefinition.select[0].column[0].path",
            "%nope is not a constant",
        ),
        (
            _view([{"column": [{"name": "a", "path": "id"}]}], constant=[{"name": "c"}]),
            "ViewDefinition.constant[0]",
            "exactly one value[x]",
        ),
        (
            _view(
                [{"column": [{"name": "a", "path": "id"}]}],
                constant=[{"name": "c", "valueQuantity": {"value": 1}}],
            ),
            "ViewDefinition.constant[0].valueQuantity",
            "not a supported constant type",
        ),
        (
            _view([{"column": [{"name": "a", "path": "id"}]}], where=[{"path": 3}]),
            "ViewDefinition.where[0].path",
            "non-empty string",
        ),
    ],
)
def test_errors_name_the_element(doc: dict[str, Any], location: str, words: str) -> None:
    with pytest.raises(ViewDefinitionError) as caught:
        parse_view_definition(doc)
    assert caught.value.location == location
    assert str(caught.value).startswith(location + ":")
    assert words in str(caught.value)
    assert caught.value.issues[0].expression == [location]
