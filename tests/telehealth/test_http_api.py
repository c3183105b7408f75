"""The telehealth HTTP API on a live server: publish, search, book, reschedule, cancel,
messages with attachments; OperationOutcomes for bad input; every call audited."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from telehealth_helpers import pattern


def _api(visit: Any) -> str:
    return f"{visit.server.http}/telehealth/api"


def test_scheduling_over_http(visit: Any) -> None:
    api = _api(visit)
    r = httpx.post(
        f"{api}/schedules",
        json=pattern(weekly={"fri": [["10:00", "11:00"]]}, visitTypes=["virtual"]),
        headers=visit.headers("clinician"),
    )
    assert r.status_code == 201, r.text
    assert r.json()["slots"] == 2
    r = httpx.post(
        f"{api}/schedules", json=pattern(slotMinutes="x"), headers=visit.headers("clinician")
    )
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["expression"] == ["slotMinutes"]
    r = httpx.post(f"{api}/schedules", json=pattern(), headers=visit.headers("front-desk"))
    assert r.status_code == 403
    r = httpx.get(
        f"{api}/slots",
        params={"practitioner": "Practitioner/doc", "visit-type": "virtual"},
        headers=visit.headers("patient"),
    )
    assert r.status_code == 200
    slots = [e["resource"] for e in r.json()["entry"]]
    assert slots and all(s["status"] == "free" for s in slots)
    r = httpx.post(
        f"{api}/appointments",
        json={"slot": f"Slot/{slots[0]['id']}", "patient": "Patient/pat2", "visitType": "virtual"},
        headers=visit.headers("patient"),
    )
    assert r.status_code == 403  # pat1 books for pat2
    r = httpx.post(
        f"{api}/appointments",
        json={
            "slot": f"Slot/{slots[0]['id']}",
            "patient": "Patient/pat1",
            "visitType": "virtual",
            "reason": "cough",
        },
        headers=visit.headers("patient"),
    )
    assert r.status_code == 201, r.text
    appointment = r.json()
    r = httpx.post(
        f"{api}/appointments",
        json={"slot": f"Slot/{slots[0]['id']}", "patient": "Patient/pat2", "visitType": "virtual"},
        headers=visit.headers("front-desk"),
    )
    assert r.status_code == 409
    r = httpx.post(
        f"{api}/appointments/{appointment['id']}/reschedule",
        json={"slot": f"Slot/{slots[1]['id']}"},
        headers=visit.headers("front-desk"),
    )
    assert r.status_code == 200 and r.json()["slot"] == [{"reference": f"Slot/{slots[1]['id']}"}]
    r = httpx.post(
        f"{api}/appointments/{appointment['id']}/cancel",
        json={"reason": "travel"},
        headers=visit.headers("other-patient"),
    )
    assert r.status_code == 404  # another patient's appointment is not theirs to see
    r = httpx.post(
        f"{api}/appointments/{appointment['id']}/cancel",
        json={"reason": "travel"},
        headers=visit.headers("patient"),
    )
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = httpx.post(f"{api}/appointments", content=b"{oops", headers=visit.headers("front-desk"))
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["$"]
    r = httpx.get(f"{api}/slots")
    assert r.status_code == 401
    entries = visit.audit.entries
    paths = [
        e.description for e in entries if e.description and "/telehealth/api/" in e.description
    ]
    assert any("/appointments -> 201" in p for p in paths)
    assert any("/appointments -> 403" in p for p in paths)
    assert any("/cancel -> 404" in p for p in paths)
    booked = next(
        e for e in entries if e.description and e.description.endswith("/appointments -> 201")
    )
    assert booked.patients == ("pat1",) and f"Appointment/{appointment['id']}" in booked.entities


def test_messages_between_visits(visit: Any) -> None:
    api = _api(visit)
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    body = {
        "patient": "Patient/pat1",
        "recipient": "Practitioner/doc",
        "text": "my rash",
        "attachment": {
            "contentType": "image/png",
            "data": base64.b64encode(png).decode(),
            "title": "rash",
        },
    }
    r = httpx.post(f"{api}/messages", json=body, headers=visit.headers("clinician"))
    assert r.status_code == 201, r.text
    sent = r.json()
    assert sent["resourceType"] == "Communication" and sent["payload"][1]["contentAttachment"][
        "size"
    ] == len(png)
    bad = {
        **body,
        "attachment": {"contentType": "image/png", "data": base64.b64encode(b"MZ\x90").decode()},
    }
    r = httpx.post(f"{api}/messages", json=bad, headers=visit.headers("clinician"))
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["attachment.data"]
    r = httpx.post(
        f"{api}/messages",
        json={**body, "patient": "Patient/pat2"},
        headers=visit.headers("patient"),
    )
    assert r.status_code in (403, 404)
    r = httpx.get(
        f"{api}/messages", params={"patient": "Patient/pat1"}, headers=visit.headers("patient")
    )
    assert r.status_code == 200 and [e["resource"]["id"] for e in r.json()["entry"]] == [sent["id"]]
    r = httpx.get(
        f"{api}/messages",
        params={"patient": "Patient/pat1"},
        headers=visit.headers("other-patient"),
    )
    assert r.status_code == 200 and r.json()["entry"] == []
