"""`_sort` and keyset paging equal an independent Python sort of the FHIRPath values.

On Synthea patients, both databases: every sortable parameter of the loaded types in both
directions, several keys, missing values last, paging forward and back through a sorted
search, and matches inserted and deleted between page requests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from search_reference import norm, ranges_of, reference_of, strings_of, tokens_of
from search_reference import values as expression_values
from test_search_reference import _load

from carebase.errors import BadRequest
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.base import SearchPage, Store
from carebase.store.search_order import parse_sort
from carebase.store.search_sql import is_supported

Json = dict[str, Any]
SORTABLE = {"string", "token", "date", "number", "quantity", "uri", "reference"}
#: epoch-ms stand-ins for open date bounds: beyond every real date, as the store treats them
EARLIEST, LATEST = -math.inf, math.inf


def _key_values(type_: str, code: str, resource: Json, descending: bool) -> list[Any]:
    """Every sortable value the resource has for `code`, computed from its FHIRPath values."""
    if code == "_id":
        return [resource["id"]]
    if code == "_lastUpdated":
        return [resource["meta"]["lastUpdated"]]
    ptype = get_definitions().search_param(type_, code).type
    found = expression_values(resource, code)
    if ptype == "string":
        return [norm(s) for v in found for s in strings_of(v)]
    if ptype == "token":
        return [f"{t[1]}\x01{t[0] or ''}" for v in found for t in tokens_of(v) if t[1] is not None]
    if ptype == "date":
        spans = [r for v in found for r in ranges_of(v)]
        return [hi if descending else lo for lo, hi in spans]
    if ptype == "number":
        return [v for v in found if isinstance(v, (int, float))]
    if ptype == "quantity":
        return [v["value"] for v in found if isinstance(v, dict) and "value" in v]
    if ptype == "uri":
        return [v for v in found if isinstance(v, str)]
    keys = []
    for v in found:
        rtype, rid, url = reference_of(v)
        raw = v.get("reference") if isinstance(v, dict) else v
        keys.append(f"{rtype}/{rid}" if rtype else url or raw)
    return [k for k in keys if k]


def expected_order(
    type_: str, resources: dict[str, Json], row_order: list[str], sort: str
) -> list[str]:
    """Ids sorted by `sort` (keys in priority order), missing values last, then by row."""
    ids = list(row_order)
    for item in reversed(sort.split(",")):
        descending = item.startswith("-")
        code = item.lstrip("-")
        pick: Callable[[list[Any]], Any] = max if descending else min
        key = {}
        for id_ in ids:
            found = _key_values(type_, code, resources[id_], descending)
            key[id_] = pick(found) if found else None
        present = sorted((i for i in ids if key[i] is not None), key=key.get, reverse=descending)
        ids = present + [i for i in ids if key[i] is None]
    return ids


def page_through(store: Store, type_: str, params: list[tuple[str, str]], count: int) -> list[str]:
    """Every match, following next cursors from the first page."""
    ids: list[str] = []
    cursor = None
    while True:
        page = store.search(type_, params, count=count, cursor=cursor)
        ids += [e.id for e in page.entries]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


def page_back(store: Store, type_: str, params: list[tuple[str, str]], count: int) -> list[str]:
    """Every match, from the last page back to the first by previous cursors."""
    page: SearchPage = store.search(type_, params, count=count)
    while page.next_cursor is not None:
        page = store.search(type_, params, count=count, cursor=page.next_cursor)
    ids = [e.id for e in page.entries]
    while page.previous_cursor is not None:
        page = store.search(type_, params, count=count, cursor=page.previous_cursor)
        ids = [e.id for e in page.entries] + ids
    return ids


@pytest.fixture
def loaded(store: Store, synthea_tar: Path) -> tuple[Store, dict[str, dict[str, Json]]]:
    return store, _load(store, synthea_tar)


def _row_order(store: Store, type_: str) -> list[str]:
    return page_through(store, type_, [], 1000)


def _sortable(type_: str) -> list[str]:
    params = get_definitions().search_params(type_)
    codes = [
        c
        for c, p in params.items()
        if p.type in SORTABLE and is_supported(p) and p.expression is not None  # not _text
    ]
    return sorted(set(codes) | {"_id"})


def test_every_sortable_parameter_both_directions(loaded: Any) -> None:
    store, stored = loaded
    checked = 0
    for type_ in ("Patient", "Encounter", "Condition", "Immunization", "RiskAssessment",
                  "MedicationRequest", "Procedure", "CarePlan", "Claim"):  # fmt: skip
        rows = _row_order(store, type_)
        for code in _sortable(type_):
            for sort in (code, f"-{code}"):
                got = page_through(store, type_, [("_sort", sort)], 1000)
                assert got == expected_order(type_, stored[type_], rows, sort), (type_, sort)
                checked += 1
    assert checked > 150


def test_observation_sorts_and_multi_key(loaded: Any) -> None:
    store, stored = loaded
    rows = _row_order(store, "Observation")
    for sort in ("-date", "code,-date", "subject,-value-quantity,_id", "value-quantity",
                 "-combo-code,status", "category,-_lastUpdated", "-performer,code"):  # fmt: skip
        got = page_through(store, "Observation", [("_sort", sort)], 1000)
        assert got == expected_order("Observation", stored["Observation"], rows, sort), sort


def test_missing_values_last_both_ways(store: Store) -> None:
    with store.transaction() as tx:
        for id_, birth in [("a", "1990"), ("b", None), ("c", "1980-05"), ("d", None)]:
            patient: Json = {"resourceType": "Patient"}
            if birth:
                patient["birthDate"] = birth
            tx.update("Patient", id_, patient)
    up = page_through(store, "Patient", [("_sort", "birthdate")], 1)
    down = page_through(store, "Patient", [("_sort", "-birthdate")], 1)
    assert up == ["c", "a", "b", "d"]
    assert down == ["a", "c", "b", "d"]


def test_period_sorts_by_earliest_start_and_latest_end(store: Store) -> None:
    with store.transaction() as tx:
        for id_, period in [
            ("open-end", {"start": "2010-01-01"}),
            ("open-start", {"end": "2000-01-01"}),
            ("closed", {"start": "2005-01-01", "end": "2020-01-01"}),
        ]:
            tx.update(
                "Encounter",
                id_,
                {"resourceType": "Encounter", "status": "finished", "class": {}, "period": period},
            )
    assert page_through(store, "Encounter", [("_sort", "date")], 2) == [
        "open-start", "closed", "open-end"
    ]  # fmt: skip
    assert page_through(store, "Encounter", [("_sort", "-date")], 2) == [
        "open-end", "closed", "open-start"
    ]  # fmt: skip


def test_paging_forward_and_back_equals_full_sorted_list(loaded: Any) -> None:
    store, stored = loaded
    rows = _row_order(store, "Observation")
    params = [("_sort", "-date,code"), ("status", "final")]
    full = expected_order("Observation", stored["Observation"], rows, "-date,code")
    full = [i for i in full if stored["Observation"][i].get("status") == "final"]
    assert page_through(store, "Observation", params, 1000) == full
    assert page_through(store, "Observation", params, 7) == full
    assert page_back(store, "Observation", params, 7) == full
    assert page_back(store, "Observation", [], 9) == rows


def test_inserts_and_deletes_between_pages_skip_or_repeat_nothing(store: Store) -> None:
    def add(id_: str, year: int) -> None:
        with store.transaction() as tx:
            tx.update("Patient", id_, {"resourceType": "Patient", "birthDate": str(year)})

    for year in range(1950, 1990):
        add(f"p{year}", year)
    params = [("_sort", "-birthdate")]
    first = store.search("Patient", params, count=10)
    seen = [e.id for e in first.entries]
    assert seen == [f"p{y}" for y in range(1989, 1979, -1)]
    with store.transaction() as tx:
        tx.delete("Patient", "p1985")  # already seen
        tx.delete("Patient", "p1970")  # not yet seen
    add("new-before", 2000)  # sorts before the cursor: not on later pages
    add("new-after", 1960)  # sorts after it: must appear once
    add("tie", 1980)  # same value as the last row seen, later row: after it
    cursor = first.next_cursor
    while cursor is not None:
        page = store.search("Patient", params, count=10, cursor=cursor)
        seen += [e.id for e in page.entries]
        cursor = page.next_cursor
    assert len(seen) == len(set(seen))
    expected = [f"p{y}" for y in range(1989, 1949, -1) if y != 1970]
    expected.insert(expected.index("p1980") + 1, "tie")
    expected.insert(expected.index("p1960") + 1, "new-after")
    assert seen == expected


def test_deep_pages_use_the_cursor_not_an_offset(store: Store) -> None:
    with store.transaction() as tx:
        for i in range(60):
            tx.update("Patient", f"x{i:02}", {"resourceType": "Patient", "gender": "other"})
    page = store.search("Patient", [("_sort", "-_id")], count=25)
    page = store.search("Patient", [("_sort", "-_id")], count=25, cursor=page.next_cursor)
    page = store.search("Patient", [("_sort", "-_id")], count=25, cursor=page.next_cursor)
    assert [e.id for e in page.entries] == [f"x{i:02}" for i in range(9, -1, -1)]
    assert page.next_cursor is None
    assert page.total == 60


@pytest.mark.parametrize(
    ("sort", "named"),
    [
        ("nope", "nope"),
        ("-birthdate,,name", "_sort"),
        ("name,-name", "name"),
        ("phonetic,_text", "_text"),
        ("address-use,death-date,_content", "_content"),
    ],
)
def test_bad_sort_is_400_naming_it(store: Store, sort: str, named: str) -> None:
    with pytest.raises(BadRequest) as info:
        store.search("Patient", [("_sort", sort)])
    assert named in str(info.value)
    assert info.value.issues[0].expression == ["_sort"]


def test_composite_and_system_level_sorts_are_refused(store: Store) -> None:
    with pytest.raises(BadRequest, match="composite"):
        store.search("Observation", [("_sort", "code-value-quantity")])
    with pytest.raises(BadRequest, match="birthdate"):
        store.search(None, [("_sort", "birthdate")])
    assert store.search(None, [("_sort", "-_lastUpdated")]).entries == []


def test_lenient_ignores_a_bad_sort(store: Store) -> None:
    page = store.search("Patient", [("_sort", "nope")], lenient=True)
    assert page.ignored == ("_sort",)


@pytest.mark.parametrize(
    "cursor",
    ["garbage", "eyJ4IjoxfQ", "e30", "bnVsbA", "!!!", "eyJzIjoiIiwiayI6W10sInIiOi0xLCJkIjoibiJ9"],
)
def test_malformed_cursors_are_400(store: Store, cursor: str) -> None:
    with pytest.raises(BadRequest, match="follow the links"):
        store.search("Patient", [], cursor=cursor)


def test_a_cursor_of_another_sort_is_400(store: Store) -> None:
    with store.transaction() as tx:
        for _ in range(3):
            tx.create("Patient", {"resourceType": "Patient", "gender": "male"})
    page = store.search("Patient", [("_sort", "gender")], count=1)
    assert page.next_cursor is not None
    with pytest.raises(BadRequest, match="follow the links"):
        store.search("Patient", [("_sort", "-gender")], cursor=page.next_cursor)
    with pytest.raises(BadRequest, match="follow the links"):
        store.search("Patient", [], cursor=page.next_cursor)


def test_uri_and_reference_sorts(store: Store) -> None:
    urls = ["http://b.org/vs", "http://a.org/vs/2", None, "http://a.org/vs", "urn:oid:1.2"]
    with store.transaction() as tx:
        for i, url in enumerate(urls):
            vs: Json = {"resourceType": "ValueSet", "status": "active"}
            if url:
                vs["url"] = url
            tx.update("ValueSet", f"v{i}", vs)
        for i, ref in enumerate(["Patient/b", "Group/z", None, "Patient/a", "#contained"]):
            obs: Json = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
            if ref:
                obs["subject"] = {"reference": ref}
            tx.update("Observation", f"o{i}", obs)
    for type_, code in (("ValueSet", "url"), ("Observation", "subject")):
        resources = {r.id: orjson.loads(r.body or b"{}") for r in store.iter_current(type_)}
        rows = _row_order(store, type_)
        for sort in (code, f"-{code}"):
            expected = expected_order(type_, resources, rows, sort)
            assert page_through(store, type_, [("_sort", sort)], 2) == expected
            assert page_back(store, type_, [("_sort", sort)], 2) == expected
    assert page_through(store, "ValueSet", [("_sort", "url")], 10) == ["v3", "v1", "v0", "v4", "v2"]


def test_several_types_sort_on_the_parameters_they_share() -> None:
    plan = parse_sort(("Patient", "Practitioner"), "-name,gender", "sqlite")
    assert [k.name for k in plan.keys] == ["name", "gender"]
    assert len(plan.keys[0].args) == 2 and "IN (?, ?)" in plan.keys[0].expression
    with pytest.raises(BadRequest, match="Patient, Observation"):
        parse_sort(("Patient", "Observation"), "name", "sqlite")


def test_a_page_emptied_by_deletes_links_back(store: Store) -> None:
    with store.transaction() as tx:
        for i in range(4):
            tx.update("Patient", f"e{i}", {"resourceType": "Patient", "gender": "male"})
    first = store.search("Patient", [("_sort", "_id")], count=2)
    with store.transaction() as tx:
        tx.delete("Patient", "e2")
        tx.delete("Patient", "e3")
    empty = store.search("Patient", [("_sort", "_id")], count=2, cursor=first.next_cursor)
    assert empty.entries == [] and empty.next_cursor is None
    back = store.search("Patient", [("_sort", "_id")], count=2, cursor=empty.previous_cursor)
    assert [e.id for e in back.entries] == ["e0"]
    assert back.next_cursor is not None
    again = store.search("Patient", [("_sort", "_id")], count=2, cursor=back.next_cursor)
    assert [e.id for e in again.entries] == ["e1"]
