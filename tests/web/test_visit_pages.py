"""Video visits in the web app: the clinician's appointments with *Join visit*, the chart
visit page (the telehealth video panel with the note and order forms writing into the
visit's Encounter) and the portal's *Join*, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from web_helpers import PASSWORD
from web_world import World, csrf, errors, sign_in

from carebase.store.base import Store
from carebase.telehealth.codes import visit_coding
from carebase.telehealth.encounter import visit_started

pytestmark = pytest.mark.asyncio
DOCTOR = "Practitioner/vdoc"


def _book(store: Store, patient: str, visit_type: str = "virtual") -> str:
    start = datetime.now(UTC) + timedelta(hours=1)
    appointment = {
        "resourceType": "Appointment",
        "status": "booked",
        "serviceType": [visit_coding(visit_type)],
        "description": f"{visit_type} follow-up",
        "start": start.isoformat(timespec="seconds"),
        "end": (start + timedelta(minutes=30)).isoformat(timespec="seconds"),
        "participant": [
            {"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"},
            {"actor": {"reference": DOCTOR}, "status": "accepted"},
        ],
    }
    with store.transaction() as tx:
        return tx.create("Appointment", appointment).id


@pytest.fixture
def visit(audited_app: Starlette, world: World, store: Store) -> str:
    """A virtual appointment of the first patient with Practitioner/vdoc, whose user is
    `vdoc` (a clinician of the patient's organisation)."""
    with store.transaction() as tx:
        tx.create("Practitioner", {"resourceType": "Practitioner"}, "vdoc")
    audited_app.state.user_directory.add(
        "vdoc", "clinician", PASSWORD, practitioner="vdoc", organization=world.organization
    )
    return _book(store, world.first)


def _body(store: Store, type_: str, id_: str) -> dict[str, Any]:
    stored = store.read(type_, id_)
    assert stored is not None and stored.body is not None
    value: dict[str, Any] = orjson.loads(stored.body)
    return value


def _ids(store: Store, type_: str, param: str, value: str) -> list[str]:
    return [e.id for e in store.search(type_, [(param, value)], count=50).entries]


async def test_appointments_on_home_and_chart_and_the_join_redirect(
    web: httpx.AsyncClient, world: World, store: Store, visit: str
) -> None:
    in_person = _book(store, world.first, "in-person")
    await sign_in(web, "vdoc")
    home = await web.get("/app")
    assert f'action="/app/patients/{world.first}/visits/{visit}/join"' in home.text
    assert "Your appointments" in home.text
    chart = await web.get(f"/app/patients/{world.first}")
    assert f'action="/app/patients/{world.first}/visits/{visit}/join"' in chart.text
    assert f"/visits/{in_person}/join" not in chart.text  # in person: nothing to join
    joined = await web.post(
        f"/app/patients/{world.first}/visits/{visit}/join", data={"csrf_token": csrf(chart.text)}
    )
    assert joined.status_code == 303
    location = joined.headers["location"]
    assert re.fullmatch(
        rf"/app/patients/{world.first}/visits/{visit}#room={visit}&token=[^&]+", location
    )
    page = await web.get(location.split("#")[0])
    assert page.status_code == 200
    # the telehealth panel (markup, stylesheet, script) and the chart's forms on one page
    for piece in (
        'id="stage"',
        'id="chat-form"',
        "/telehealth/static/visit.js",
        "/telehealth/static/visit-panel.css",
        f'action="/app/patients/{world.first}/visits/{visit}/note"',
        f'action="/app/patients/{world.first}/visits/{visit}/order"',
        f'action="/app/patients/{world.first}/visits/{visit}/prescribe"',
        'id="note-subjective"',
        'id="order-test"',
        'id="prescribe-medication"',
    ):
        assert piece in page.text, piece
    ids = re.findall(r'\bid="([^"]+)"', page.text)
    assert len(ids) == len(set(ids)), "duplicate element ids"
    in_person_join = await web.post(
        f"/app/patients/{world.first}/visits/{in_person}/join",
        data={"csrf_token": csrf(chart.text)},
    )
    assert in_person_join.status_code == 409


async def test_note_and_orders_land_on_the_visit_encounter(
    web: httpx.AsyncClient, world: World, store: Store, visit: str
) -> None:
    await sign_in(web, "vdoc")
    base = f"/app/patients/{world.first}/visits/{visit}"
    token = csrf((await web.get(base)).text)
    before = _ids(store, "DocumentReference", "patient", world.first)
    note = {"csrf_token": token, "subjective": "Rash for 2 days", "plan": "Cream"}
    early = await web.post(f"{base}/note", data=note)
    assert early.status_code == 400
    assert any("has not started" in e for e in errors(early.text))
    assert _ids(store, "DocumentReference", "patient", world.first) == before
    encounter = visit_started(store, visit, [DOCTOR])["id"]
    saved = await web.post(f"{base}/note", data=note, headers={"X-Carebase-Fragment": "1"})
    assert saved.status_code == 200, saved.text
    assert "<html" not in saved.text and "Saved in this visit" in saved.text
    notes = _ids(store, "DocumentReference", "encounter", f"Encounter/{encounter}")
    assert len(notes) == 1
    body = _body(store, "DocumentReference", notes[0])
    assert body["context"]["encounter"] == [{"reference": f"Encounter/{encounter}"}]
    bad = await web.post(
        f"{base}/order", data={"csrf_token": token}, headers={"X-Carebase-Fragment": "1"}
    )
    assert bad.status_code == 400 and "<html" not in bad.text and errors(bad.text)
    order = await web.post(f"{base}/order", data={"csrf_token": token, "test": "4548-4"})
    assert order.status_code == 303 and order.headers["location"] == f"{base}?saved=order"
    orders = _ids(store, "ServiceRequest", "encounter", f"Encounter/{encounter}")
    assert len(orders) == 1
    prescribed = await web.post(
        f"{base}/prescribe",
        data={
            "csrf_token": token,
            "medication": "Amoxicillin 500 mg oral capsule",
            "dosage": "1 capsule 3 times a day",
        },
    )
    assert prescribed.status_code == 303, prescribed.text
    assert _ids(store, "MedicationRequest", "encounter", f"Encounter/{encounter}")
    page = await web.get(f"{base}?saved=order")
    assert "Saved in this visit" in page.text and "Written in this visit" in page.text
    assert "Amoxicillin" in page.text and f"Encounter {encounter}" in page.text


async def test_only_the_visit_practitioner_and_its_patient_join(
    web: httpx.AsyncClient, world: World, store: Store, visit: str
) -> None:
    await sign_in(web, "doc")  # a clinician of the organisation, not on the appointment
    chart = await web.get(f"/app/patients/{world.first}")
    refused = await web.post(
        f"/app/patients/{world.first}/visits/{visit}/join", data={"csrf_token": csrf(chart.text)}
    )
    assert refused.status_code == 403
    elsewhere = await web.get(f"/app/patients/{world.second}/visits/{visit}")
    assert elsewhere.status_code == 404
    await sign_in(web, "pat")
    listing = await web.get("/portal/appointments")
    assert f'action="/portal/appointments/{visit}/join"' in listing.text
    joined = await web.post(
        f"/portal/appointments/{visit}/join", data={"csrf_token": csrf(listing.text)}
    )
    assert joined.status_code == 303
    location = joined.headers["location"]
    assert re.fullmatch(rf"/portal/visit#room={visit}&token=[^&]+", location)
    page = await web.get(location.split("#")[0])  # the panel in the portal's frame
    assert page.status_code == 200 and 'id="stage"' in page.text and ">Mute<" in page.text
    assert "/telehealth/static/visit.js" in page.text
    other = _book(store, world.second)
    stranger = await web.post(
        f"/portal/appointments/{other}/join", data={"csrf_token": csrf(listing.text)}
    )
    assert stranger.status_code == 404
    staff_page = await web.get(f"/app/patients/{world.first}/visits/{visit}")
    assert staff_page.status_code == 403


async def test_the_video_panel_speaks_the_page_language(
    web: httpx.AsyncClient, world: World, visit: str
) -> None:
    await sign_in(web, "vdoc")
    english = await web.get(f"/app/patients/{world.first}/visits/{visit}")
    assert ">Mute<" in english.text and ">Waiting room<" in english.text
    assert 'data-texts="{}"' in english.text and "[[" not in english.text
    web.cookies.set("carebase_lang", "zh")
    chinese = await web.get(f"/app/patients/{world.first}/visits/{visit}")
    assert ">静音<" in chinese.text and ">候诊室<" in chinese.text and ">Mute<" not in chinese.text
    # the script's texts travel with the panel, for the status line and the buttons it writes
    texts = re.search(r'data-texts="([^"]*)"', chinese.text)
    assert texts is not None
    decoded = orjson.loads(texts.group(1).replace("&quot;", '"'))
    assert decoded["In the visit"] == "就诊中" and decoded["Unmute"] == "取消静音"
    assert "{seconds}" in decoded["Connection lost; reconnecting in {seconds} s…"]


async def test_the_standalone_visit_page_speaks_the_browser_language(
    web: httpx.AsyncClient,
) -> None:
    """`/telehealth/visit` (a guest's invitation link: no account, no session) follows the
    browser's Accept-Language, or the language cookie."""
    english = await web.get("/telehealth/visit")
    assert english.status_code == 200 and '<html lang="en">' in english.text
    assert "<h1>Video visit</h1>" in english.text and ">Mute<" in english.text
    assert "[[" not in english.text and "{lang}" not in english.text
    chinese = await web.get("/telehealth/visit", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert (
        '<html lang="zh-Hans">' in chinese.text and chinese.headers["content-language"] == "zh-Hans"
    )
    assert "<h1>视频问诊</h1>" in chinese.text and ">静音<" in chinese.text
    assert ">Mute<" not in chinese.text and "就诊中" in chinese.text  # the script's texts too
    web.cookies.set("carebase_lang", "zh")
    assert "<h1>视频问诊</h1>" in (await web.get("/telehealth/visit")).text
