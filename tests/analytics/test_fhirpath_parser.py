"""The FHIRPath subset parser: trees for good expressions, located errors for bad ones."""

from __future__ import annotations

import pytest

from carebase.analytics.fhirpath_ast import (
    Binary,
    FunctionCall,
    Index,
    Literal,
    Member,
    This,
    TypeSpecifier,
    TypeTest,
    Unary,
    Variable,
)
from carebase.analytics.fhirpath_parser import parse_fhirpath
from carebase.analytics.view_errors import FhirPathSyntaxError, ViewDefinitionError


def test_path_with_where_and_constant() -> None:
    assert parse_fhirpath("name.where(use = %u).family") == Member(
        FunctionCall(
            Member(This(), "name"),
            "where",
            (Binary("=", Member(This(), "use"), Variable("u")),),
        ),
        "family",
    )


def test_precedence_multiplication_before_addition_and_before_comparison() -> None:
    tree = parse_fhirpath("1 + 2 * 3 > 4 and true")
    assert tree == Binary(
        "and",
        Binary(
            ">",
            Binary(
                "+",
                Literal(1, "integer"),
                Binary("*", Literal(2, "integer"), Literal(3, "integer")),
            ),
            Literal(4, "integer"),
        ),
        Literal(True, "boolean"),
    )


def test_literals() -> None:
    assert parse_fhirpath("1.50") == Literal("1.50", "decimal")
    assert parse_fhirpath("'it\\'s'") == Literal("it's", "string")
    assert parse_fhirpath("@2020-01") == Literal("2020-01", "date")
    assert parse_fhirpath("@2020-01-02T10:00:00Z") == Literal("2020-01-02T10:00:00Z", "dateTime")
    assert parse_fhirpath("@T10:30") == Literal("10:30", "time")
    assert parse_fhirpath("{}") == Literal(None, "empty")
    assert parse_fhirpath("-5") == Unary("-", Literal(5, "integer"))


def test_type_arguments_index_and_is() -> None:
    assert parse_fhirpath("value.ofType(FHIR.Quantity)") == FunctionCall(
        Member(This(), "value"), "ofType", (TypeSpecifier("Quantity", "FHIR"),)
    )
    assert parse_fhirpath("name[1]") == Index(Member(This(), "name"), Literal(1, "integer"))
    assert parse_fhirpath("value is Quantity") == TypeTest(
        "is", Member(This(), "value"), TypeSpecifier("Quantity")
    )
    assert parse_fhirpath("getReferenceKey(Patient)") == FunctionCall(
        This(), "getReferenceKey", (TypeSpecifier("Patient"),)
    )
    assert parse_fhirpath("$this") == This()
    assert parse_fhirpath("%rowIndex") == Variable("rowIndex")


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("@@", 0, "unexpected character"),
        ("name.", 5, "expected a name"),
        ("name.frobnicate()", 5, "unknown or unsupported function frobnicate()"),
        ("a and", 5, "expected a value or a path"),
        ("first(1)", 0, "first() takes 0 argument(s), got 1"),
        ("(a", 2, "expected ')'"),
        ("a b", 2, "after a complete expression"),
        ("", 0, "empty"),
    ],
)
def test_bad_expressions_name_expression_position_and_location(
    text: str, position: int, words: str
) -> None:
    with pytest.raises(FhirPathSyntaxError) as caught:
        parse_fhirpath(text, "ViewDefinition.select[0].column[2].path")
    error = caught.value
    assert isinstance(error, ViewDefinitionError)
    assert error.position == position
    assert error.location == "ViewDefinition.select[0].column[2].path"
    assert repr(text) in str(error)
    assert words in str(error)
    assert error.status == 400
