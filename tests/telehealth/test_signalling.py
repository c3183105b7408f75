"""The signalling protocol over real WebSockets on a live server (SQLite and PostgreSQL):
waiting room, admit, offer/answer/ICE relay, chat, bad frames, tokens, reconnect, capacity,
keep-alive, the Encounter, and the audit trail."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
from telehealth_helpers import Peer, state_of, ws_url

from carebase.telehealth.scheduling import body_of


async def _admitted_pair(visit: Any) -> tuple[Peer, Peer, str, str]:
    doc_grant, pat_grant = visit.join_grant("clinician"), visit.join_grant("patient")
    doc = await Peer.open(ws_url(visit), doc_grant["token"])
    joined = await doc.expect("joined")
    assert joined["state"] == "admitted" and joined["role"] == "clinician"
    pat = await Peer.open(ws_url(visit), pat_grant["token"])
    me = await pat.expect("joined")
    assert me["state"] == "waiting"
    # the waiting patient sees only itself, and that the clinician is there
    assert [p["id"] for p in me["room"]["participants"]] == [pat_grant["participant"]]
    assert me["room"]["clinicianPresent"] is True
    pid = pat_grant["participant"]
    await doc.room_where(lambda room: state_of(room, pid) == "waiting")
    await doc.send({"type": "admit", "participant": pid})
    await pat.room_where(lambda room: state_of(room, pid) == "admitted")
    return doc, pat, doc_grant["participant"], pid


@pytest.mark.asyncio
async def test_a_visit_end_to_end(visit: Any) -> None:
    doc, pat, doc_id, pat_id = await _admitted_pair(visit)
    await doc.send({"type": "offer", "to": pat_id, "sdp": "v=0 offer"})
    assert (await pat.expect("offer"))["sdp"] == "v=0 offer"
    await pat.send({"type": "answer", "to": doc_id, "sdp": "v=0 answer"})
    got = await doc.expect("answer")
    assert got["from"] == pat_id and got["sdp"] == "v=0 answer"
    candidate = {"candidate": "candidate:1 1 UDP 1 127.0.0.1 5000 typ host", "sdpMid": "0"}
    await pat.send({"type": "ice", "to": doc_id, "candidate": candidate})
    assert (await doc.expect("ice"))["candidate"] == candidate
    await doc.send({"type": "offer", "to": pat_id, "sdp": "v=0 renegotiated"})  # renegotiation
    assert (await pat.expect("offer"))["sdp"] == "v=0 renegotiated"
    await pat.send({"type": "chat", "text": "hello doctor"})
    line = await doc.expect("chat")
    assert line["text"] == "hello doctor" and line["from"] == pat_id
    # the visit is in the record: an Encounter (class VR) linked to the Appointment
    page = visit.store.search("Encounter", [("appointment", f"Appointment/{visit.room}")])
    assert len(page.entries) == 1
    enc = body_of(page.entries[0])
    assert enc["class"]["code"] == "VR" and enc["status"] == "in-progress"
    assert enc["participant"][0]["individual"] == {"reference": "Practitioner/doc"}
    assert enc["subject"] == {"reference": "Patient/pat1"}
    chat = body_of(visit.store.read("Communication", line["id"]))
    assert chat["payload"] == [{"contentString": "hello doctor"}]
    assert chat["encounter"] == {"reference": f"Encounter/{enc['id']}"}
    await doc.send({"type": "end"})
    await pat.room_where(lambda room: room["ended"])
    enc = body_of(visit.store.read("Encounter", enc["id"]))
    assert enc["status"] == "finished" and "end" in enc["period"]
    assert body_of(visit.store.read("Appointment", visit.room))["status"] == "fulfilled"
    kinds = visit.audit.interactions()
    for what in ("join", "admit", "signal", "chat", "end"):
        assert f"telehealth-{what}" in kinds, what
    assert kinds.count("telehealth-signal") == 4
    await doc.close()
    await pat.close()


@pytest.mark.asyncio
async def test_bad_frames_get_error_frames_and_the_room_carries_on(visit: Any) -> None:
    doc, pat, doc_id, _pat_id = await _admitted_pair(visit)
    await pat.ws.send("{not json")
    assert (await pat.expect("error"))["code"] == "malformed"
    await pat.ws.send(orjson.dumps({"type": "offer", "to": doc_id, "sdp": "x" * 70_000}).decode())
    assert (await pat.expect("error"))["code"] == "too-large"
    await pat.ws.send(b"\x00\x01binary")
    assert (await pat.expect("error"))["code"] == "protocol"
    for frame, code in [
        ([1, 2], "malformed"),
        ({"type": "teleport"}, "unknown-type"),
        ({"type": "offer", "to": "nobody", "sdp": "v=0"}, "bad-target"),
        ({"type": "offer", "to": doc_id}, "malformed"),
        ({"type": "ice", "to": doc_id, "candidate": "text"}, "malformed"),
        ({"type": "admit", "participant": doc_id}, "refused"),  # patients admit nobody
        ({"type": "chat", "text": ""}, "malformed"),
    ]:
        await pat.send(frame)  # type: ignore[arg-type]
        assert (await pat.expect("error"))["code"] == code, frame
    await pat.send({"type": "ping", "t": 7})
    assert (await pat.expect("pong"))["t"] == 7
    await pat.send({"type": "offer", "to": doc_id, "sdp": "v=0 still fine"})
    assert (await doc.expect("offer"))["sdp"] == "v=0 still fine"
    await doc.close()
    await pat.close()


@pytest.mark.asyncio
async def test_a_waiting_patient_cannot_signal_and_a_declined_one_cannot_return(visit: Any) -> None:
    doc_grant, pat_grant = visit.join_grant("clinician"), visit.join_grant("patient")
    doc = await Peer.open(ws_url(visit), doc_grant["token"])
    await doc.expect("joined")
    pat = await Peer.open(ws_url(visit), pat_grant["token"])
    await pat.expect("joined")
    await pat.send({"type": "offer", "to": doc_grant["participant"], "sdp": "v=0"})
    assert (await pat.expect("error"))["code"] == "not-admitted"
    await pat.send({"type": "chat", "text": "let me in"})
    assert (await pat.expect("error"))["code"] == "not-admitted"
    await doc.send({"type": "decline", "participant": pat_grant["participant"]})
    await pat.room_where(lambda room: state_of(room, pat_grant["participant"]) == "declined")
    again = await Peer.open(ws_url(visit), visit.join_grant("patient")["token"])
    refused = await again.expect("error")
    assert refused["code"] == "refused" and "declined" in refused["message"]
    await doc.close()


@pytest.mark.asyncio
async def test_tokens_expired_foreign_or_not_join_tokens_are_refused(visit: Any) -> None:
    tokens = visit.app.state.telehealth.tokens
    expired, _ = tokens.issue(
        room=visit.room,
        role="patient",
        participant="patient-pat1",
        display="x",
        subject="u-pat1",
        ttl=-120,
    )
    foreign, _ = tokens.issue(
        room="another-room",
        role="patient",
        participant="patient-pat1",
        display="x",
        subject="u-pat1",
    )
    for token, says in [
        (expired, "expired"),
        (foreign, "another room"),
        (visit.bearers["patient"], "not a room join token"),
        ("garbage", "not a JWT"),
    ]:
        peer = await Peer.open(ws_url(visit), token)
        frame = await peer.expect("error")
        assert frame["code"] == "unauthorized" and says in frame["message"], frame
        await asyncio.wait_for(peer.ws.wait_closed(), 5)
        assert peer.ws.close_code == 4401
    peer = await Peer.open(ws_url(visit))
    await peer.send({"type": "offer", "to": "x", "sdp": "v=0"})
    assert (await peer.expect("error"))["code"] == "protocol"
    refusals = [
        e for e in visit.audit.entries if e.interaction == "telehealth-join" and e.outcome == "4"
    ]
    assert len(refusals) == 4


def test_join_tokens_only_for_the_appointments_people(visit: Any) -> None:
    url = f"{visit.server.http}/telehealth/api/appointments/{visit.room}"
    r = httpx.post(f"{url}/join", headers=visit.headers("other-patient"))
    assert r.status_code == 404  # not theirs: as if it did not exist
    r = httpx.post(f"{url}/join", headers=visit.headers("front-desk"))
    assert r.status_code == 403
    r = httpx.post(f"{url}/join")
    assert r.status_code == 401
    r = httpx.post(
        f"{url}/invite",
        json={"name": "Ana", "kind": "interpreter"},
        headers=visit.headers("patient"),
    )
    assert r.status_code == 403
    r = httpx.post(
        f"{url}/invite",
        json={"name": "Ana", "kind": "interpreter"},
        headers=visit.headers("clinician"),
    )
    assert r.status_code == 200 and r.json()["role"] == "guest"
    r = httpx.post(
        f"{url}/invite", json={"kind": "interpreter"}, headers=visit.headers("clinician")
    )
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["name"]


@pytest.mark.asyncio
async def test_reconnect_resumes_the_same_participant(visit: Any) -> None:
    doc, pat, _doc_id, pat_id = await _admitted_pair(visit)
    pat.ws.transport.abort()  # a network drop: no closing handshake
    again = await Peer.open(ws_url(visit), visit.join_grant("patient")["token"])
    joined = await again.expect("joined")
    assert joined["participant"] == pat_id and joined["state"] == "admitted"
    await doc.send({"type": "offer", "to": pat_id, "sdp": "v=0 after reconnect"})
    assert (await again.expect("offer"))["sdp"] == "v=0 after reconnect"
    await doc.close()
    await again.close()


@pytest.mark.asyncio
async def test_a_second_connection_replaces_the_first(visit: Any) -> None:
    doc, pat, _doc_id, _pat_id = await _admitted_pair(visit)
    second = await Peer.open(ws_url(visit), visit.join_grant("patient")["token"])
    await second.expect("joined")
    await asyncio.wait_for(pat.ws.wait_closed(), 5)
    assert pat.ws.close_code == 4000
    await doc.close()
    await second.close()


@pytest.mark.asyncio
async def test_a_dropped_participant_leaves_after_the_resume_window(visit_factory: Any) -> None:
    visit = visit_factory(resume_seconds=0.3)
    doc, pat, _doc_id, pat_id = await _admitted_pair(visit)
    await pat.close()
    await doc.room_where(lambda room: state_of(room, pat_id) == "left")
    await doc.close()


@pytest.mark.asyncio
async def test_keep_alive_drops_a_silent_peer(visit_factory: Any) -> None:
    visit = visit_factory(ping_seconds=0.2)
    grant = visit.join_grant("patient")
    silent = await Peer.open(ws_url(visit), grant["token"])
    await silent.expect("joined")
    started = time.monotonic()
    await asyncio.wait_for(silent.ws.wait_closed(), 5)
    assert silent.ws.close_code == 1011 and time.monotonic() - started >= 0.4


@pytest.mark.asyncio
async def test_at_most_four_participants(visit: Any) -> None:
    url = f"{visit.server.http}/telehealth/api/appointments/{visit.room}/invite"
    peers = [await Peer.open(ws_url(visit), visit.join_grant("clinician")["token"])]
    await peers[0].expect("joined")
    for name in ("A", "B", "C", "D"):
        r = httpx.post(url, json={"name": name}, headers=visit.headers("clinician"))
        peers.append(await Peer.open(ws_url(visit), r.json()["token"]))
        if name != "D":
            await peers[-1].expect("joined")
    refused = await peers[-1].expect("error")
    assert refused["code"] == "refused" and "full" in refused["message"]
    for peer in peers[:-1]:
        await peer.close()


@pytest.mark.parametrize("who", ["clinician", "patient"])
def test_room_endpoint_shows_what_the_caller_may_see(visit: Any, who: str) -> None:
    r = httpx.get(
        f"{visit.server.http}/telehealth/api/appointments/{visit.room}/room",
        headers=visit.headers(who),
    )
    assert r.status_code == 200 and r.json()["participants"] == []
