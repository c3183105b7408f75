"""Create, read, vread, update, delete, conditional variants, headers and Prefer over HTTP."""

from __future__ import annotations

import httpx
import pytest
from api_helpers import BASE, FHIR_JSON, create, issue_text, observation, patient

pytestmark = pytest.mark.asyncio


async def test_create_then_read_returns_same_bytes_with_headers(client: httpx.AsyncClient) -> None:
    r = await client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
    assert r.status_code == 201
    created = r.json()
    pid = created["id"]
    assert r.headers["location"] == f"{BASE}/Patient/{pid}/_history/1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["last-modified"].endswith("GMT")
    assert r.headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert created["meta"]["versionId"] == "1"

    got = await client.get(f"/fhir/Patient/{pid}")
    assert got.status_code == 200
    assert got.content == r.content
    assert got.headers["etag"] == 'W/"1"'
    assert got.headers["last-modified"] == r.headers["last-modified"]


async def test_create_ignores_client_id(client: httpx.AsyncClient) -> None:
    body = await create(client, patient(id="mine"))
    assert body["id"] != "mine"


async def test_read_unknown_is_404_and_deleted_is_410(client: httpx.AsyncClient) -> None:
    r = await client.get("/fhir/Patient/nope")
    assert r.status_code == 404
    assert "Patient/nope" in issue_text(r)
    pid = (await create(client, patient()))["id"]
    d = await client.delete(f"/fhir/Patient/{pid}")
    assert d.status_code == 200
    assert d.headers["etag"] == 'W/"2"'
    gone = await client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"


async def test_delete_absent_and_twice_is_ok(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/fhir/Patient/never")).status_code == 200
    pid = (await create(client, patient()))["id"]
    assert (await client.delete(f"/fhir/Patient/{pid}")).status_code == 200
    assert (await client.delete(f"/fhir/Patient/{pid}")).status_code == 200


async def test_unknown_type_and_bad_id(client: httpx.AsyncClient) -> None:
    r = await client.get("/fhir/Pateint/1")
    assert r.status_code == 404
    assert "Unknown resource type 'Pateint'" in issue_text(r)
    r = await client.post("/fhir/Pateint", json=patient(), headers=FHIR_JSON)
    assert r.status_code == 404
    r = await client.get("/fhir/Patient/" + "x" * 65)
    assert r.status_code == 400
    r = await client.get("/fhir/Patient/a_b")
    assert r.status_code == 400
    assert "Invalid resource id" in issue_text(r)


async def test_vread_versions_and_history_of_deleted(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient("One")))["id"]
    upd = patient("Two", id=pid)
    r = await client.put(f"/fhir/Patient/{pid}", json=upd, headers=FHIR_JSON)
    assert r.status_code == 200
    assert r.headers["location"] == f"{BASE}/Patient/{pid}/_history/2"
    v1 = await client.get(f"/fhir/Patient/{pid}/_history/1")
    assert v1.json()["name"][0]["family"] == "One"
    assert v1.headers["etag"] == 'W/"1"'
    v2 = await client.get(f"/fhir/Patient/{pid}/_history/2")
    assert v2.json()["name"][0]["family"] == "Two"
    assert (await client.get(f"/fhir/Patient/{pid}/_history/9")).status_code == 404
    assert (await client.get(f"/fhir/Patient/{pid}/_history/x")).status_code == 400
    await client.delete(f"/fhir/Patient/{pid}")
    assert (await client.get(f"/fhir/Patient/{pid}/_history/3")).status_code == 410


async def test_update_as_create_with_client_id(client: httpx.AsyncClient) -> None:
    r = await client.put("/fhir/Patient/p-1.a", json=patient(id="p-1.a"), headers=FHIR_JSON)
    assert r.status_code == 201
    assert r.headers["location"] == f"{BASE}/Patient/p-1.a/_history/1"
    r = await client.put("/fhir/Patient/p-1.a", json=patient("B", id="p-1.a"), headers=FHIR_JSON)
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"


async def test_update_id_rules(client: httpx.AsyncClient) -> None:
    r = await client.put("/fhir/Patient/a", json=patient(), headers=FHIR_JSON)
    assert r.status_code == 400
    assert "no id" in issue_text(r)
    r = await client.put("/fhir/Patient/a", json=patient(id="b"), headers=FHIR_JSON)
    assert r.status_code == 400
    assert "does not match" in issue_text(r)
    obs = observation("Patient/a", id="a")
    r = await client.put("/fhir/Patient/a", json=obs, headers=FHIR_JSON)
    assert r.status_code == 400


async def test_invalid_resource_lists_every_issue(client: httpx.AsyncClient) -> None:
    bad = {"resourceType": "Patient", "gender": "robot", "birthDate": "yesterday"}
    r = await client.post("/fhir/Patient", json=bad, headers=FHIR_JSON)
    assert r.status_code == 400
    exprs = [e for i in r.json()["issue"] for e in i.get("expression", [])]
    assert any("gender" in e for e in exprs)
    assert any("birthDate" in e for e in exprs)
    search = await client.get("/fhir/Patient")
    assert search.json()["total"] == 0


async def test_if_match(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient()))["id"]
    url = f"/fhir/Patient/{pid}"
    body = patient("X", id=pid)
    r = await client.put(url, json=body, headers={**FHIR_JSON, "If-Match": 'W/"2"'})
    assert r.status_code == 412
    r = await client.put(url, json=body, headers={**FHIR_JSON, "If-Match": "garbage"})
    assert r.status_code == 400
    r = await client.put(url, json=body, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert r.status_code == 200
    assert (await client.delete(url, headers={"If-Match": 'W/"1"'})).status_code == 412
    assert (await client.delete(url, headers={"If-Match": 'W/"2"'})).status_code == 200


async def test_if_none_match_and_if_modified_since(client: httpx.AsyncClient) -> None:
    created = await client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
    pid = created.json()["id"]
    url = f"/fhir/Patient/{pid}"
    r = await client.get(url, headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == 'W/"1"'
    assert (await client.get(url, headers={"If-None-Match": 'W/"7"'})).status_code == 200
    lm = created.headers["last-modified"]
    assert (await client.get(url, headers={"If-Modified-Since": lm})).status_code == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (await client.get(url, headers={"If-Modified-Since": old})).status_code == 200
    assert (await client.get(url, headers={"If-Modified-Since": "junk"})).status_code == 200
    # PUT with If-None-Match: * only creates
    star = {**FHIR_JSON, "If-None-Match": "*"}
    r = await client.put(url, json=patient(id=pid), headers=star)
    assert r.status_code == 412
    r = await client.put("/fhir/Patient/fresh", json=patient(id="fresh"), headers=star)
    assert r.status_code == 201


async def test_prefer_return(client: httpx.AsyncClient) -> None:
    minimal = {**FHIR_JSON, "Prefer": "return=minimal"}
    r = await client.post("/fhir/Patient", json=patient(), headers=minimal)
    assert r.status_code == 201
    assert r.content == b""
    assert r.headers["location"].startswith(f"{BASE}/Patient/")
    oo = {**FHIR_JSON, "Prefer": "return=OperationOutcome"}
    r = await client.post("/fhir/Patient", json=patient(), headers=oo)
    assert r.status_code == 201
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["severity"] == "information"
    rep = {**FHIR_JSON, "Prefer": "return=representation"}
    r = await client.post("/fhir/Patient", json=patient(), headers=rep)
    assert r.json()["resourceType"] == "Patient"


async def test_conditional_create(client: httpx.AsyncClient) -> None:
    ident = {"identifier": [{"system": "http://mrn", "value": "42"}]}
    h = {**FHIR_JSON, "If-None-Exist": "identifier=http://mrn|42"}
    first = await client.post("/fhir/Patient", json=patient(**ident), headers=h)
    assert first.status_code == 201
    again = await client.post("/fhir/Patient", json=patient(**ident), headers=h)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    await client.post("/fhir/Patient", json=patient(**ident), headers=FHIR_JSON)
    many = await client.post("/fhir/Patient", json=patient(**ident), headers=h)
    assert many.status_code == 412
    empty = await client.post(
        "/fhir/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": ""}
    )
    assert empty.status_code == 400


async def test_conditional_update(client: httpx.AsyncClient) -> None:
    ident = {"identifier": [{"system": "http://mrn", "value": "7"}]}
    url = "/fhir/Patient?identifier=http://mrn|7"
    r = await client.put(url, json=patient("A", **ident), headers=FHIR_JSON)
    assert r.status_code == 201
    pid = r.json()["id"]
    r = await client.put(url, json=patient("B", **ident), headers=FHIR_JSON)
    assert r.status_code == 200
    assert r.json()["id"] == pid
    assert r.json()["meta"]["versionId"] == "2"
    r = await client.put(url, json=patient("C", id="other", **ident), headers=FHIR_JSON)
    assert r.status_code == 400
    await create(client, patient("D", **ident))
    r = await client.put(url, json=patient("E", **ident), headers=FHIR_JSON)
    assert r.status_code == 412
    r = await client.put("/fhir/Patient", json=patient(), headers=FHIR_JSON)
    assert r.status_code == 400


async def test_conditional_delete(client: httpx.AsyncClient) -> None:
    await create(client, patient("Solo", identifier=[{"system": "s", "value": "1"}]))
    r = await client.delete("/fhir/Patient?identifier=s|1")
    assert r.status_code == 200
    assert (await client.get("/fhir/Patient?identifier=s|1")).json()["total"] == 0
    assert (await client.delete("/fhir/Patient?identifier=s|1")).status_code == 200
    await create(client, patient(identifier=[{"system": "s", "value": "2"}]))
    await create(client, patient(identifier=[{"system": "s", "value": "2"}]))
    assert (await client.delete("/fhir/Patient?identifier=s|2")).status_code == 412


async def test_json_patch(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient()))["id"]
    ops = [{"op": "replace", "path": "/name/0/family", "value": "Patched"}]
    h = {"Content-Type": "application/json-patch+json"}
    r = await client.patch(f"/fhir/Patient/{pid}", json=ops, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["name"][0]["family"] == "Patched"
    assert r.headers["etag"] == 'W/"2"'
    r = await client.patch(f"/fhir/Patient/{pid}", json=ops, headers={**h, "If-Match": 'W/"1"'})
    assert r.status_code == 412
    bad = [{"op": "add", "path": "/gender", "value": "robot"}]
    r = await client.patch(f"/fhir/Patient/{pid}", json=bad, headers=h)
    assert r.status_code == 422  # the patched resource would be invalid
    assert "gender" in issue_text(r)
    missing = [{"op": "replace", "path": "/birthDate", "value": "2000-01-01"}]
    r = await client.patch(f"/fhir/Patient/{pid}", json=missing, headers=h)
    assert r.status_code == 422
    r = await client.patch(f"/fhir/Patient/{pid}", json={"op": "add"}, headers=h)
    assert r.status_code == 400
    r = await client.patch("/fhir/Patient/none", json=ops, headers=h)
    assert r.status_code == 404
    r = await client.patch(f"/fhir/Patient/{pid}", json=ops, headers={"Content-Type": "text/xml"})
    assert r.status_code == 415


async def test_fhirpath_patch_and_conditional_patch(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient(identifier=[{"system": "s", "value": "p"}])))["id"]
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "add"},
                    {"name": "path", "valueString": "Patient"},
                    {"name": "name", "valueString": "gender"},
                    {"name": "value", "valueCode": "female"},
                ],
            }
        ],
    }
    r = await client.patch(f"/fhir/Patient/{pid}", json=params, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    assert r.json()["gender"] == "female"
    ops = [{"op": "add", "path": "/active", "value": True}]
    h = {"Content-Type": "application/json-patch+json"}
    r = await client.patch("/fhir/Patient?identifier=s|p", json=ops, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["active"] is True
    assert r.json()["id"] == pid
    r = await client.patch("/fhir/Patient?identifier=s|none", json=ops, headers=h)
    assert r.status_code == 404


async def test_validate_operation(client: httpx.AsyncClient) -> None:
    r = await client.post("/fhir/Patient/$validate", json=patient(), headers=FHIR_JSON)
    assert r.status_code == 200
    assert r.json()["issue"][0]["diagnostics"] == "All OK"
    bad = {"resourceType": "Patient", "gender": "robot"}
    r = await client.post("/fhir/Patient/$validate", json=bad, headers=FHIR_JSON)
    assert r.status_code == 200
    assert r.json()["issue"][0]["severity"] == "error"
    wrapped = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": bad}]}
    r = await client.post("/fhir/Patient/$validate", json=wrapped, headers=FHIR_JSON)
    assert r.json()["issue"][0]["severity"] == "error"
    r = await client.post("/fhir/Patient/abc/$validate", json=patient(), headers=FHIR_JSON)
    assert r.status_code == 200
    assert (await client.get("/fhir/Patient")).json()["total"] == 0
