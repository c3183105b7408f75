"""The patient portal over HTTP on SQLite and PostgreSQL: a patient sees only their own
record (no URL reaches another patient's data), labs in plain language, messages, the
access log from the audit trail, and the download of the record."""

from __future__ import annotations

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from web_world import World, csrf, sign_in

from carebase.store.base import Store

pytestmark = pytest.mark.asyncio


async def test_a_patient_sees_their_own_record(web: httpx.AsyncClient, world: World) -> None:
    await sign_in(web, "pat")
    start = await web.get("/")
    assert start.headers["location"] == "/portal"
    summary = (await web.get("/portal")).text
    assert world.first_name in summary and world.second_name not in summary
    assert "Current medications" in summary and "Immunizations" in summary
    labs = (await web.get("/portal/labs")).text
    assert "Average blood sugar over 3 months (HbA1c)" in labs
    assert "Hemoglobin A1c/Hemoglobin.total in Blood" in labs  # the lab's own name beside it
    chinese = await web.get("/portal/labs", headers={"Accept-Language": "zh"})
    assert "近三个月平均血糖（糖化血红蛋白）" in chinese.text  # noqa: RUF001


async def test_no_url_reaches_another_patients_data(web: httpx.AsyncClient, world: World) -> None:
    await sign_in(web, "pat")
    other = world.second
    for path in (
        f"/app/patients/{other}",
        f"/app/patients/{other}/vitals",
        f"/app/patients/{other}/encounters",
        f"/app/patients/{other}/risk",
        f"/app/patients/{world.first}",
        "/app",
        f"/app/search?q={world.second_name}",
        "/app/admin/audit",
    ):
        response = await web.get(path)
        assert response.status_code == 403, path
        assert world.second_name not in response.text, path
    for path in (f"/portal?patient={other}", f"/portal/labs?patient={other}", f"/portal/{other}"):
        response = await web.get(path)
        assert world.second_name not in response.text, path
        assert response.status_code in (200, 404), path
    assert world.first_name in (await web.get(f"/portal?patient={other}")).text
    bundle = orjson.loads((await web.get("/portal/download")).content)
    subjects = {
        ref
        for entry in bundle["entry"]
        for key in ("subject", "patient")
        if isinstance(ref := (entry["resource"].get(key) or {}).get("reference"), str)
    }
    assert subjects == {f"Patient/{world.first}"}


async def test_download_is_the_whole_record_as_fhir_json(
    web: httpx.AsyncClient, world: World, store: Store
) -> None:
    await sign_in(web, "pat")
    response = await web.get("/portal/download")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert "attachment" in response.headers["content-disposition"]
    bundle = orjson.loads(response.content)
    assert bundle["resourceType"] == "Bundle" and bundle["total"] == len(bundle["entry"])
    types = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert {"Patient", "Encounter", "Observation", "Condition"} <= types
    observations = store.search("Observation", [("patient", world.first)], total="accurate")
    assert sum(e["resource"]["resourceType"] == "Observation" for e in bundle["entry"]) == (
        observations.total
    )


async def test_messages_and_who_viewed_the_record(
    web: httpx.AsyncClient, world: World, store: Store, audited_app: Starlette
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=audited_app, client=("198.51.100.9", 1)),
        base_url="http://testserver",
    ) as doctor:
        await sign_in(doctor, "doc")
        assert (await doctor.get(f"/app/patients/{world.first}")).status_code == 200
    await sign_in(web, "pat")
    page = await web.get("/portal/messages")
    empty = await web.post("/portal/messages", data={"csrf_token": csrf(page.text), "message": " "})
    assert empty.status_code == 400 and "Write a message first." in empty.text
    sent = await web.post(
        "/portal/messages",
        data={"csrf_token": csrf(page.text), "message": "Can I take <b>ibuprofen</b>?"},
    )
    assert sent.status_code == 303
    listed = (await web.get("/portal/messages")).text
    assert "Can I take &lt;b&gt;ibuprofen&lt;/b&gt;?" in listed
    [message] = store.search("Communication", [("subject", f"Patient/{world.first}")]).entries
    body = orjson.loads(message.body or b"{}")
    assert body["sender"]["reference"] == f"Patient/{world.first}"
    audited_app.state.audit_trail.flush()
    access = (await web.get("/portal/access")).text
    assert "<td>doc</td><td>read</td><td>allowed</td>" in access
    assert "<td>pat</td><td>create</td>" in access
