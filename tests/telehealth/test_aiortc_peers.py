"""Two real WebRTC peers (aiortc) connect through our signalling server over localhost and
exchange video frames: the clinician admits the patient, offers, the patient answers (ICE
candidates travel inside the SDP), and each side receives frames of the other's track; a
small group (clinician, patient and an invited interpreter) in a full mesh; and after a
network drop the patient rejoins with its token and renegotiates the call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from telehealth_helpers import Peer, invite, join_admitted, state_of, ws_url

aiortc = pytest.importorskip("aiortc", reason="aiortc is a test extra (pip install aiortc)")


def _connection(ice: list[dict[str, Any]]) -> Any:
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

    servers = [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
        for s in ice
    ]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers))  # no public STUN: offline


async def _frames(track: Any, count: int) -> list[Any]:
    return [await track.recv() for _ in range(count)]


@pytest.mark.asyncio
async def test_two_aiortc_peers_exchange_video_through_our_signalling(visit: Any) -> None:
    doc_grant, pat_grant = visit.join_grant("clinician"), visit.join_grant("patient")
    doc = await Peer.open(ws_url(visit), doc_grant["token"])
    ice = (await doc.expect("joined"))["iceServers"]
    pat = await Peer.open(ws_url(visit), pat_grant["token"])
    await pat.expect("joined")
    pid, did = pat_grant["participant"], doc_grant["participant"]
    await doc.room_where(lambda room: state_of(room, pid) == "waiting")
    await doc.send({"type": "admit", "participant": pid})
    await pat.room_where(lambda room: state_of(room, pid) == "admitted")
    pcs: list[Any] = []
    try:
        doc_pc, pat_pc, doc_track, pat_track = await _call(doc, pat, did, pid, ice)
        pcs += [doc_pc, pat_pc]
        doc_frames = await asyncio.wait_for(_frames(doc_track, 5), 30)
        pat_frames = await asyncio.wait_for(_frames(pat_track, 5), 30)
        assert all(f.width == 640 and f.height == 480 for f in doc_frames + pat_frames)
        assert doc_pc.connectionState == "connected" and pat_pc.connectionState == "connected"
    finally:
        for pc in pcs:
            await pc.close()
        await doc.close()
        await pat.close()


async def _call(
    offerer: Peer, answerer: Peer, offerer_id: str, answerer_id: str, ice: list[dict[str, Any]]
) -> tuple[Any, Any, Any, Any]:
    """A new call between two joined peers over our signalling, offerer first: (offerer's
    connection, answerer's, the video track each receives)."""
    from aiortc import RTCSessionDescription
    from aiortc.mediastreams import VideoStreamTrack

    pcs = [_connection(ice), _connection(ice)]
    loop = asyncio.get_running_loop()
    got: list[asyncio.Future[Any]] = [loop.create_future(), loop.create_future()]
    for pc, future in zip(pcs, got, strict=True):
        pc.on("track", lambda t, f=future: f.set_result(t) if t.kind == "video" else None)
        pc.addTrack(VideoStreamTrack())
    await pcs[0].setLocalDescription(await pcs[0].createOffer())
    await offerer.send({"type": "offer", "to": answerer_id, "sdp": pcs[0].localDescription.sdp})
    offer = await answerer.expect("offer", **{"from": offerer_id})
    await pcs[1].setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
    await pcs[1].setLocalDescription(await pcs[1].createAnswer())
    await answerer.send({"type": "answer", "to": offerer_id, "sdp": pcs[1].localDescription.sdp})
    answer = await offerer.expect("answer", **{"from": answerer_id})
    await pcs[0].setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    tracks = [await asyncio.wait_for(f, 20) for f in got]
    return pcs[0], pcs[1], tracks[0], tracks[1]


@pytest.mark.asyncio
@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_after_a_network_drop_the_patient_rejoins_and_renegotiates(visit: Any) -> None:
    doc_grant, pat_grant = visit.join_grant("clinician"), visit.join_grant("patient")
    pid, did = pat_grant["participant"], doc_grant["participant"]
    doc = await Peer.open(ws_url(visit), doc_grant["token"])
    ice = (await doc.expect("joined"))["iceServers"]
    pat = await Peer.open(ws_url(visit), pat_grant["token"])
    await pat.expect("joined")
    await doc.room_where(lambda room: state_of(room, pid) == "waiting")
    await doc.send({"type": "admit", "participant": pid})
    await pat.room_where(lambda room: state_of(room, pid) == "admitted")
    pcs: list[Any] = []
    try:
        doc_pc, pat_pc, _, at_pat = await _call(doc, pat, did, pid, ice)
        pcs += [doc_pc, pat_pc]
        await asyncio.wait_for(_frames(at_pat, 3), 30)
        # the patient's network drops: its socket and its media connection are gone
        pat.ws.transport.abort()  # no close frame: the server sees the connection vanish
        await pat_pc.close()
        # it comes back with the same token: the same participant, still admitted
        pat = await Peer.open(ws_url(visit), pat_grant["token"])
        back = await pat.expect("joined")
        assert back["participant"] == pid and back["state"] == "admitted"
        # and, being the one that reconnected, renegotiates the call through the signalling
        pat_pc2, doc_pc2, at_pat2, at_doc2 = await _call(pat, doc, pid, did, ice)
        pcs += [doc_pc2, pat_pc2]
        frames = await asyncio.wait_for(_frames(at_doc2, 5), 30)
        assert all(f.width == 640 for f in frames)
        await asyncio.wait_for(_frames(at_pat2, 5), 30)
        assert doc_pc2.connectionState == "connected" == pat_pc2.connectionState
        room = visit.app.state.telehealth.hub.snapshots[visit.room]
        assert [p.id for p in room.participants.values() if p.role == "patient"] == [pid]
    finally:
        for pc in pcs:
            await pc.close()
        await doc.close()
        await pat.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_a_small_group_visit_is_a_mesh_of_calls(visit: Any) -> None:
    """Clinician, patient and an interpreter: each pair has its own call, as the visit page
    makes one connection per other participant; everyone receives everyone's video."""
    doc_grant = visit.join_grant("clinician")
    doc = await Peer.open(ws_url(visit), doc_grant["token"])
    ice = (await doc.expect("joined"))["iceServers"]
    pat_grant, int_grant = visit.join_grant("patient"), invite(visit, "Ana Lima", "interpreter")
    pat = await join_admitted(visit, doc, pat_grant)
    interp = await join_admitted(visit, doc, int_grant)
    peers = {
        doc_grant["participant"]: doc,
        pat_grant["participant"]: pat,
        int_grant["participant"]: interp,
    }
    ids = list(peers)
    pcs: list[Any] = []
    received: list[Any] = []
    try:
        for a, b in ((0, 1), (0, 2), (1, 2)):  # three calls, one per pair
            pc_a, pc_b, track_a, track_b = await _call(
                peers[ids[a]], peers[ids[b]], ids[a], ids[b], ice
            )
            pcs += [pc_a, pc_b]
            received += [track_a, track_b]
        for track in received:  # each participant gets frames from each of the other two
            frames = await asyncio.wait_for(_frames(track, 3), 30)
            assert all(f.width == 640 and f.height == 480 for f in frames)
        assert all(pc.connectionState == "connected" for pc in pcs)
    finally:
        for pc in pcs:
            await pc.close()
        for peer in peers.values():
            await peer.close()
