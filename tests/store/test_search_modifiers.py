"""Search modifiers `:in`, `:not-in`, `:above`, `:below` (token and uri) and `:of-type`: the
SQL conditions run on both databases, compared with matches worked out here in Python."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from terminology_data import (
    BODY,
    EXPECTED,
    EXPECTED_OPEN,
    LOINC,
    MANY,
    OTHER,
    VS,
    Code,
    store_terminology,
)

from carebase.errors import BadRequest, TooCostly
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.base import Store
from carebase.store.search_modifiers import MODIFIERS, modifier_condition, uri_ancestors
from carebase.store.terminology import MAX_CODES, Terminology

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def _coded(*codings: Code, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": s, "code": c} for s, c in codings]}
    if not codings:
        out = {}
    if text:
        out["text"] = text
    return out


#: (type, id, the codes of its `code` element, or None for no `code` element)
CODED: list[tuple[str, str, list[Code] | None]] = [
    ("Observation", "o-a1", [(BODY, "A1")]),
    ("Observation", "o-a1a", [(BODY, "A1a")]),
    ("Observation", "o-b", [(BODY, "B")]),
    ("Observation", "o-c", [(BODY, "C")]),
    ("Observation", "o-e", [(BODY, "E")]),
    ("Observation", "o-x", [(OTHER, "X")]),
    ("Observation", "o-loinc", [(LOINC, "8867-4")]),
    ("Observation", "o-loinc2", [(LOINC, "1234-5")]),
    ("Observation", "o-two", [(BODY, "A2"), (LOINC, "1234-5")]),
    ("Observation", "o-m5", [(MANY, "M5")]),
    ("Observation", "o-m70", [(MANY, "M70")]),
    ("Observation", "o-text", []),  # code.text only
    ("Observation", "o-nosys", [(None, "A")]),  # a coding without a system
    ("Condition", "c-a", [(BODY, "A")]),
    ("Condition", "c-y", [(OTHER, "Y")]),
    ("Condition", "c-none", None),  # no code at all
]


def _resource(type_: str, codes: list[Code] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": type_, "subject": {"reference": "Patient/p"}}
    if type_ == "Observation":
        out["status"] = "final"
    if codes is not None:
        coding = [{"code": c, **({"system": s} if s else {})} for s, c in codes]
        out["code"] = {"coding": coding} if coding else {"text": "free text"}
    return out


@pytest.fixture
def loaded(store: Store) -> Store:
    store_terminology(store)
    with store.transaction() as tx:
        for type_, id_, codes in CODED:
            tx.update(type_, id_, _resource(type_, codes))
    return store


def run(store: Store, type_: str, condition: tuple[str, list[Any]]) -> set[str]:
    sql, args = condition
    query = f"SELECT id FROM resource WHERE deleted = 0 AND type = ? AND {sql}"
    with store._reading() as cur:  # type: ignore[attr-defined]
        rows = cur.execute(store.q(query), [type_, *args]).fetchall()  # type: ignore[attr-defined]
    return {row[0] for row in rows}


def condition(
    store: Store | None, type_: str, name: str, values: list[str]
) -> tuple[str, list[Any]]:
    code, _, modifier = name.partition(":")
    param = get_definitions().search_param(type_, code)
    assert param is not None
    term = Terminology(store) if store is not None else None
    return modifier_condition(type_, param, modifier, values, name, term)


def in_set(codes: list[Code] | None, expected: set[Code], opened: dict[str, set[str]]) -> bool:
    """Whether any code is in the value set (worked out without the SQL or CodeSet)."""
    return any(c in expected or (c[0] in opened and c[1] not in opened[c[0]]) for c in codes or ())


VALUE_SETS = [*EXPECTED, *EXPECTED_OPEN]


@pytest.mark.parametrize("type_", ["Observation", "Condition"])
def test_in_and_not_in_every_value_set(loaded: Store, type_: str) -> None:
    for name in VALUE_SETS:
        expected, opened = EXPECTED.get(name, set()), EXPECTED_OPEN.get(name, {})
        matching = {i for t, i, codes in CODED if t == type_ and in_set(codes, expected, opened)}
        others = {i for t, i, _ in CODED if t == type_} - matching
        assert run(loaded, type_, condition(loaded, type_, "code:in", [VS + name])) == matching
        # :not-in is :not - also resources without a code
        assert run(loaded, type_, condition(loaded, type_, "code:not-in", [VS + name])) == others


def test_in_with_several_value_sets_is_their_union(loaded: Store) -> None:
    values = [VS + "parent-is-b", "ValueSet/whole-held", VS + "concepts"]
    expected = EXPECTED["parent-is-b"] | EXPECTED["whole-held"] | EXPECTED["concepts"]
    want = {i for t, i, c in CODED if t == "Observation" and in_set(c, expected, {})}
    assert want == {"o-c", "o-x", "o-a1", "o-b", "o-loinc"}
    assert run(loaded, "Observation", condition(loaded, "Observation", "code:in", values)) == want


def test_escaped_value_set_url(loaded: Store) -> None:
    with loaded.transaction() as tx:
        tx.update(
            "ValueSet",
            "odd",
            {
                "resourceType": "ValueSet",
                "url": "urn:vs:a,b\\c",
                "status": "active",
                "compose": {"include": [{"system": OTHER}]},
            },
        )
    got = run(
        loaded, "Observation", condition(loaded, "Observation", "code:in", ["urn:vs:a\\,b\\\\c"])
    )
    assert got == {"o-x"}


def test_large_expansions_bind_one_array(loaded: Store) -> None:
    sql, args = condition(loaded, "Observation", "code:in", [VS + "many"])
    assert len(args) < 10  # 80 codes, but one array (PostgreSQL) or JSON list (SQLite)
    assert run(loaded, "Observation", (sql, args)) == {"o-m5", "o-m70"}


def test_token_below_and_above(loaded: Store) -> None:
    cases = [
        ("code:below", [f"{BODY}|A"], {"o-a1", "o-a1a", "o-two"}),
        ("code:below", [f"{BODY}|A1a"], {"o-a1a"}),
        ("code:below", [f"{BODY}|B"], {"o-b", "o-c"}),
        ("code:below", [f"{BODY}|D", f"{OTHER}|X"], {"o-c", "o-x"}),
        ("code:above", [f"{BODY}|A1a"], {"o-a1", "o-a1a"}),  # A is on no Observation
        ("code:above", [f"{BODY}|C"], {"o-b", "o-c"}),  # D neither
        ("code:above", ["A1a"], {"o-a1", "o-a1a"}),  # found in the held CodeSystems
        ("code:below", ["M70"], {"o-m70"}),
    ]
    for name, values, expected in cases:
        assert (
            run(loaded, "Observation", condition(loaded, "Observation", name, values)) == expected
        )
    assert run(
        loaded, "Condition", condition(loaded, "Condition", "code:below", [f"{BODY}|A"])
    ) == {"c-a"}


@pytest.mark.parametrize("modifier", ["in", "not-in", "above", "below"])
def test_terminology_modifiers_need_a_store(modifier: str) -> None:
    with pytest.raises(
        BadRequest, match="needs the value sets and code systems held by the server"
    ) as exc:
        condition(None, "Observation", f"code:{modifier}", [f"{BODY}|A"])
    assert exc.value.issues[0].expression == [f"code:{modifier}"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "code:in",
            VS + "nowhere",
            "Search parameter 'code:in': the value set 'http://example.org/vs/nowhere' is not held",
        ),
        ("code:not-in", VS + "cycle-2", "'code:not-in': the value set .* imports itself"),
        ("code:in", "", "'code:in': value '' is empty"),
        (
            "code:below",
            f"{LOINC}|8867-4",
            "'code:below': the code system 'http://loinc.org' is not held by this server: "
            ":below needs its CodeSystem",
        ),
        (
            "code:above",
            "ZZ",
            "'code:above': no CodeSystem held by this server defines the code 'ZZ'",
        ),
        (
            "code:below",
            f"{BODY}|A|x",
            "value 'http://example.org/cs/body\\|A\\|x' is not a code for :below",
        ),
        ("code:below", "|A", "value '\\|A' is not a code for :below"),
        ("code:below", f"{BODY}|", "is not a code for :below"),
        ("code:below", "", "value '' is empty"),
        (
            "identifier:of-type",
            f"{V2}|MR",
            "is not an identifier type and value .*system\\|code\\|value",
        ),
        (
            "code:of-type",
            f"{V2}|MR|1",
            "':of-type' is only valid for a parameter on Identifier elements",
        ),
        ("identifier:of-type", "|MR|123", "is not an identifier type and value"),
        ("identifier:of-type", f"{V2}||123", "is not an identifier type and value"),
        ("identifier:of-type", f"{V2}|MR|", "is not an identifier type and value"),
        ("identifier:of-type", f"{V2}|MR|1|2", "is not an identifier type and value"),
        ("value-string:in", VS + "is-a", "modifier ':in' is not valid for a string parameter"),
        ("date:below", "2020", "modifier ':below' is not valid for a date parameter"),
        (
            "code:missing",
            "true",
            "modifier ':missing' is not one of above, below, in, not-in, of-type",
        ),
    ],
)
def test_errors_name_the_parameter_and_value(
    loaded: Store, name: str, value: str, message: str
) -> None:
    with pytest.raises(BadRequest, match=message) as exc:
        condition(loaded, "Observation", name, [value])
    assert exc.value.status == 400
    assert exc.value.issues[0].expression == [name]


def test_too_costly_expansion_names_the_parameter(loaded: Store) -> None:
    with loaded.transaction() as tx:
        tx.update(
            "ValueSet",
            "huge",
            {
                "resourceType": "ValueSet",
                "url": "urn:vs:huge",
                "status": "active",
                "expansion": {
                    "timestamp": "2020-01-01",
                    "contains": [{"system": "urn:s", "code": str(i)} for i in range(MAX_CODES + 1)],
                },
            },
        )
    with pytest.raises(
        TooCostly, match="Search parameter 'code:in': The expansion has more"
    ) as exc:
        condition(loaded, "Observation", "code:in", ["urn:vs:huge"])
    assert exc.value.status == 422 and exc.value.issues[0].expression == ["code:in"]


def test_modifiers_cover_what_the_module_says() -> None:
    assert {"in", "not-in", "above", "below", "of-type"} == MODIFIERS


# ----------------------------------------------------------------------- uri


URIS = {
    "u1": "http://acme.org/fhir/",
    "u2": "http://acme.org/fhir/ValueSet/123",
    "u3": "http://acme.org/fhir/ValueSet/1234",
    "u4": "http://acme.org/fhir/ValueSet/123/_history/5",
    "u5": "http://acme.org/fhirx",
    "u6": "http://ACME.org/fhir/ValueSet/123",
    "u7": "http://acme.org",
    "u8": "urn:oid:1.2.3",
    "u9": "http://acme.org/fhir/ValueSet/12%_3",
    "u10": "http://acme.org/fhir/ValueSet/123|2.0",
    "u11": "http://acme.org/fhir/ValueSet/123|1.0",
}


def _above(stored: str, value: str) -> bool:
    """`stored` is `value` or its prefix ending at a path boundary (not inside the scheme)."""
    if stored == value:
        return True
    url = value.split("|")[0]
    if not url.startswith(stored) or len(stored) <= url.find("://") + 3:
        return False
    return stored == url or stored.endswith("/") or url[len(stored)] == "/"


@pytest.fixture
def with_uris(store: Store) -> Store:
    with store.transaction() as tx:
        for id_, url in URIS.items():
            tx.update("ValueSet", id_, {"resourceType": "ValueSet", "url": url, "status": "active"})
    return store


@pytest.mark.parametrize(
    "value",
    [
        "http://acme.org/fhir/ValueSet/123/_history/5",
        "http://acme.org/fhir/ValueSet/123",
        "http://acme.org/fhir/ValueSet/123|2.0",
        "http://acme.org/fhir/ValueSet/12%_3/x",
        "http://acme.org/fhirx/y",
        "urn:oid:1.2.3",
    ],
)
def test_uri_above_and_below(with_uris: Store, value: str) -> None:
    escaped = value  # these values hold no `,` `\`; a `|` is the canonical's version
    above = run(with_uris, "ValueSet", condition(with_uris, "ValueSet", "url:above", [escaped]))
    assert above == {i for i, u in URIS.items() if _above(u, value)}
    below = run(with_uris, "ValueSet", condition(with_uris, "ValueSet", "url:below", [escaped]))
    assert below == {i for i, u in URIS.items() if u.startswith(value)}


def test_uri_examples_from_the_spec(with_uris: Store) -> None:
    got = run(
        with_uris,
        "ValueSet",
        condition(
            with_uris, "ValueSet", "url:above", ["http://acme.org/fhir/ValueSet/123/_history/5"]
        ),
    )
    assert got == {"u1", "u2", "u4", "u7"}  # not 1234, fhirx, nor the upper-case host
    below = condition(with_uris, "ValueSet", "url:below", ["http://acme.org/fhir/ValueSet/12%"])
    assert run(with_uris, "ValueSet", below) == {"u9"}  # % is no wildcard
    versioned = condition(
        with_uris, "ValueSet", "url:above", ["http://acme.org/fhir/ValueSet/123|2.0"]
    )
    assert run(with_uris, "ValueSet", versioned) == {"u1", "u2", "u7", "u10"}
    both = condition(with_uris, "ValueSet", "url:below", ["urn:oid:", "http://ACME"])
    assert run(with_uris, "ValueSet", both) == {"u6", "u8"}
    escaped = condition(
        with_uris, "ValueSet", "url:above", ["http://acme.org/fhir/ValueSet/123\\|1.0"]
    )
    # an escaped | is part of the uri: no version, and the uri's path prefixes are above it
    assert run(with_uris, "ValueSet", escaped) == {"u1", "u7", "u11"}


def test_uri_ancestors() -> None:
    assert uri_ancestors("http://a.org/b/c") == [
        "http://a.org/b/c",
        "http://a.org/",
        "http://a.org",
        "http://a.org/b/",
        "http://a.org/b",
    ]
    assert uri_ancestors("urn:oid:1.2") == ["urn:oid:1.2"]
    assert uri_ancestors("/relative/x") == ["/relative/x", "/", "/relative/", "/relative"]


def test_uri_errors_name_the_parameter() -> None:
    for value, message in [("a|b|c", "has more than one '\\|'"), ("", "is empty")]:
        with pytest.raises(BadRequest, match=message) as exc:
            condition(None, "ValueSet", "url:below", [value])
        assert exc.value.issues[0].expression == ["url:below"]


# ----------------------------------------------------------------------- :of-type


def _identifier(
    value: str | None, *codings: tuple[str | None, str], text: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"system": "urn:ids"}
    if value is not None:
        out["value"] = value
    kind: dict[str, Any] = {}
    if codings:
        kind["coding"] = [{"code": c, **({"system": s} if s else {})} for s, c in codings]
    if text:
        kind["text"] = text
    if kind:
        out["type"] = kind
    return out


PATIENTS = {
    "pa": [_identifier("123", (V2, "MR"))],
    "pb": [_identifier("456", (V2, "MR"), ("urn:t", "X"))],
    "pc": [_identifier("123", text="MR")],  # a type without codings
    "pd": [_identifier(None, (V2, "MR"))],  # no value
    "pe": [_identifier("123", (V2, "SS")), _identifier("9", (V2, "MR"))],
    "pf": [_identifier("a|b,c", (V2, "MR"))],
    "pg": [],
}


def _of_type(patient: str, system: str, code: str, value: str) -> bool:
    for ident in PATIENTS[patient]:
        codings = ident.get("type", {}).get("coding", [])
        if ident.get("value") == value and any(
            c.get("system") == system and c["code"] == code for c in codings
        ):
            return True
    return False


@pytest.mark.parametrize(
    "values",
    [
        [(V2, "MR", "123")],
        [(V2, "MR", "456")],
        [("urn:t", "X", "456")],
        [(V2, "SS", "123"), (V2, "MR", "123")],
        [(V2, "MR", "9")],
        [(V2, "SS", "9")],
        [(V2, "MR", "a|b,c")],
        [(V2, "mr", "123")],  # codes are case-sensitive
    ],
)
def test_of_type(store: Store, values: list[tuple[str, str, str]]) -> None:
    with store.transaction() as tx:
        for id_, identifiers in PATIENTS.items():
            tx.update("Patient", id_, {"resourceType": "Patient", "identifier": identifiers})
    escape = lambda t: t.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,")  # noqa: E731
    raw = ["|".join(escape(p) for p in v) for v in values]
    got = run(store, "Patient", condition(None, "Patient", "identifier:of-type", raw))
    assert got == {p for p in PATIENTS if any(_of_type(p, *v) for v in values)}


# ----------------------------------------------------------------------- on Synthea data


def _synthea(store: Store, synthea_tar: Path, bundles: int = 3) -> dict[str, dict[str, Any]]:
    """Patients, Observations and Conditions of the first patient Bundles, stored by id."""
    stored: dict[str, dict[str, Any]] = {}
    with tarfile.open(synthea_tar) as tar:
        members = [m for m in tar if m.isfile() and Path(m.name).name[0].isupper()]
        for member in members[:bundles]:
            extracted = tar.extractfile(member)
            assert extracted is not None
            with store.transaction() as tx:
                for entry in orjson.loads(extracted.read())["entry"]:
                    resource = entry["resource"]
                    if resource["resourceType"] in ("Patient", "Observation", "Condition"):
                        tx.update(resource["resourceType"], resource["id"], resource)
                        stored[resource["id"]] = resource
    return stored


def _codings(resource: dict[str, Any]) -> set[Code]:
    return {(c.get("system"), c["code"]) for c in resource.get("code", {}).get("coding", ())}


def test_synthea_of_type_in_and_below(store: Store, synthea_tar: Path) -> None:
    stored = _synthea(store, synthea_tar)
    patients = {i: r for i, r in stored.items() if r["resourceType"] == "Patient"}
    typed = [
        (c["system"], c["code"], ident["value"])
        for p in patients.values()
        for ident in p["identifier"]
        for c in ident.get("type", {}).get("coding", ())
    ]
    assert {"MR", "SS", "DL"} <= {t[1] for t in typed}
    for system, code, value in typed:
        want = {
            i
            for i, p in patients.items()
            for ident in p["identifier"]
            if ident["value"] == value
            and any(
                (c["system"], c["code"]) == (system, code)
                for c in ident.get("type", {}).get("coding", ())
            )
        }
        raw = f"{system}|{code}|{value}"
        assert (
            run(store, "Patient", condition(None, "Patient", "identifier:of-type", [raw])) == want
        )

    # a value set and a small SNOMED hierarchy made of codes found in the data
    conditions = {i: r for i, r in stored.items() if r["resourceType"] == "Condition"}
    observations = {i: r for i, r in stored.items() if r["resourceType"] == "Observation"}
    snomed = "http://snomed.info/sct"
    found = sorted({c for r in conditions.values() for s, c in _codings(r) if s == snomed})
    loinc = sorted({c for r in observations.values() for s, c in _codings(r) if s == LOINC})
    assert len(found) >= 3 and len(loinc) >= 3
    chosen = {(LOINC, c) for c in loinc[::3]}
    root, kids = found[0], found[1:3]
    with store.transaction() as tx:
        tx.update(
            "ValueSet",
            "labs",
            {
                "resourceType": "ValueSet",
                "url": "urn:vs:labs",
                "status": "active",
                "compose": {
                    "include": [{"system": LOINC, "concept": [{"code": c} for _, c in chosen]}]
                },
            },
        )
        tx.update(
            "CodeSystem",
            "snomed-part",
            {
                "resourceType": "CodeSystem",
                "url": snomed,
                "status": "active",
                "content": "fragment",
                "concept": [{"code": root, "concept": [{"code": k} for k in kids]}],
            },
        )
    in_labs = {i for i, r in observations.items() if _codings(r) & chosen}
    assert in_labs and in_labs != set(observations)
    got = run(store, "Observation", condition(store, "Observation", "code:in", ["urn:vs:labs"]))
    assert got == in_labs
    got = run(store, "Observation", condition(store, "Observation", "code:not-in", ["urn:vs:labs"]))
    assert got == set(observations) - in_labs
    below = {(snomed, c) for c in [root, *kids]}
    want = {i for i, r in conditions.items() if _codings(r) & below}
    assert want
    got = run(store, "Condition", condition(store, "Condition", "code:below", [f"{snomed}|{root}"]))
    assert got == want
