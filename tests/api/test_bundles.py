"""Transaction and batch Bundles over HTTP: atomicity, ordering, reference resolution."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from api_helpers import BASE, FHIR_JSON, create, issue_text, observation, patient

from carebase.api import interactions
from carebase.store.base import Store

pytestmark = pytest.mark.asyncio


def entry(method: str, url: str, resource: dict[str, Any] | None = None, **extra: Any) -> dict:
    item: dict[str, Any] = {"request": {"method": method, "url": url}}
    if resource is not None:
        item["resource"] = resource
    for key in ("fullUrl",):
        if key in extra:
            item[key] = extra.pop(key)
    item["request"].update(extra)
    return item


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


async def post(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post("/fhir", json=body, headers={**FHIR_JSON, **headers})


async def test_transaction_resolves_urn_uuid_everywhere(
    client: httpx.AsyncClient, store: Store
) -> None:
    pat_urn = "urn:uuid:11111111-2222-4333-8444-555555555555"
    obs = observation(pat_urn)
    obs["contained"] = [
        {
            "resourceType": "Provenance",
            "id": "prov",
            "recorded": "2024-01-01T00:00:00Z",
            "target": [{"reference": pat_urn}],
            "agent": [{"who": {"reference": pat_urn}}],
        }
    ]
    obs["extension"] = [{"url": "http://example.org/ext", "valueReference": {"reference": pat_urn}}]
    obs["text"] = {
        "status": "generated",
        "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{pat_urn}">patient</a></div>',
    }
    body = bundle(
        "transaction",
        entry("POST", "Observation", obs, fullUrl="urn:uuid:aaaaaaaa-2222-4333-8444-555555555555"),
        entry("POST", "Patient", patient(), fullUrl=pat_urn),
    )
    r = await post(client, body)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["type"] == "transaction-response"
    obs_resp, pat_resp = result["entry"]  # original order, though Patient ran first
    assert obs_resp["response"]["status"] == "201 Created"
    pid = pat_resp["resource"]["id"]
    assert pat_resp["response"]["location"] == f"{BASE}/Patient/{pid}/_history/1"
    assert pat_resp["response"]["etag"] == 'W/"1"'
    assert pat_resp["response"]["lastModified"].endswith("Z")
    stored = (await client.get(f"/fhir/Observation/{obs_resp['resource']['id']}")).json()
    ref = f"Patient/{pid}"
    assert stored["subject"]["reference"] == ref
    assert stored["contained"][0]["target"][0]["reference"] == ref
    assert stored["contained"][0]["agent"][0]["who"]["reference"] == ref
    assert stored["extension"][0]["valueReference"]["reference"] == ref
    assert f'href="{ref}"' in stored["text"]["div"]
    assert "urn:uuid" not in str(stored)
    search = await client.get("/fhir/Observation", params={"subject": ref})
    assert search.json()["total"] == 1


async def test_transaction_conditional_references(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient(identifier=[{"system": "http://mrn", "value": "9"}])))["id"]
    body = bundle(
        "transaction", entry("POST", "Observation", observation("Patient?identifier=http://mrn|9"))
    )
    r = await post(client, body)
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    missing = bundle(
        "transaction", entry("POST", "Observation", observation("Patient?identifier=http://mrn|0"))
    )
    r = await post(client, missing)
    assert r.status_code == 412
    assert "Bundle.entry[0]" in issue_text(r)
    await create(client, patient(identifier=[{"system": "http://mrn", "value": "9"}]))
    r = await post(client, body)
    assert r.status_code == 412
    assert "more than one" in issue_text(r)


async def test_transaction_order_and_conditionals(client: httpx.AsyncClient) -> None:
    doomed = (await create(client, patient("Doomed")))["id"]
    existing = await create(client, patient(identifier=[{"system": "s", "value": "e"}]))
    body = bundle(
        "transaction",
        entry("GET", f"Patient/{doomed}"),
        entry("PUT", "Patient/fixed", patient("Fixed", id="fixed")),
        entry("POST", "Patient", patient("Dup"), ifNoneExist="identifier=s|e"),
        entry("DELETE", f"Patient/{doomed}"),
        entry(
            "PUT", "Patient?identifier=s|new", patient(identifier=[{"system": "s", "value": "new"}])
        ),
    )
    r = await post(client, body)
    assert r.status_code == 200, r.text
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    # the GET ran after the DELETE, as the spec's processing order demands
    assert statuses == ["410 Gone", "201 Created", "200 OK", "200 OK", "201 Created"]
    assert r.json()["entry"][2]["resource"]["id"] == existing["id"]
    assert (await client.get("/fhir/Patient/fixed")).status_code == 200
    assert (await client.get("/fhir/Patient", params={"identifier": "s|new"})).json()["total"] == 1


async def test_transaction_error_rolls_back_and_names_entry(
    client: httpx.AsyncClient, store: Store
) -> None:
    body = bundle(
        "transaction",
        entry("POST", "Patient", patient("Kept?")),
        entry("PUT", "Patient/a", patient(id="b")),
    )
    r = await post(client, body)
    assert r.status_code == 400
    assert "Bundle.entry[1]" in issue_text(r)
    assert list(store.iter_current("Patient")) == []
    invalid = bundle(
        "transaction",
        entry("POST", "Patient", patient()),
        entry("POST", "Patient", {"resourceType": "Patient", "gender": "robot"}),
    )
    r = await post(client, invalid)
    assert r.status_code == 400
    assert any(
        e.startswith("Bundle.entry[1].resource") for i in r.json()["issue"] for e in i["expression"]
    )
    assert list(store.iter_current("Patient")) == []


async def test_transaction_duplicates_rejected(client: httpx.AsyncClient) -> None:
    same_id = bundle(
        "transaction",
        entry("PUT", "Patient/x", patient(id="x")),
        entry("PUT", "Patient/x", patient("Other", id="x")),
    )
    r = await post(client, same_id)
    assert r.status_code == 400
    assert "only once" in issue_text(r)
    urn = "urn:uuid:11111111-2222-4333-8444-000000000000"
    same_full_url = bundle(
        "transaction",
        entry("POST", "Patient", patient(), fullUrl=urn),
        entry("POST", "Patient", patient(), fullUrl=urn),
    )
    r = await post(client, same_full_url)
    assert r.status_code == 400
    assert "fullUrl" in issue_text(r)


async def test_transaction_1000_entries_fault_at_900_leaves_nothing(
    client: httpx.AsyncClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real_create = interactions.create

    def flaky_create(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 900:
            raise RuntimeError("disk on fire at entry 900")
        return real_create(*args, **kwargs)

    monkeypatch.setattr(interactions, "create", flaky_create)
    entries = [entry("POST", "Patient", patient(f"N{i}")) for i in range(1000)]
    r = await post(client, bundle("transaction", *entries))
    assert r.status_code == 500
    assert "disk on fire" not in r.text
    assert calls["n"] == 900
    assert list(store.iter_current()) == []
    assert store.history(count=5).entries == []

    monkeypatch.setattr(interactions, "create", real_create)
    r = await post(client, bundle("transaction", *entries))
    assert r.status_code == 200
    assert len(list(store.iter_current("Patient"))) == 1000


async def test_batch_entries_are_independent(client: httpx.AsyncClient, store: Store) -> None:
    pid = (await create(client, patient()))["id"]
    body = bundle(
        "batch",
        entry("POST", "Patient", patient("Good")),
        entry("POST", "Patient", {"resourceType": "Patient", "gender": "robot"}),
        entry("GET", f"Patient/{pid}"),
        entry("GET", "Patient/missing"),
        entry("PUT", "Patient/a", patient(id="b")),
        entry("POST", "Nope", {"resourceType": "Nope"}),
        entry("GET", "Patient?family=Good"),
    )
    r = await post(client, body)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "200 OK", "404 Not Found",
                        "400 Bad Request", "404 Not Found", "200 OK"]  # fmt: skip
    failed = result["entry"][1]["response"]["outcome"]
    assert failed["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[1]" in failed["issue"][0]["diagnostics"]
    assert result["entry"][2]["resource"]["id"] == pid
    assert result["entry"][6]["resource"]["type"] == "searchset"
    assert len(list(store.iter_current("Patient"))) == 2


async def test_bundle_endpoint_rules(client: httpx.AsyncClient) -> None:
    collection = {"resourceType": "Bundle", "type": "collection"}
    r = await post(client, collection)
    assert r.status_code == 400
    assert "[base]/Bundle" in issue_text(r)
    stored = await client.post("/fhir/Bundle", json=collection, headers=FHIR_JSON)
    assert stored.status_code == 201
    r = await post(client, patient())
    assert r.status_code == 400
    r = await post(client, {"resourceType": "Bundle", "type": "transaction", "entry": [{}]})
    assert r.status_code == 400
    assert "Bundle.entry[0].request" in issue_text(r)


async def test_transaction_prefer_minimal_and_patch(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient()))["id"]
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": "Patient.name[0].family"},
                    {"name": "value", "valueString": "Patched"},
                ],
            }
        ],
    }
    body = bundle(
        "transaction",
        entry("PATCH", f"Patient/{pid}", params),
        entry("POST", "Patient", patient()),
    )
    r = await post(client, body, Prefer="return=minimal")
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert all("resource" not in e for e in entries)
    assert entries[0]["response"]["etag"] == 'W/"2"'
    got = await client.get(f"/fhir/Patient/{pid}")
    assert got.json()["name"][0]["family"] == "Patched"


async def test_transaction_absolute_full_urls_and_prefer_outcome(client: httpx.AsyncClient) -> None:
    body = bundle(
        "transaction",
        entry(
            "PUT",
            "Patient/abs",
            patient(id="abs"),
            fullUrl="http://elsewhere.org/fhir/Patient/abs",
        ),
        entry(
            "POST",
            "Observation",
            observation("http://elsewhere.org/fhir/Patient/abs"),
            fullUrl="http://elsewhere.org/fhir/Observation/tmp1",
        ),
        entry(
            "POST",
            "Observation",
            observation("Patient/abs", derivedFrom=[{"reference": "Observation/tmp1"}]),
        ),
    )
    r = await post(client, body, Prefer="return=OperationOutcome")
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert all(e["response"]["outcome"]["resourceType"] == "OperationOutcome" for e in entries)
    assert all("resource" not in e for e in entries)
    first_obs = entries[1]["response"]["location"].split("/")[-3]
    second = entries[2]["response"]["location"].split("/_history")[0].replace(BASE, "/fhir")
    stored = (await client.get(second)).json()
    assert stored["derivedFrom"][0]["reference"] == f"Observation/{first_obs}"
    obs = (await client.get(f"/fhir/Observation/{first_obs}")).json()
    assert obs["subject"]["reference"] == "Patient/abs"


async def test_batch_unexpected_error_stays_in_its_entry(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_update = interactions.update

    def flaky_update(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("hidden")

    monkeypatch.setattr(interactions, "update", flaky_update)
    body = bundle(
        "batch",
        entry("PUT", "Patient/u", patient(id="u")),
        entry("POST", "Patient", patient()),
    )
    r = await post(client, body)
    assert r.status_code == 200
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses == ["500 Internal Server Error", "201 Created"]
    assert "hidden" not in r.text
    monkeypatch.setattr(interactions, "update", real_update)
