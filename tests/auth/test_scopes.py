"""SMART scope parsing (`auth.scopes`): v1 and v2 forms, granular criteria, grants by context."""

from __future__ import annotations

import pytest

from carebase.auth.scopes import (
    ResourceScope,
    ScopeError,
    ScopeGrant,
    ScopeSet,
    canonical_permissions,
    parse_scope,
    validate_scopes,
)

LAB = "category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


@pytest.mark.parametrize(
    ("text", "context", "type_", "letters"),
    [
        ("patient/Observation.read", "patient", "Observation", "rs"),
        ("user/*.write", "user", "*", "cud"),
        ("system/*.*", "system", "*", "cruds"),
        ("patient/Observation.rs", "patient", "Observation", "rs"),
        ("user/*.cruds", "user", "*", "cruds"),
        ("system/Patient.s", "system", "Patient", "s"),
    ],
)
def test_v1_and_v2_scopes(text: str, context: str, type_: str, letters: str) -> None:
    scope = parse_scope(text)
    assert scope == ResourceScope(context, type_, frozenset(letters))  # type: ignore[arg-type]


def test_granular_scope_keeps_its_criteria() -> None:
    scope = parse_scope(f"patient/Observation.rs?{LAB}")
    assert scope is not None
    assert scope.query == (
        ("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"),
    )


@pytest.mark.parametrize("text", ["openid", "fhirUser", "launch/patient", "offline_access", "x"])
def test_non_resource_scopes_grant_nothing(text: str) -> None:
    assert parse_scope(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "patient/Observation.x",
        "patient/observation.rs",
        "user/*.",
        "system/*.sr",  # v2 letters come in cruds order
        "patient/Observation.read?category=x",  # granular needs v2
        "patient/Observation.rs?",
    ],
)
def test_malformed_resource_scopes_raise(text: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(text)


def test_grant_picks_the_broadest_context_and_its_filters() -> None:
    scopes = ScopeSet(
        ["patient/Observation.rs", "user/Observation.r", f"patient/Condition.rs?{LAB}"]
    )
    assert scopes.grant("Observation", "r") == ScopeGrant("user")
    assert scopes.grant("Observation", "s") == ScopeGrant("patient")
    assert scopes.grant("Observation", "c") is None
    condition = scopes.grant("Condition", "s")
    assert condition is not None and condition.context == "patient"
    assert condition.filters == ((("category", LAB.split("=", 1)[1]),),)
    # an unfiltered scope of the same context lifts the filter
    both = ScopeSet([f"patient/Condition.rs?{LAB}", "patient/Condition.r"])
    assert both.grant("Condition", "r") == ScopeGrant("patient")
    assert both.grant("Condition", "s") == condition  # only the filtered scope searches


def test_wildcard_type_and_allows() -> None:
    scopes = ScopeSet(["system/*.rs", "openid"])
    assert scopes.allows("Anything", "r") and not scopes.allows("Anything", "c")
    assert scopes.contexts() == {"system"}


def test_validate_and_canonical_order() -> None:
    assert validate_scopes("openid  patient/*.rs") == ["openid", "patient/*.rs"]
    with pytest.raises(ScopeError):
        validate_scopes("patient/*.bogus")
    assert canonical_permissions("sdr") == "rds"
