"""Formats, content types, body limits, _pretty/_summary/_elements and error responses."""

from __future__ import annotations

import httpx
import orjson
import pytest
from api_helpers import FHIR_JSON, bearer, create, issue_text, patient
from starlette.applications import Starlette

from carebase.api import interactions
from carebase.api.app import create_app
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.config import Settings
from carebase.store.base import Store

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("fmt", ["json", "application/json", "application/fhir+json"])
async def test_json_formats_accepted(client: httpx.AsyncClient, fmt: str) -> None:
    pid = (await create(client, patient()))["id"]
    r = await client.get(f"/fhir/Patient/{pid}", params={"_format": fmt})
    assert r.status_code == 200


@pytest.mark.parametrize("fmt", ["xml", "application/fhir+xml", "text/xml"])
async def test_xml_format_is_406(client: httpx.AsyncClient, fmt: str) -> None:
    r = await client.get("/fhir/Patient/x", params={"_format": fmt})
    assert r.status_code == 406
    assert "XML" in issue_text(r) or "xml" in issue_text(r)
    r = await client.get("/fhir/metadata", params={"_format": "yaml"})
    assert r.status_code == 406


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("application/fhir+json", 200),
        ("application/json", 200),
        ("*/*", 200),
        ("text/html, */*;q=0.8", 200),
        ("application/fhir+xml", 406),
        ("text/html", 406),
    ],
)
async def test_accept_header(client: httpx.AsyncClient, accept: str, status: int) -> None:
    pid = (await create(client, patient()))["id"]
    r = await client.get(f"/fhir/Patient/{pid}", headers={"Accept": accept})
    assert r.status_code == status
    if status == 406:
        assert r.json()["resourceType"] == "OperationOutcome"


async def test_body_content_types(client: httpx.AsyncClient) -> None:
    body = orjson.dumps(patient())
    ok = await client.post(
        "/fhir/Patient", content=body, headers={"Content-Type": "application/json"}
    )
    assert ok.status_code == 201
    xml = await client.post(
        "/fhir/Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"}
    )
    assert xml.status_code == 415
    assert "XML" in issue_text(xml)
    missing = await client.post("/fhir/Patient", content=body)
    assert missing.status_code == 415
    assert "application/fhir+json" in issue_text(missing)
    latin = await client.post(
        "/fhir/Patient", content=body, headers={"Content-Type": "application/json; charset=latin-1"}
    )
    assert latin.status_code == 415


async def test_malformed_json_names_position(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/fhir/Patient", content=b'{"resourceType":\n "Patient",,}', headers=FHIR_JSON
    )
    assert r.status_code == 400
    text = issue_text(r)
    assert "line 2" in text
    assert "byte offset" in text


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "empty"),
        (b"[1,2]", "JSON object"),
        (b'{"name": []}', "resourceType"),
    ],
)
async def test_body_shape(client: httpx.AsyncClient, body: bytes, needle: str) -> None:
    r = await client.post("/fhir/Patient", content=body, headers=FHIR_JSON)
    assert r.status_code == 400
    assert needle in issue_text(r)


async def test_nesting_depth_limit(client: httpx.AsyncClient) -> None:
    deep: object = "x"
    for _ in range(150):
        deep = {"extension": [deep]}
    body = {"resourceType": "Patient", "extension": [deep]}
    r = await client.post("/fhir/Patient", json=body, headers=FHIR_JSON)
    assert r.status_code == 400
    assert "deeper" in issue_text(r)


async def test_body_size_limit(store: Store, settings: Settings) -> None:
    app = create_app(settings.with_(max_body_bytes=1000), store, audit=MemoryAuditTrail())
    transport = httpx.ASGITransport(app=app)
    big = orjson.dumps(patient("x" * 2000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=bearer(app)
    ) as c:
        r = await c.post("/fhir/Patient", content=big, headers=FHIR_JSON)
        assert r.status_code == 413
        assert "1000 bytes" in issue_text(r)

        async def chunks():  # no Content-Length: the limit applies while streaming
            for i in range(0, len(big), 100):
                yield big[i : i + 100]

        r = await c.post("/fhir/Patient", content=chunks(), headers=FHIR_JSON)
        assert r.status_code == 413
        small = await c.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
        assert small.status_code == 201


async def test_pretty_summary_elements(client: httpx.AsyncClient) -> None:
    body = patient(gender="male", birthDate="1970-01-01")
    body["text"] = {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml">P</div>',
    }
    pid = (await create(client, body))["id"]
    pretty = await client.get(f"/fhir/Patient/{pid}", params={"_pretty": "true"})
    assert b'\n  "resourceType"' in pretty.content
    plain = await client.get(f"/fhir/Patient/{pid}")
    assert orjson.loads(plain.content) == orjson.loads(pretty.content)
    summary = (await client.get(f"/fhir/Patient/{pid}", params={"_summary": "true"})).json()
    assert "text" not in summary
    assert any(t.get("code") == "SUBSETTED" for t in summary["meta"]["tag"])
    elements = (await client.get(f"/fhir/Patient/{pid}", params={"_elements": "gender"})).json()
    assert elements["gender"] == "male"
    assert "birthDate" not in elements
    bad = await client.get(f"/fhir/Patient/{pid}", params={"_summary": "maybe"})
    assert bad.status_code == 400


async def test_unknown_route_and_wrong_method(client: httpx.AsyncClient) -> None:
    r = await client.get("/nowhere")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"
    r = await client.get("/fhir/Patient/1/_history/1/extra")
    assert r.status_code == 404
    r = await client.post("/fhir/Patient/1")
    assert r.status_code == 405
    assert "POST" in issue_text(r)
    r = await client.put("/fhir/Patient/1/_history/1")
    assert r.status_code == 405
    assert r.json()["issue"][0]["code"] == "not-supported"


async def test_unexpected_error_is_generic_500(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(interactions, "create", boom)
    r = await client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
    assert r.status_code == 500
    assert "secret" not in r.text
    assert r.json()["issue"][0]["code"] == "exception"
    assert "secret detail" in caplog.text


async def test_healthz(app: Starlette, client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
