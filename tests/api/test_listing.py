"""History (instance, type, system) and search Bundles, with paging links."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from api_helpers import BASE, FHIR_JSON, create, observation, patient

pytestmark = pytest.mark.asyncio


def links(bundle: dict[str, object]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle["link"]}  # type: ignore[attr-defined]


async def follow(client: httpx.AsyncClient, url: str) -> dict[str, object]:
    assert url.startswith(BASE)
    r = await client.get(url[len("http://testserver") :])
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


async def test_instance_history(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient("A")))["id"]
    await client.put(f"/fhir/Patient/{pid}", json=patient("B", id=pid), headers=FHIR_JSON)
    await client.delete(f"/fhir/Patient/{pid}")
    r = await client.get(f"/fhir/Patient/{pid}/_history")
    bundle = r.json()
    assert bundle["type"] == "history"
    assert bundle["total"] == 3
    entries = bundle["entry"]
    assert [e["request"]["method"] for e in entries] == ["DELETE", "PUT", "POST"]
    assert [e["response"]["status"] for e in entries] == ["204 No Content", "200 OK", "201 Created"]
    assert "resource" not in entries[0]
    assert entries[1]["resource"]["name"][0]["family"] == "B"
    assert entries[2]["request"]["url"] == "Patient"
    assert entries[1]["fullUrl"] == f"{BASE}/Patient/{pid}"
    assert entries[1]["response"]["etag"] == 'W/"2"'
    assert entries[1]["response"]["lastModified"].endswith("Z")
    assert links(bundle)["self"] == f"{BASE}/Patient/{pid}/_history"
    assert (await client.get("/fhir/Patient/none/_history")).status_code == 404


async def test_history_paging_and_since(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await create(client, patient(f"P{i}"))
    first = (await client.get("/fhir/Patient/_history", params={"_count": "2"})).json()
    assert len(first["entry"]) == 2
    assert first["total"] == 5
    seen = [e["resource"]["name"][0]["family"] for e in first["entry"]]
    page = first
    while "next" in links(page):
        nxt = links(page)["next"]
        assert parse_qs(urlsplit(nxt).query)["_count"] == ["2"]
        page = await follow(client, nxt)
        seen += [e["resource"]["name"][0]["family"] for e in page.get("entry", [])]
    assert seen == ["P4", "P3", "P2", "P1", "P0"]

    newest = first["entry"][0]["resource"]["meta"]["lastUpdated"]
    since = (await client.get("/fhir/_history", params={"_since": newest})).json()
    assert [e["resource"]["name"][0]["family"] for e in since["entry"]] == ["P4"]
    bad = await client.get("/fhir/_history", params={"_since": "last tuesday"})
    assert bad.status_code == 400
    bad = await client.get("/fhir/_history", params={"_count": "-1"})
    assert bad.status_code == 400
    bad = await client.get("/fhir/_history", params={"name": "x"})
    assert bad.status_code == 400


async def test_history_at(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient("Before")))["id"]
    v1 = (await client.get(f"/fhir/Patient/{pid}")).json()["meta"]["lastUpdated"]
    await client.put(f"/fhir/Patient/{pid}", json=patient("After", id=pid), headers=FHIR_JSON)
    at = (await client.get("/fhir/Patient/_history", params={"_at": v1})).json()
    assert [e["resource"]["name"][0]["family"] for e in at["entry"]] == ["Before"]


async def test_system_history_spans_types(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient()))["id"]
    await create(client, observation(f"Patient/{pid}"))
    bundle = (await client.get("/fhir/_history")).json()
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"Patient", "Observation"}


async def test_search_get_and_post(client: httpx.AsyncClient) -> None:
    for family in ("Alpha", "Beta", "Alpha"):
        await create(client, patient(family))
    r = await client.get("/fhir/Patient", params={"family": "Alpha"})
    bundle = r.json()
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 2
    assert all(e["search"]["mode"] == "match" for e in bundle["entry"])
    assert bundle["entry"][0]["fullUrl"].startswith(f"{BASE}/Patient/")
    assert links(bundle)["self"] == f"{BASE}/Patient?family=Alpha"
    posted = await client.post(
        "/fhir/Patient/_search",
        content=b"family=Alpha",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert posted.status_code == 200
    assert posted.json()["total"] == 2
    wrong = await client.post("/fhir/Patient/_search", json={"family": "Alpha"})
    assert wrong.status_code == 415


async def test_search_paging_total_summary(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await create(client, patient(f"S{i}"))
    page = (await client.get("/fhir/Patient", params={"_count": "2"})).json()
    assert set(links(page)) == {"self", "first", "next"}
    names = []
    pages = 0
    while True:
        pages += 1
        assert ("previous" in links(page)) == (pages > 1)
        names += [e["resource"]["name"][0]["family"] for e in page.get("entry", [])]
        if "next" not in links(page):
            break
        page = await follow(client, links(page)["next"])
    assert sorted(names) == [f"S{i}" for i in range(5)]
    assert pages == 3
    count = (await client.get("/fhir/Patient", params={"_summary": "count"})).json()
    assert count["total"] == 5
    assert "entry" not in count
    none = (await client.get("/fhir/Patient", params={"_total": "none"})).json()
    assert "total" not in none
    assert len(none["entry"]) == 5
    elements = (await client.get("/fhir/Patient", params={"_elements": "id"})).json()
    assert set(elements["entry"][0]["resource"]) <= {"resourceType", "id", "meta"}


async def test_search_errors(client: httpx.AsyncClient) -> None:
    r = await client.get("/fhir/Patient", params={"no-such-param": "x"})
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    r = await client.get("/fhir/Patient", params={"_cursor": "garbage"})
    assert r.status_code == 400
    r = await client.get("/fhir/Nope")
    assert r.status_code == 404


async def test_system_search_and_head(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient()))["id"]
    r = await client.get("/fhir", params={"_id": pid})
    assert r.status_code == 200
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [pid]
    head = await client.head(f"/fhir/Patient/{pid}")
    assert head.status_code == 200
    assert head.headers["etag"] == 'W/"1"'
