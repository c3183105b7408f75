"""Guests and interpreters invited by the clinician: listed in the visit's Encounter with
their role, and audited under their own identity on behalf of the inviting clinician."""

from __future__ import annotations

from typing import Any

import pytest
from telehealth_helpers import Peer, invite, join_admitted, ws_url

from carebase.auth.audit_event import to_audit_event
from carebase.telehealth.encounter import GUEST_SYSTEM
from carebase.telehealth.scheduling import body_of


@pytest.mark.asyncio
async def test_guests_are_encounter_participants_audited_as_themselves(visit: Any) -> None:
    doc = await Peer.open(ws_url(visit), visit.join_grant("clinician")["token"])
    await doc.expect("joined")
    pat = await join_admitted(visit, doc, visit.join_grant("patient"))
    interpreter_grant = invite(visit, "Ana Lima", "interpreter")
    guest_grant = invite(visit, "Sam Carer", "guest")
    interpreter = await join_admitted(visit, doc, interpreter_grant)
    guest = await join_admitted(visit, doc, guest_grant)
    await interpreter.send({"type": "chat", "text": "I will translate"})
    await doc.expect("chat", text="I will translate")

    # the Encounter lists both, by name, with their role and their participant id
    page = visit.store.search("Encounter", [("appointment", f"Appointment/{visit.room}")])
    assert len(page.entries) == 1
    enc = body_of(page.entries[0])
    by_id = {
        (p["individual"].get("identifier") or {}).get("value"): p
        for p in enc["participant"]
        if "identifier" in p["individual"]
    }
    interp = by_id[interpreter_grant["participant"]]
    assert interp["individual"]["display"] == "Ana Lima (interpreter)"
    assert interp["individual"]["identifier"]["system"] == GUEST_SYSTEM
    assert interp["type"][0]["coding"][0]["code"] == "translator"
    assert by_id[guest_grant["participant"]]["type"][0]["coding"][0]["code"] == "PART"
    assert [p["individual"].get("reference") for p in enc["participant"]].count(
        "Practitioner/doc"
    ) == 1
    # a reconnect or a second admission does not list a guest twice
    await interpreter.close()
    again = await Peer.open(ws_url(visit), interpreter_grant["token"])
    await again.expect("joined")
    await guest.send({"type": "chat", "text": "still here"})
    await doc.expect("chat", text="still here")
    enc = body_of(visit.store.read("Encounter", enc["id"]))
    assert len(enc["participant"]) == 3

    # audited under the guest's own identity, on behalf of the inviting clinician
    mine = [
        e
        for e in visit.audit.entries
        if e.principal is not None
        and e.principal.subject == f"guest/{interpreter_grant['participant']}"
    ]
    assert {e.interaction for e in mine} >= {"telehealth-join", "telehealth-chat"}
    for entry in mine:
        assert entry.principal.role == "interpreter"
        assert entry.principal.username == "Ana Lima (interpreter)"
        assert entry.principal.fhir_user is None
        assert "on behalf of Practitioner/doc" in (entry.description or "")
    event = to_audit_event(mine[0], "e1")
    agent = event["agent"][0]
    assert agent["who"]["display"] == "Ana Lima (interpreter)"
    assert agent["altId"] == f"guest/{interpreter_grant['participant']}"
    assert agent["role"][0]["coding"][0]["code"] == "interpreter"
    assert mine[0].principal.on_behalf_of == "Practitioner/doc"
    assert agent["extension"][0]["valueReference"] == {"reference": "Practitioner/doc"}
    # nothing the guests did is recorded under the clinician
    doc_entries = [
        e for e in visit.audit.entries if e.principal is not None and e.principal.subject == "u-doc"
    ]
    assert doc_entries and not [
        e
        for e in doc_entries
        if e.interaction in ("telehealth-join", "telehealth-chat")
        and "guest-" in str(e.description)
    ]
    for peer in (doc, pat, again, guest):
        await peer.close()
