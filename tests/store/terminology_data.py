"""Code systems and value sets for the terminology and search-modifier tests.

`BODY` has a hierarchy both by nesting and by `parent`/`child` properties:

    A ─ A1 ─ A1a          B ─ C (C: parent B, by property; colour red)
      └ A2                D ─ C (D: child C, by property) ; E (colour blue, rare true)

`EXPECTED` holds, for each value set, its codes worked out by hand from these definitions.
"""

from __future__ import annotations

from typing import Any

from carebase.store.base import Store

BODY = "http://example.org/cs/body"
OTHER = "http://example.org/cs/other"
MANY = "http://example.org/cs/many"
ABSENT = "http://example.org/cs/absent"  # held, but content not-present
LOINC = "http://loinc.org"  # not held
VS = "http://example.org/vs/"

Code = tuple[str | None, str]


def _concept(code: str, *children: dict[str, Any], **props: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"code": code, "display": f"Concept {code}"}
    if children:
        out["concept"] = list(children)
    if props:
        out["property"] = [
            {"code": k, ("valueBoolean" if isinstance(v, bool) else "valueCode"): v}
            for k, v in props.items()
        ]
    return out


CODE_SYSTEMS: list[dict[str, Any]] = [
    {
        "resourceType": "CodeSystem",
        "id": "body",
        "url": BODY,
        "status": "active",
        "content": "complete",
        "property": [
            {"code": "parent", "uri": "http://hl7.org/fhir/concept-properties#parent"},
            {"code": "kids", "uri": "http://hl7.org/fhir/concept-properties#child"},
        ],
        "concept": [
            _concept("A", _concept("A1", _concept("A1a")), _concept("A2")),
            _concept("B"),
            _concept("C", parent="B", colour="red"),
            _concept("D", kids="C"),
            _concept("E", colour="blue", rare=True),
        ],
    },
    {
        "resourceType": "CodeSystem",
        "id": "other",
        "url": OTHER,
        "status": "active",
        "content": "complete",
        "concept": [{"code": "X"}, {"code": "Y"}],
    },
    {
        "resourceType": "CodeSystem",
        "id": "many",
        "url": MANY,
        "status": "active",
        "content": "complete",
        "concept": [{"code": f"M{i}"} for i in range(80)],
    },
    {
        "resourceType": "CodeSystem",
        "id": "absent",
        "url": ABSENT,
        "status": "active",
        "content": "not-present",
    },
]


def _vs(id_: str, compose: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "ValueSet", "id": id_, "url": VS + id_}
    out["status"] = "active"
    if compose is not None:
        out["compose"] = compose
    out.update(extra)
    return out


def _filter(op: str, value: str, prop: str = "concept") -> dict[str, Any]:
    return {"system": BODY, "filter": [{"property": prop, "op": op, "value": value}]}


VALUE_SETS: list[dict[str, Any]] = [
    _vs(
        "concepts",
        {
            "include": [
                {"system": BODY, "concept": [{"code": "A1"}, {"code": "B"}]},
                {"system": LOINC, "concept": [{"code": "8867-4"}]},
            ]
        },
    ),
    _vs("is-a", {"include": [_filter("is-a", "A")]}),
    _vs("descendent-of", {"include": [_filter("descendent-of", "A")]}),
    _vs("is-not-a", {"include": [_filter("is-not-a", "A")]}),
    _vs("generalizes", {"include": [_filter("generalizes", "C")]}),
    _vs("parent-is-b", {"include": [_filter("=", "B", "parent")]}),
    _vs("colour-in", {"include": [_filter("in", "red, blue", "colour")]}),
    _vs("colour-not-in", {"include": [_filter("not-in", "red", "colour")]}),
    _vs("rare-exists", {"include": [_filter("exists", "true", "rare")]}),
    _vs("display-regex", {"include": [_filter("regex", "Concept A.*", "display")]}),
    _vs(
        "two-filters",
        {
            "include": [
                {
                    "system": BODY,
                    "filter": [
                        {"property": "concept", "op": "is-a", "value": "A"},
                        {"property": "concept", "op": "is-not-a", "value": "A1"},
                    ],
                }
            ]
        },
    ),
    _vs("whole-held", {"include": [{"system": OTHER}]}),
    _vs(
        "whole-unheld",
        {
            "include": [{"system": LOINC}],
            "exclude": [{"system": LOINC, "concept": [{"code": "1234-5"}]}],
        },
    ),
    _vs("whole-absent", {"include": [{"system": ABSENT}]}),
    _vs(
        "import",
        {
            "include": [{"valueSet": [VS + "is-a"]}],
            "exclude": [{"system": BODY, "concept": [{"code": "A1a"}]}],
        },
    ),
    _vs("import-both", {"include": [{"valueSet": [VS + "is-a", VS + "concepts"]}]}),
    _vs(
        "import-and-system",
        {
            "include": [
                {
                    "system": BODY,
                    "concept": [{"code": "A"}, {"code": "E"}],
                    "valueSet": [VS + "is-a"],
                }
            ]
        },
    ),
    _vs(
        "expanded",
        {"include": [{"system": OTHER}]},  # ignored: the expansion is complete
        expansion={
            "timestamp": "2020-01-01T00:00:00Z",
            "total": 2,
            "contains": [
                {"system": BODY, "code": "A", "contains": [{"system": BODY, "code": "B"}]}
            ],
        },
    ),
    _vs(
        "partial-expansion",
        {"include": [{"system": OTHER}]},  # used: the expansion is one page of five codes
        expansion={
            "timestamp": "2020-01-01T00:00:00Z",
            "total": 5,
            "contains": [{"system": BODY, "code": "A"}],
        },
    ),
    _vs("many", {"include": [{"system": MANY}]}),
    _vs("cycle-1", {"include": [{"valueSet": [VS + "cycle-2"]}]}),
    _vs("cycle-2", {"include": [{"valueSet": [VS + "cycle-1"]}]}),
    _vs("no-definition"),
    _vs(
        "filter-unheld",
        {
            "include": [
                {"system": LOINC, "filter": [{"property": "concept", "op": "is-a", "value": "1"}]}
            ]
        },
    ),
    _vs(
        "bad-filter",
        {
            "include": [
                {"system": BODY, "filter": [{"property": "concept", "op": "near", "value": "A"}]}
            ]
        },
    ),
    _vs("bad-regex", {"include": [_filter("regex", "(", "display")]}),
    _vs("bad-exists", {"include": [_filter("exists", "maybe", "rare")]}),
    _vs("empty-include", {"include": [{"concept": [{"code": "A"}]}]}),
    _vs("imports-unknown", {"include": [{"valueSet": [VS + "nowhere"]}]}),
    {
        **_vs("versioned-1", {"include": [{"system": BODY, "concept": [{"code": "A"}]}]}),
        "url": VS + "versioned",
        "version": "1",
    },
    {
        **_vs("versioned-2", {"include": [{"system": BODY, "concept": [{"code": "B"}]}]}),
        "url": VS + "versioned",
        "version": "2",
    },
]

ANY_LOINC = "any LOINC code"  # marker: every code of LOINC (not held) except the listed ones
EXPECTED: dict[str, set[Code]] = {
    "concepts": {(BODY, "A1"), (BODY, "B"), (LOINC, "8867-4")},
    "is-a": {(BODY, c) for c in ("A", "A1", "A1a", "A2")},
    "descendent-of": {(BODY, c) for c in ("A1", "A1a", "A2")},
    "is-not-a": {(BODY, c) for c in ("B", "C", "D", "E")},
    "generalizes": {(BODY, c) for c in ("B", "C", "D")},
    "parent-is-b": {(BODY, "C")},
    "colour-in": {(BODY, "C"), (BODY, "E")},
    "colour-not-in": {(BODY, c) for c in ("A", "A1", "A1a", "A2", "B", "D", "E")},
    "rare-exists": {(BODY, "E")},
    "display-regex": {(BODY, c) for c in ("A", "A1", "A1a", "A2")},
    "two-filters": {(BODY, "A"), (BODY, "A2")},
    "whole-held": {(OTHER, "X"), (OTHER, "Y")},
    "import": {(BODY, c) for c in ("A", "A1", "A2")},
    "import-both": {(BODY, "A1")},
    "import-and-system": {(BODY, "A")},
    "expanded": {(BODY, "A"), (BODY, "B")},
    "partial-expansion": {(OTHER, "X"), (OTHER, "Y")},
    "many": {(MANY, f"M{i}") for i in range(80)},
    "versioned|1": {(BODY, "A")},
    "versioned|2": {(BODY, "B")},
}
#: value sets whose expansion is "any code of a system except ...": system -> excluded codes
EXPECTED_OPEN: dict[str, dict[str, set[str]]] = {
    "whole-unheld": {LOINC: {"1234-5"}},
    "whole-absent": {ABSENT: set()},
}


def store_terminology(store: Store) -> None:
    """Write the code systems and value sets above."""
    with store.transaction() as tx:
        for resource in [*CODE_SYSTEMS, *VALUE_SETS]:
            tx.update(resource["resourceType"], resource["id"], dict(resource))
