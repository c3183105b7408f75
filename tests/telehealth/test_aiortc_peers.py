"""Two real WebRTC peers (aiortc) connect through our signalling server over localhost and
exchange video frames: the clinician admits the patient, offers, the patient answers (ICE
candidates travel inside the SDP), and each side receives frames of the other's track."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from telehealth_helpers import Peer, state_of

aiortc = pytest.importorskip("aiortc", reason="aiortc is a test extra (pip install aiortc)")


def _ws(visit: Any) -> str:
    return f"{visit.server.ws}/telehealth/ws/{visit.room}"


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
    from aiortc import RTCSessionDescription
    from aiortc.mediastreams import VideoStreamTrack

    doc_grant, pat_grant = visit.join_grant("clinician"), visit.join_grant("patient")
    doc = await Peer.open(_ws(visit), doc_grant["token"])
    doc_joined = await doc.expect("joined")
    pat = await Peer.open(_ws(visit), pat_grant["token"])
    pat_joined = await pat.expect("joined")
    pid, did = pat_grant["participant"], doc_grant["participant"]
    await doc.room_where(lambda room: state_of(room, pid) == "waiting")
    await doc.send({"type": "admit", "participant": pid})
    await pat.room_where(lambda room: state_of(room, pid) == "admitted")

    doc_pc, pat_pc = _connection(doc_joined["iceServers"]), _connection(pat_joined["iceServers"])
    received: dict[str, asyncio.Future[Any]] = {
        "doc": asyncio.get_running_loop().create_future(),
        "pat": asyncio.get_running_loop().create_future(),
    }
    doc_pc.on(
        "track", lambda track: received["doc"].set_result(track) if track.kind == "video" else None
    )
    pat_pc.on(
        "track", lambda track: received["pat"].set_result(track) if track.kind == "video" else None
    )
    doc_pc.addTrack(VideoStreamTrack())
    pat_pc.addTrack(VideoStreamTrack())
    try:
        await doc_pc.setLocalDescription(await doc_pc.createOffer())
        await doc.send({"type": "offer", "to": pid, "sdp": doc_pc.localDescription.sdp})
        offer = await pat.expect("offer")
        await pat_pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        await pat_pc.setLocalDescription(await pat_pc.createAnswer())
        await pat.send({"type": "answer", "to": did, "sdp": pat_pc.localDescription.sdp})
        answer = await doc.expect("answer")
        await doc_pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        doc_track = await asyncio.wait_for(received["doc"], 20)
        pat_track = await asyncio.wait_for(received["pat"], 20)
        doc_frames = await asyncio.wait_for(_frames(doc_track, 5), 30)
        pat_frames = await asyncio.wait_for(_frames(pat_track, 5), 30)
        assert all(f.width == 640 and f.height == 480 for f in doc_frames + pat_frames)
        assert doc_pc.connectionState == "connected" and pat_pc.connectionState == "connected"
    finally:
        await doc_pc.close()
        await pat_pc.close()
        await doc.close()
        await pat.close()
