"""Pure Bundle helpers: parsing, processing order, URL parsing and reference rewriting."""

from __future__ import annotations

import pytest

from carebase.errors import BadRequest
from carebase.fhir.bundle import (
    full_url_aliases,
    parse_bundle,
    parse_request_url,
    processing_order,
    rewrite_references,
)


def _entry(method: str, url: str, **extra: object) -> dict[str, object]:
    return {"request": {"method": method, "url": url}, **extra}


def test_parse_request_url_shapes() -> None:
    u = parse_request_url("Patient/1/_history/2")
    assert (u.type, u.id, u.history, u.version) == ("Patient", "1", True, "2")
    u = parse_request_url("Patient?identifier=a|b&name=x")
    assert u.type == "Patient" and u.id is None and u.has_query
    assert u.query == [("identifier", "a|b"), ("name", "x")]
    assert parse_request_url("Patient/$validate").operation == "$validate"
    assert parse_request_url("Patient/_history").history
    assert parse_request_url("_history").operation == "_history"
    u = parse_request_url("http://example.org/fhir/Observation/5", "http://example.org/fhir")
    assert (u.type, u.id) == ("Observation", "5")
    u = parse_request_url("https://other/fhir/Observation/5")
    assert (u.type, u.id) == ("Observation", "5")
    with pytest.raises(BadRequest, match="another server"):
        parse_request_url("https://other/fhir/Observation/5", "http://example.org/fhir")
    with pytest.raises(BadRequest):
        parse_request_url("Patient/1/_history/2/extra")


def test_parse_bundle_checks_entries() -> None:
    kind, entries = parse_bundle(
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [_entry("GET", "Patient/1"), _entry("DELETE", "Patient?x=y")],
        }
    )
    assert kind == "batch"
    assert [e.index for e in entries] == [0, 1]
    assert entries[0].location == "Bundle.entry[0]"
    with pytest.raises(BadRequest, match="transaction"):
        parse_bundle({"resourceType": "Bundle", "type": "collection"})
    with pytest.raises(BadRequest) as info:
        parse_bundle({"resourceType": "Bundle", "type": "batch", "entry": [_entry("FETCH", "x")]})
    assert info.value.issues[0].expression == ["Bundle.entry[0].request.method"]
    with pytest.raises(BadRequest, match="resource is required"):
        parse_bundle(
            {"resourceType": "Bundle", "type": "batch", "entry": [_entry("POST", "Patient")]}
        )
    with pytest.raises(BadRequest):
        parse_bundle({"resourceType": "Patient"})


def test_processing_order_is_stable() -> None:
    raw = [
        _entry("GET", "Patient/1"),
        _entry("PUT", "Patient/2", resource={"resourceType": "Patient", "id": "2"}),
        _entry("POST", "Patient", resource={"resourceType": "Patient"}),
        _entry("DELETE", "Patient/3"),
        _entry("PATCH", "Patient/4", resource={"resourceType": "Parameters"}),
        _entry("DELETE", "Patient/5"),
        _entry("HEAD", "Patient/6"),
    ]
    _, entries = parse_bundle({"resourceType": "Bundle", "type": "transaction", "entry": raw})
    order = [e.index for e in processing_order(entries)]
    assert order == [3, 5, 2, 1, 4, 0, 6]


def test_rewrite_references_everywhere() -> None:
    urn = "urn:uuid:0b6b1f1a-7d9e-4c55-9c89-2d0c2b0c1a11"
    resource = {
        "resourceType": "Observation",
        "subject": {"reference": urn},
        "contained": [{"resourceType": "Provenance", "target": [{"reference": urn}]}],
        "extension": [{"url": "x", "valueReference": {"reference": urn}}],
        "derivedFrom": [{"reference": "Patient/keep"}],
        "text": {"div": f"<div><a href=\"{urn}\">x</a><img src='{urn}'/> {urn}</div>"},
        "focus": [{"reference": "Patient?identifier=a|b"}],
    }
    mapping = {urn: "Patient/new", "Patient?identifier=a|b": "Patient/77"}
    assert rewrite_references(resource, mapping) == 5
    assert resource["subject"] == {"reference": "Patient/new"}
    assert resource["contained"][0]["target"][0]["reference"] == "Patient/new"  # type: ignore[index]
    assert resource["extension"][0]["valueReference"]["reference"] == "Patient/new"  # type: ignore[index]
    assert resource["derivedFrom"] == [{"reference": "Patient/keep"}]
    div = resource["text"]["div"]  # type: ignore[index]
    assert 'href="Patient/new"' in div and "src='Patient/new'" in div
    assert div.endswith(f" {urn}</div>")  # plain text is not a reference
    assert resource["focus"] == [{"reference": "Patient/77"}]


def test_conditional_references_and_aliases() -> None:
    res = {
        "resourceType": "Observation",
        "subject": {"reference": "Patient?identifier=http://mrn|1"},
        "performer": [{"reference": "Practitioner/1"}],
        "note": [{"text": "Patient?x=y"}],
    }
    seen: list[str] = []

    def resolve(ref: str) -> str:
        seen.append(ref)
        return "Patient/42"

    assert rewrite_references(res, {}, resolve) == 1
    assert seen == ["Patient?identifier=http://mrn|1"]
    assert res["subject"] == {"reference": "Patient/42"}
    assert res["note"] == [{"text": "Patient?x=y"}]  # not a reference: left alone
    assert full_url_aliases("urn:uuid:abc") == ["urn:uuid:abc"]
    assert full_url_aliases("http://x.org/fhir/Patient/12") == [
        "http://x.org/fhir/Patient/12",
        "Patient/12",
    ]
