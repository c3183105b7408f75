"""`_include` / `_revinclude` (with `*` and `:iterate`) equal a Python walk of the references.

The expected included set is computed from the stored resources' FHIRPath values
(`search_reference.values`), independently of the index tables, on both databases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from search_reference import reference_of
from search_reference import values as expression_values
from test_search_reference import _load

from carebase.errors import BadRequest
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.base import Store

Json = dict[str, Any]
Key = tuple[str, str]
Stored = dict[str, dict[str, Json]]


def _references(resource: Json, code: str) -> set[Key]:
    out = set()
    for value in expression_values(resource, code):
        rtype, rid, _url = reference_of(value)
        if rtype and rid:
            out.add((rtype, rid))
    return out


def _codes(source: str, code: str) -> list[str]:
    if code != "*":
        return [code]
    params = get_definitions().search_params(source).items()
    return [c for c, p in params if p.type == "reference" and p.expression]


def _step(stored: Stored, name: str, value: str, frontier: set[Key]) -> set[Key]:
    """What one include rule reaches from the resources `frontier`."""
    source, code, *rest = value.split(":")
    target = rest[0] if rest else None
    reached: set[Key] = set()
    if name.startswith("_include"):
        for rtype, rid in frontier:
            if rtype != source:
                continue
            for c in _codes(source, code):
                for ref in _references(stored[rtype][rid], c):
                    if (target is None or ref[0] == target) and ref[1] in stored.get(ref[0], {}):
                        reached.add(ref)
    else:
        for rid, resource in stored.get(source, {}).items():
            refs = _references(resource, code)
            if any(ref in frontier and (target is None or ref[0] == target) for ref in refs):
                reached.add((source, rid))
    return reached


def expected_includes(stored: Stored, matches: set[Key], rules: list[tuple[str, str]]) -> set[Key]:
    """The included set: every rule on the matches, then `:iterate` ones until nothing new."""
    seen = set(matches)
    frontier, active = set(matches), rules
    while frontier and active:
        new = set().union(*(_step(stored, n, v, frontier) for n, v in active)) - seen
        seen |= new
        frontier, active = new, [(n, v) for n, v in rules if n.endswith(":iterate")]
    return seen - matches


@pytest.fixture
def loaded(store: Store, synthea_tar: Path) -> tuple[Store, Stored]:
    return store, _load(store, synthea_tar)


def _check(store: Store, stored: Stored, type_: str, params: list[tuple[str, str]]) -> set[Key]:
    criteria = [(n, v) for n, v in params if not n.startswith(("_include", "_revinclude"))]
    rules = [(n, v) for n, v in params if n.startswith(("_include", "_revinclude"))]
    page = store.search(type_, params, count=1000)
    matches = {(e.type, e.id) for e in page.entries}
    assert matches == {(e.type, e.id) for e in store.search(type_, criteria, count=1000).entries}
    included = [(e.type, e.id) for e in page.included]
    assert len(included) == len(set(included)), "a resource is included twice"
    assert not set(included) & matches, "a match is repeated as an include"
    assert set(included) == expected_includes(stored, matches, rules), params
    assert all(e.body and not e.deleted for e in page.included)
    assert not page.includes_truncated
    return set(included)


def test_include_forward_and_wildcard(loaded: Any) -> None:
    store, stored = loaded
    both = [("_include", "Observation:subject"), ("_include", "Observation:encounter")]
    got = _check(store, stored, "Observation", both)
    assert {t for t, _ in got} == {"Patient", "Encounter"}
    got = _check(store, stored, "Encounter", [("_include", "Encounter:*")])
    assert {"Patient", "Practitioner", "Organization"} <= {t for t, _ in got}
    typed = _check(store, stored, "Encounter", [("_include", "Encounter:*:Practitioner")])
    assert typed and {t for t, _ in typed} == {"Practitioner"}


def test_revinclude(loaded: Any) -> None:
    store, stored = loaded
    pid = sorted(stored["Patient"])[0]
    got = _check(store, stored, "Patient", [("_id", pid), ("_revinclude", "Encounter:subject"),
                                            ("_revinclude", "Condition:patient")])  # fmt: skip
    assert {t for t, _ in got} == {"Encounter", "Condition"}
    none = _check(store, stored, "Patient", [("_revinclude", "Encounter:subject:Group")])
    assert none == set()


def test_iterate(loaded: Any) -> None:
    store, stored = loaded
    pid = sorted(stored["Patient"])[1]
    rules = [("_revinclude", "Encounter:patient"), ("_include:iterate", "Encounter:participant")]
    got = _check(store, stored, "Patient", [("_id", pid), *rules])
    assert "Practitioner" in {t for t, _ in got}
    # iterating back to the matches never repeats them
    _check(store, stored, "Patient", [("_revinclude:iterate", "Observation:subject"),
                                      ("_include:iterate", "Observation:subject")])  # fmt: skip
    # a chain two steps deep: Claim -> Encounter -> Organization, only with :iterate
    deep = [("_include", "Claim:encounter"), ("_include:iterate", "Encounter:service-provider")]
    assert "Organization" in {t for t, _ in _check(store, stored, "Claim", deep)}
    shallow = [("_include", "Claim:encounter"), ("_include", "Encounter:service-provider")]
    assert "Organization" not in {t for t, _ in _check(store, stored, "Claim", shallow)}


def test_cap_truncates_and_says_so(loaded: Any) -> None:
    store, _ = loaded
    page = store.search("Patient", [("_revinclude", "Observation:subject")], max_include=3)
    assert page.includes_truncated
    assert len({(e.type, e.id) for e in page.included}) == 3
    page = store.search("Patient", [("_revinclude", "Observation:subject")], count=0)
    assert page.included == [] and not page.includes_truncated


def test_deleted_targets_are_skipped(store: Store) -> None:
    with store.transaction() as tx:
        tx.update("Patient", "gone", {"resourceType": "Patient"})
        tx.update("Patient", "kept", {"resourceType": "Patient"})
        for i, who in enumerate(["gone", "kept"]):
            tx.update(
                "Observation",
                f"o{i}",
                {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                 "subject": {"reference": f"Patient/{who}"}},
            )  # fmt: skip
    with store.transaction() as tx:
        tx.delete("Patient", "gone")
        tx.delete("Observation", "o1")
    page = store.search("Observation", [("_include", "Observation:subject")])
    assert [e.id for e in page.entries] == ["o0"]
    assert page.included == []
    page = store.search("Patient", [("_revinclude", "Observation:subject")])
    assert [e.id for e in page.entries] == ["kept"] and page.included == []


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("_include", "Observation", "Observation"),
        ("_include", "Observation:nope", "nope"),
        ("_include", "Nope:subject", "Nope"),
        ("_include", "Observation:subject:Nope", "Nope"),
        ("_include", "Observation:status", "status"),
        ("_include", "Observation::Patient", "Observation::Patient"),
        ("_revinclude", "Observation:*", "_revinclude"),
        ("_include:iterate", "Observation:subject:Patient:x", "Observation:subject:Patient:x"),
    ],
)
def test_bad_include_is_400_naming_it(store: Store, name: str, value: str, named: str) -> None:
    with pytest.raises(BadRequest) as info:
        store.search("Observation", [(name, value)])
    assert named in str(info.value)
    assert info.value.issues[0].expression == [name]
    lenient = store.search("Observation", [(name, value)], lenient=True)
    assert lenient.ignored == (name,)
