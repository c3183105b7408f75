"""Who changed what, per resource: the versions of a resource of the record with who wrote
each (from the audit log) and which elements changed, on SQLite and PostgreSQL."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.applications import Starlette
from web_world import World, csrf, sign_in

from carebase.store.base import Store

pytestmark = pytest.mark.asyncio


def _rows(html: str) -> list[list[str]]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [re.findall(r"<td>([^<]*)</td>", row) for row in body.split("<tr>")[1:]]


async def test_versions_show_who_changed_which_elements(
    web: httpx.AsyncClient, world: World, store: Store, audited_app: Starlette
) -> None:
    await sign_in(web, "doc")
    token = csrf((await web.get(f"/app/patients/{world.first}/problem")).text)
    created = await web.post(
        f"/app/patients/{world.first}/problem",
        data={"csrf_token": token, "code": "j45.909", "onset": "2020-02-03"},
    )
    assert created.status_code == 303
    [stored] = store.search(
        "Condition",
        [("patient", world.first), ("code", "http://hl7.org/fhir/sid/icd-10-cm|J45.909")],
    ).entries
    await sign_in(web, "admin")
    chart = await web.get(f"/app/patients/{world.first}")
    resolved = await web.post(
        f"/app/patients/{world.first}/problems/{stored.id}/resolve",
        data={"csrf_token": csrf(chart.text), "version": "1"},
    )
    assert resolved.status_code == 303
    audited_app.state.audit_trail.flush()
    path = f"/app/patients/{world.first}/history/Condition/{stored.id}"
    page = await web.get(path)
    assert page.status_code == 200
    newest, oldest = _rows(page.text)
    assert newest[:2] == ["2", newest[1]] and newest[2:4] == ["update", "admin"]
    assert "clinicalStatus" in newest[4] and "code" not in newest[4].split(", ")
    assert oldest[0] == "1" and oldest[2:4] == ["create", "doc"] and "code" in oldest[4]
    web.cookies.set("carebase_lang", "zh")
    chinese = await web.get(path)
    assert "的各个版本" in chinese.text and "<td>修改</td>" in chinese.text


async def test_history_only_of_the_patients_own_resources(
    web: httpx.AsyncClient, world: World, store: Store
) -> None:
    [condition] = store.search("Condition", [("patient", world.first)], count=1).entries
    await sign_in(web, "admin")
    elsewhere = await web.get(f"/app/patients/{world.second}/history/Condition/{condition.id}")
    assert elsewhere.status_code == 404
    loaded = await web.get(f"/app/patients/{world.first}/history/Condition/{condition.id}")
    assert loaded.status_code == 200 and "not in the audit log" in loaded.text  # bulk-loaded
    missing = await web.get(f"/app/patients/{world.first}/history/Condition/nope")
    assert missing.status_code == 404
    await sign_in(web, "pat")
    assert (
        await web.get(f"/app/patients/{world.first}/history/Condition/{condition.id}")
    ).status_code == 403
