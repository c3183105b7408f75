"""Terminology: the CodeSet algebra, ValueSet expansion and CodeSystem subsumption over the
resources a store holds (both databases)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from terminology_data import (
    BODY,
    EXPECTED,
    EXPECTED_OPEN,
    LOINC,
    MANY,
    OTHER,
    VS,
    store_terminology,
)

from carebase.errors import BadRequest, TooCostly
from carebase.store.base import Store
from carebase.store.terminology import MAX_CODES, CodeSet, CodeSystemView, Terminology

# ----------------------------------------------------------------------- CodeSet algebra

SYSTEMS = ("s1", "s2", "s3")
CODES = ("a", "b", "c", "d")
UNIVERSE = {(s, c) for s in SYSTEMS for c in CODES}


@st.composite
def code_sets(draw: st.DrawFn) -> CodeSet:
    opened = draw(st.sets(st.sampled_from(SYSTEMS), max_size=2))
    excluded = {s: frozenset(draw(st.sets(st.sampled_from(CODES)))) for s in opened}
    listed = draw(st.sets(st.sampled_from(sorted(UNIVERSE))))
    return CodeSet(frozenset(x for x in listed if x[0] not in opened), excluded)


def members(cs: CodeSet) -> set[tuple[str, str]]:
    """Brute force over a finite universe (the codes any set here can name)."""
    return {x for x in UNIVERSE if x in cs}


@given(code_sets(), code_sets())
def test_code_set_operations_match_set_algebra(a: CodeSet, b: CodeSet) -> None:
    assert members(a | b) == members(a) | members(b)
    assert members(a & b) == members(a) & members(b)
    assert members(a - b) == members(a) - members(b)
    for result in (a | b, a & b, a - b):  # normalised: no listed code of an open system
        assert not any(s in result.open_systems for s, _ in result.codes)


def test_code_set_membership() -> None:
    cs = CodeSet(frozenset({("s1", "a")}), {"s2": frozenset({"b"})})
    assert ("s1", "a") in cs and ("s2", "a") in cs
    assert ("s2", "b") not in cs and ("s1", "b") not in cs and "s1" not in cs


def test_code_set_refuses_more_than_max_codes() -> None:
    with pytest.raises(TooCostly, match="10,000"):
        CodeSet(frozenset(("s", str(i)) for i in range(MAX_CODES + 1)))
    assert len(CodeSet(frozenset(("s", str(i)) for i in range(MAX_CODES))).codes) == MAX_CODES


def test_code_system_view_reads_nesting_and_properties() -> None:
    view = CodeSystemView(
        {
            "url": "u",
            "concept": [
                {
                    "code": "r",
                    "concept": [{"code": "k", "property": [{"code": "parent", "valueCode": "q"}]}],
                },
                {
                    "code": "q",
                    "property": [
                        {"code": "child", "valueCode": "z"},
                        {"code": "n", "valueInteger": 3},
                    ],
                },
                {"code": "z", "property": [{"code": "t", "valueCoding": {"code": "cc"}}]},
                {"display": "no code: skipped"},
            ],
        }
    )
    assert view.descendants_or_self("r") == {"r", "k"}
    assert view.descendants_or_self("q") == {"q", "k", "z"}
    assert view.ancestors_or_self("k") == {"k", "r", "q"}
    assert view.descendants_or_self("unknown") == set()
    assert view.filter("=", "n", "3") == {"q"}
    assert view.filter("=", "t", "cc") == {"z"}
    assert view.filter("=", "child", "z") == {"q"}
    assert view.all_codes() == {"r", "k", "q", "z"}


def test_code_system_over_max_codes_is_too_costly_to_enumerate() -> None:
    view = CodeSystemView(
        {"url": "big", "concept": [{"code": str(i)} for i in range(MAX_CODES + 1)]}
    )
    assert view.descendants_or_self("5") == {"5"}  # the hierarchy still works
    with pytest.raises(TooCostly, match="big"):
        view.all_codes()


# ----------------------------------------------------------------------- over a store


@pytest.fixture
def terminology(store: Store) -> Terminology:
    store_terminology(store)
    return Terminology(store)


def test_expansions(terminology: Terminology) -> None:
    for name, expected in EXPECTED.items():
        got = terminology.expand(VS + name)
        assert (set(got.codes), got.open_systems) == (expected, {}), name
    for name, opened in EXPECTED_OPEN.items():
        got = terminology.expand(VS + name)
        assert got.codes == frozenset(), name
        assert {s: set(e) for s, e in got.open_systems.items()} == opened, name


def test_expansion_by_literal_reference_and_newest_version(terminology: Terminology) -> None:
    assert set(terminology.expand("ValueSet/is-a").codes) == EXPECTED["is-a"]
    # without a version: the newest of the held versions (versioned-2 was stored last)
    assert set(terminology.expand(VS + "versioned").codes) == EXPECTED["versioned|2"]


def test_dialect_is_the_stores(store: Store) -> None:
    assert Terminology(store).dialect == store.dialect


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (VS + "nowhere", "'http://example.org/vs/nowhere' is not held by this server"),
        ("ValueSet/nowhere", "'ValueSet/nowhere' is not held"),
        (VS + "is-a|9", "is-a|9' is not held"),
        (VS + "cycle-1", "imports itself (.*cycle-1 -> .*cycle-2 -> .*cycle-1)"),
        (VS + "no-definition", "has no expansion and no compose.include"),
        (VS + "filter-unheld", "filters code system 'http://loinc.org', which is not held"),
        (VS + "bad-filter", "filter on 'http://example.org/cs/body' that is not valid .*'near'"),
        (VS + "bad-regex", "regex filter '\\(' is not a valid pattern"),
        (VS + "bad-exists", "needs the value true or false, not 'maybe'"),
        (VS + "empty-include", "neither a system nor a valueSet"),
        (VS + "imports-unknown", "'http://example.org/vs/nowhere' is not held"),
    ],
)
def test_expansion_errors(terminology: Terminology, reference: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        terminology.expand(reference)


def test_expansion_over_max_codes_is_too_costly(store: Store) -> None:
    with store.transaction() as tx:
        tx.update(
            "CodeSystem",
            "big",
            {
                "resourceType": "CodeSystem",
                "url": "urn:big",
                "status": "active",
                "content": "complete",
                "concept": [{"code": str(i)} for i in range(MAX_CODES + 1)],
            },
        )
        tx.update(
            "ValueSet",
            "big",
            {
                "resourceType": "ValueSet",
                "url": "urn:vs:big",
                "status": "active",
                "compose": {"include": [{"system": "urn:big"}]},
            },
        )
    with pytest.raises(TooCostly, match="more than 10,000 codes"):
        Terminology(store).expand("urn:vs:big")


def test_subsumption(terminology: Terminology) -> None:
    below = terminology.subsumption(BODY, "A1", "below")
    assert set(below.codes) == {(BODY, "A1"), (BODY, "A1a")}
    above = terminology.subsumption(BODY, "C", "above")
    assert set(above.codes) == {(BODY, "C"), (BODY, "B"), (BODY, "D")}
    # a code without its system: every held CodeSystem that defines it
    assert set(terminology.subsumption(None, "X", "below").codes) == {(OTHER, "X")}
    assert set(terminology.subsumption(None, "M3", "above").codes) == {(MANY, "M3")}


@pytest.mark.parametrize(
    ("system", "code", "message"),
    [
        (LOINC, "8867-4", "'http://loinc.org' is not held by this server: :below needs"),
        ("http://example.org/cs/absent", "x", "cs/absent' is not held"),
        (BODY, "ZZ", "'ZZ' is not defined in CodeSystem 'http://example.org/cs/body'"),
        (None, "ZZ", "no CodeSystem held by this server defines the code 'ZZ'"),
    ],
)
def test_subsumption_errors(
    terminology: Terminology, system: str | None, code: str, message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        terminology.subsumption(system, code, "below")


def test_code_without_system_scans_pages_of_code_systems(store: Store) -> None:
    with store.transaction() as tx:
        for i in range(130):  # more than one page of CodeSystems
            tx.update(
                "CodeSystem",
                f"cs{i}",
                {
                    "resourceType": "CodeSystem",
                    "url": f"urn:cs:{i}",
                    "status": "active",
                    "content": "complete",
                    "concept": [{"code": "shared" if i % 50 == 0 else "x"}],
                },
            )
    found = Terminology(store).subsumption(None, "shared", "below")
    assert set(found.codes) == {
        ("urn:cs:0", "shared"),
        ("urn:cs:50", "shared"),
        ("urn:cs:100", "shared"),
    }


def test_one_instance_sees_code_systems_change(terminology: Terminology, store: Store) -> None:
    assert set(terminology.subsumption(OTHER, "X", "below").codes) == {(OTHER, "X")}
    assert terminology.code_system(OTHER) is terminology.code_system(OTHER)  # parsed once
    with store.transaction() as tx:
        tx.update(
            "CodeSystem",
            "other",
            {"resourceType": "CodeSystem", "url": OTHER, "status": "active",
             "content": "complete", "concept": [{"code": "X", "concept": [{"code": "Y"}]}]},
        )  # fmt: skip
    assert set(terminology.subsumption(OTHER, "X", "below").codes) == {(OTHER, "X"), (OTHER, "Y")}
    assert set(terminology.expand(VS + "whole-held").codes) == {(OTHER, "X"), (OTHER, "Y")}
    with store.transaction() as tx:
        tx.delete("CodeSystem", "other")
    assert terminology.code_system(OTHER) is None
    assert terminology.expand(VS + "whole-held").open_systems == {OTHER: frozenset()}
