"""Very long indexed values (40,000 characters) on both databases: they are stored capped by
`index_values.index_text` (PostgreSQL refuses btree entries over ~2.7 kB), and every
equality search applies the same cap, so it finds exactly the resource holding the value and
never a "twin" whose value differs only in its last character."""

from __future__ import annotations

import random
from typing import Any

import pytest

from carebase.store.base import Store
from carebase.store.index_values import (
    CAP_PREFIX_BYTES,
    CAP_SEPARATOR,
    INDEX_TEXT_BYTES,
    index_text,
)

N = 40_000
_RANDOM = random.Random(4)
#: Random, so PostgreSQL cannot compress it under its btree limit (it compresses index
#: entries, and a repetitive 40 kB text fits). No `,`, `|`, `$` or `\\` (they go into search
#: parameters unescaped) and no hex digit (no text of them can look like part of a digest).
BASE = "".join(_RANDOM.choices("ghijklmnopqrstuvwxyz", k=N - 1))
ONE, TWIN = BASE + "y", BASE + "z"
#: multi-byte: 40,000 characters, about 110,000 UTF-8 bytes
WIDE = "".join(_RANDOM.choices("€жπ漢字ßé", k=N - 1))
SYSTEM = "http://example.org/" + BASE
V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
URL = "http://example.org/ValueSet/" + BASE


def _create(store: Store, type_: str, resource: dict[str, Any], id_: str) -> None:
    with store.transaction() as tx:
        tx.create(type_, resource, id_)


def _ids(store: Store, type_: str, params: list[tuple[str, str]]) -> list[str]:
    return sorted(r.id for r in store.search(type_, params, count=50).entries)


def test_index_text_keeps_short_values_and_caps_long_ones_distinctly() -> None:
    assert index_text("abc") == "abc"
    at_limit = "é" * (INDEX_TEXT_BYTES // 2)  # exactly INDEX_TEXT_BYTES bytes
    assert index_text(at_limit) is at_limit
    for long in (ONE, WIDE + "a", "😀" * 300, "a" * (INDEX_TEXT_BYTES + 1)):
        capped = index_text(long)
        size = len(capped.encode())
        # longer than any value kept whole, so a short value never equals a capped one
        assert INDEX_TEXT_BYTES < size <= INDEX_TEXT_BYTES + 4
        assert long.startswith(capped.split(CAP_SEPARATOR)[0])
        assert len(capped.split(CAP_SEPARATOR)[0].encode()) >= CAP_PREFIX_BYTES
        assert index_text(capped) != capped  # capping is not idempotent: it is exact
    assert index_text(ONE) != index_text(TWIN)
    assert index_text(ONE) == index_text(BASE + "y")


def _patient(system: str, value: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}]}


def _obs(code: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        **extra,
    }


def test_long_tokens(store: Store) -> None:
    _create(store, "Patient", _patient(SYSTEM + "y", "1"), id_="one")
    _create(store, "Patient", _patient(SYSTEM + "z", "1"), id_="twin")
    _create(store, "Patient", _patient("http://short", WIDE + "a"), id_="wide")
    _create(store, "Patient", _patient("http://short", WIDE + "b"), id_="wide-twin")
    assert _ids(store, "Patient", [("identifier", f"{SYSTEM}y|1")]) == ["one"]
    assert _ids(store, "Patient", [("identifier", f"{SYSTEM}z|")]) == ["twin"]
    assert _ids(store, "Patient", [("identifier", f"{SYSTEM}x|1")]) == []
    assert _ids(store, "Patient", [("identifier", f"http://short|{WIDE}a")]) == ["wide"]
    assert _ids(store, "Patient", [("identifier", WIDE + "b")]) == ["wide-twin"]
    _create(store, "Observation", _obs(ONE), id_="o1")
    _create(store, "Observation", _obs(TWIN), id_="o2")
    assert _ids(store, "Observation", [("code", ONE)]) == ["o1"]
    assert _ids(store, "Observation", [("code", f"http://loinc.org|{TWIN}")]) == ["o2"]
    typed = {
        "resourceType": "Patient",
        "identifier": [
            {
                "system": "http://mrn",
                "type": {"coding": [{"system": V2, "code": "MR"}]},
                "value": ONE,
            }
        ],
    }
    _create(store, "Patient", typed, id_="typed")
    assert _ids(store, "Patient", [("identifier:of-type", f"{V2}|MR|{ONE}")]) == ["typed"]
    assert _ids(store, "Patient", [("identifier:of-type", f"{V2}|MR|{TWIN}")]) == []


def test_long_strings(store: Store) -> None:
    _create(store, "Observation", _obs("1", valueString=ONE), id_="one")
    _create(store, "Observation", _obs("1", valueString=TWIN), id_="twin")
    _create(store, "Observation", _obs("1", valueString=BASE[:12]), id_="short")

    def found(value: str, modifier: str = "") -> list[str]:
        return _ids(store, "Observation", [(f"value-string{modifier}", value)])

    assert found(ONE, ":exact") == ["one"]
    assert found(TWIN.upper(), ":exact") == []
    assert found(TWIN) == ["twin"]  # a long prefix query still finds the equal value
    assert found(TWIN.upper()) == ["twin"]  # ... compared in normalised form
    assert found(BASE[:500]) == ["one", "twin"]  # within the stored prefix: a real prefix
    assert found(BASE[:10]) == ["one", "short", "twin"]
    assert found(BASE[:12] + "y") == []
    assert found(BASE[3:9], ":contains") == ["one", "short", "twin"]
    # documented limits: past the stored prefix a capped value is known only as a whole
    assert found(BASE[:5000]) == []
    assert found(BASE[-30:] + "y", ":contains") == []
    # the digest of a capped value is not text of the value
    digest = index_text(ONE).split(CAP_SEPARATOR)[1]
    assert found(digest, ":contains") == []
    assert found(digest[:6], ":contains") == []


def test_long_uris(store: Store) -> None:
    for id_, url in (("one", URL + "y"), ("twin", URL + "z")):
        _create(
            store, "ValueSet", {"resourceType": "ValueSet", "status": "active", "url": url}, id_
        )
    assert _ids(store, "ValueSet", [("url", URL + "y")]) == ["one"]
    assert _ids(store, "ValueSet", [("url", URL + "x")]) == []
    assert _ids(store, "ValueSet", [("url:above", URL + "z")]) == ["twin"]
    assert _ids(store, "ValueSet", [("url:below", URL[:300])]) == ["one", "twin"]
    assert _ids(store, "ValueSet", [("url:below", URL + "y")]) == ["one"]


def test_long_references(store: Store) -> None:
    far = "http://elsewhere.example/fhir/Patient/" + BASE
    _create(store, "Observation", _obs("1", subject={"reference": far + "y"}), id_="url")
    _create(store, "Observation", _obs("1", subject={"reference": far + "z"}), id_="url-twin")
    _create(store, "Observation", _obs("1", subject={"reference": "Patient/" + ONE}), id_="local")
    _create(store, "Observation", _obs("1", subject={"reference": "Patient/" + TWIN}), id_="loc2")
    assert _ids(store, "Observation", [("subject", far + "y")]) == ["url"]
    assert _ids(store, "Observation", [("subject", "Patient/" + ONE)]) == ["local"]
    assert _ids(store, "Observation", [("subject:Patient", TWIN)]) == ["loc2"]
    assert _ids(store, "Observation", [("subject", "Patient/" + BASE)]) == []


def test_long_composite_components(store: Store) -> None:
    _create(store, "Observation", _obs("1234-5", valueString=ONE), id_="one")
    _create(store, "Observation", _obs("1234-5", valueString=TWIN), id_="twin")
    quantity = {"value": 5, "system": "http://unitsofmeasure.org", "code": "mg"}
    _create(store, "Observation", _obs(ONE, valueQuantity=quantity), id_="q")
    _create(store, "Observation", _obs(TWIN, valueQuantity=quantity), id_="q-twin")

    def found(param: str, value: str) -> list[str]:
        return _ids(store, "Observation", [(param, value)])

    assert found("code-value-string", f"http://loinc.org|1234-5${ONE}") == ["one"]
    assert found("code-value-string", f"1234-5${TWIN}") == ["twin"]
    assert found("code-value-string", f"1234-5${BASE}") == []
    assert found("code-value-quantity", f"http://loinc.org|{ONE}$5") == ["q"]
    assert found("code-value-quantity", f"{TWIN}$gt4") == ["q-twin"]


def test_long_quantity_units(store: Store) -> None:
    for id_, code in (("one", ONE), ("twin", TWIN)):
        quantity = {"value": 5, "system": "http://example.org/units", "code": code}
        _create(store, "Observation", _obs("1", valueQuantity=quantity), id_=id_)
    assert _ids(
        store, "Observation", [("value-quantity", f"5|http://example.org/units|{ONE}")]
    ) == ["one"]
    assert _ids(store, "Observation", [("value-quantity", f"5||{TWIN}")]) == ["twin"]


@pytest.mark.parametrize("value", [ONE, WIDE])
def test_capped_rows_fit_a_btree_entry(store: Store, value: str) -> None:
    """What PostgreSQL refused before: every index row stays under its btree entry limit."""
    _create(store, "Patient", _patient(value, value), id_="p")
    with store.reading() as cur:  # type: ignore[attr-defined]
        rows = cur.execute("SELECT system, code FROM idx_token").fetchall()
    assert rows
    assert all(len(c.encode()) <= INDEX_TEXT_BYTES + 4 for row in rows for c in row if c)
