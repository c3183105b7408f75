"""The search API: paging links, `_sort`, includes, `_total`, lenient/strict handling,
compartment and system routes, and every bad input path (400 naming the parameter)."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from api_helpers import BASE, bearer, create, issue_text, observation, patient
from starlette.applications import Starlette

from carebase.api.app import create_app
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.config import Settings
from carebase.store.base import Store

pytestmark = pytest.mark.asyncio
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle["link"]}


async def get(client: httpx.AsyncClient, url: str, **kw: Any) -> dict[str, Any]:
    r = await client.get(url.removeprefix("http://testserver"), **kw)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


async def _patients(client: httpx.AsyncClient, n: int) -> list[str]:
    out = []
    for i in range(n):
        made = await create(client, patient(f"F{i % 4}", birthDate=f"{1950 + i}-01-01"))
        out.append(made["id"])
    return out


async def test_links_page_forward_and_back(client: httpx.AsyncClient) -> None:
    made = await _patients(client, 11)
    query = {"_sort": "family,-birthdate", "_count": "3"}
    first = await get(client, "/fhir/Patient", params=query)
    assert first["total"] == 11
    assert set(links(first)) == {"self", "first", "next"}
    assert links(first)["self"] == f"{BASE}/Patient?_sort=family%2C-birthdate&_count=3"
    pages = [first]
    while "next" in links(pages[-1]):
        nxt = links(pages[-1])["next"]
        assert parse_qs(urlsplit(nxt).query)["_sort"] == ["family,-birthdate"]
        pages.append(await get(client, nxt))
    forward = [i for p in pages for i in ids(p)]
    by_id = dict(zip(made, range(11), strict=True))
    assert forward == sorted(made, key=lambda i: (by_id[i] % 4, -by_id[i]))
    assert len(pages) == 4 and "previous" in links(pages[-1])
    back = ids(pages[-1])
    page = pages[-1]
    while "previous" in links(page):
        page = await get(client, links(page)["previous"])
        back = ids(page) + back
        assert links(page)["first"] == links(first)["self"]
    assert back == forward
    again = await get(client, links(pages[2])["self"])
    assert ids(again) == ids(pages[2])


async def test_include_revinclude_entries(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient("Inc")))["id"]
    oids = [(await create(client, observation(f"Patient/{pid}", i)))["id"] for i in range(3)]
    bundle = await get(client, "/fhir/Observation", params={"_include": "Observation:subject"})
    assert ids(bundle) == oids and ids(bundle, "include") == [pid]
    assert bundle["total"] == 3  # includes are not counted
    rev = await get(
        client,
        "/fhir/Patient",
        params={"_id": pid, "_revinclude": "Observation:subject", "_elements": "id"},
    )
    assert ids(rev) == [pid] and sorted(ids(rev, "include")) == sorted(oids)
    match = rev["entry"][0]["resource"]
    assert set(match) <= {"resourceType", "id", "meta"}  # _elements shapes the matches
    assert all("status" in e["resource"] for e in rev["entry"][1:])  # includes come whole


async def test_include_cap_adds_a_warning(store: Store, settings: Settings) -> None:
    app: Starlette = create_app(settings.with_(max_include=2), store, audit=MemoryAuditTrail())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=bearer(app)
    ) as client:
        pid = (await create(client, patient()))["id"]
        for i in range(4):
            await create(client, observation(f"Patient/{pid}", i))
        bundle = await get(client, "/fhir/Patient", params={"_revinclude": "Observation:subject"})
    assert len(ids(bundle, "include")) == 2
    outcome = bundle["entry"][-1]
    assert outcome["search"]["mode"] == "outcome"
    assert outcome["resource"]["issue"][0]["severity"] == "warning"
    assert "CAREBASE_MAX_INCLUDE" in outcome["resource"]["issue"][0]["diagnostics"]


async def test_total_count_and_summary(client: httpx.AsyncClient) -> None:
    await _patients(client, 3)
    for mode in ("accurate", "estimate"):
        bundle = await get(client, "/fhir/Patient", params={"_total": mode})
        assert bundle["total"] >= 0 and len(bundle["entry"]) == 3
    assert (await get(client, "/fhir/Patient", params={"_total": "accurate"}))["total"] == 3
    assert "total" not in await get(client, "/fhir/Patient", params={"_total": "none"})
    zero = await get(client, "/fhir/Patient", params={"_count": "0"})
    assert zero["total"] == 3 and "entry" not in zero
    assert set(links(zero)) == {"self"}
    count = await get(client, "/fhir/Patient", params={"_summary": "count", "_total": "none"})
    assert count["total"] == 3 and "entry" not in count


async def test_lenient_and_strict(client: httpx.AsyncClient) -> None:
    await _patients(client, 2)
    params = {"family": "F1", "nonsense": "x", "_sort": "nope"}
    strict = await client.get("/fhir/Patient", params=params)
    assert strict.status_code == 400 and "_sort='nope'" in issue_text(strict)
    unknown = await client.get("/fhir/Patient", params={"nonsense": "x"})
    assert unknown.status_code == 400 and "nonsense" in issue_text(unknown)
    explicit = await client.get(
        "/fhir/Patient", params=params, headers={"Prefer": "handling=strict"}
    )
    assert explicit.status_code == 400
    lenient = await get(client, "/fhir/Patient", params=params,
                        headers={"Prefer": "handling=lenient"})  # fmt: skip
    assert lenient["total"] == 1
    assert links(lenient)["self"] == f"{BASE}/Patient?family=F1"


async def test_compartment_search(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient("Comp")))["id"]
    other = (await create(client, patient("Other")))["id"]
    mine = (await create(client, observation(f"Patient/{pid}")))["id"]
    await create(client, observation(f"Patient/{other}"))
    bundle = await get(client, f"/fhir/Patient/{pid}/Observation")
    assert ids(bundle) == [mine]
    assert links(bundle)["self"] == f"{BASE}/Patient/{pid}/Observation"
    everything = await get(client, f"/fhir/Patient/{pid}/*")
    assert sorted(ids(everything)) == sorted([pid, mine])
    posted = await client.post(
        f"/fhir/Patient/{pid}/Observation/_search", content=b"status=final", headers=FORM
    )
    assert posted.status_code == 200 and ids(posted.json()) == [mine]
    assert ids(await get(client, f"/fhir/Patient/{pid}/Observation?status=amended")) == []
    for url, status, named in [
        (f"/fhir/Organization/{pid}/Observation", 404, "Patient only"),
        (f"/fhir/Patient/{pid}/Organization", 400, "Organization"),
        (f"/fhir/Patient/{pid}/Nope", 404, "Nope"),
        ("/fhir/Patient/bad!id/Observation", 400, "bad!id"),
    ]:
        r = await client.get(url)
        assert r.status_code == status, url
        assert named in issue_text(r)


async def test_system_search_get_and_post(client: httpx.AsyncClient) -> None:
    pid = (await create(client, patient()))["id"]
    oid = (await create(client, observation(f"Patient/{pid}")))["id"]
    bundle = await get(client, "/fhir", params={"_id": f"{pid},{oid}", "_sort": "-_id"})
    assert ids(bundle) == sorted([pid, oid], reverse=True)
    posted = await client.post("/fhir/_search", content=f"_id={oid}".encode(), headers=FORM)
    assert posted.status_code == 200 and ids(posted.json()) == [oid]
    assert links(posted.json())["self"] == f"{BASE}?_id={oid}"
    wrong = await client.post("/fhir/_search", json={"_id": oid})
    assert wrong.status_code == 415


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"_sort": "nope"}, "nope"),
        ({"_sort": "name", "x": "1"}, "x"),
        ({"_include": "Patient:nope"}, "nope"),
        ({"_revinclude": "Nope:subject"}, "Nope"),
        ({"_include:iterate": "Patient"}, "_include:iterate"),
        ({"_cursor": "garbage"}, "follow the links"),
        ({"_total": "some"}, "_total"),
        ({"_count": "-1"}, "_count"),
        ({"_summary": "nope"}, "_summary"),
        ({"birthdate": "1980-13"}, "birthdate"),
    ],
)
async def test_bad_input_is_400_naming_it(
    client: httpx.AsyncClient, params: dict[str, str], named: str
) -> None:
    r = await client.get("/fhir/Patient", params=params)
    assert r.status_code == 400, r.text
    assert named in issue_text(r)


async def test_capability_lists_includes_and_result_parameters(
    client: httpx.AsyncClient,
) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    rest = statement["rest"][0]
    by_type = {r["type"]: r for r in rest["resource"]}
    assert "Observation:subject" in by_type["Observation"]["searchInclude"]
    assert "Observation:*" in by_type["Observation"]["searchInclude"]
    assert "Observation:subject" in by_type["Patient"]["searchRevInclude"]
    assert "Observation:subject" not in by_type["Organization"]["searchRevInclude"]
    assert {"_sort", "_include", "_revinclude", "_total"} <= {
        p["name"] for p in rest["searchParam"]
    }
    assert rest["compartment"] == ["http://hl7.org/fhir/CompartmentDefinition/patient"]


async def test_very_long_identifier_system_is_stored_and_found(client: httpx.AsyncClient) -> None:
    """A 38 kB identifier system once broke PostgreSQL's btree index (503): index values are
    capped (`index_values.index_text`), so it is stored and found exactly, over HTTP too."""
    system = "http://example.org/" + secrets.token_hex(19_000)  # random: no compression helps
    made = await create(client, patient(identifier=[{"system": system, "value": "1"}]))
    await create(client, patient(identifier=[{"system": system[:-1] + "x", "value": "1"}]))
    body = urlencode({"identifier": f"{system}|1"}).encode()
    r = await client.post("/fhir/Patient/_search", content=body, headers=FORM)
    assert r.status_code == 200, r.text
    assert ids(r.json()) == [made["id"]]
