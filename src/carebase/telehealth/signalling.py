"""WebRTC signalling over WebSocket: `Hub.serve` runs one participant's connection.

Protocol (JSON text frames; docs/telehealth.md has the full table). The first frame is
`{"type": "join", "token": <room join token>}`; a missing, expired or foreign token is
answered with an `error` frame and close code 4401. Then the client sends `offer`, `answer`
and `ice` frames `{"to": <participant id>, "sdp"|"candidate": ...}` (relayed to that
participant, wherever it is connected: renegotiation is just another offer), `chat`
(`{"text"}`), `ping` (answered `pong`; the server pings too and drops a peer silent for three
intervals), `leave`, and for clinicians `admit`/`decline` (`{"participant"}`) and `end`.
The server sends `joined`, `room` (the waiting room as this participant may see it), the
relayed frames with `from`, `chat`, `error` and `ping`/`pong`.

Malformed, oversized, unknown or not-allowed frames get an `error` frame and the connection
and room carry on. A dropped connection is not a leave: the participant may reconnect with
a join token for the same participant id within `resume_seconds` and is back in its state
(a newer connection replaces an older one on any worker). Every join, refusal, admit,
decline, leave, end and relayed message is recorded on the audit trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from carebase.auth.audit_entry import AuditTrail
from carebase.errors import CarebaseError, Unauthorized, Unavailable
from carebase.store.base import Store
from carebase.telehealth import encounter, messages
from carebase.telehealth.access import record
from carebase.telehealth.bus import Bus
from carebase.telehealth.join_tokens import JoinGrant, JoinTokens
from carebase.telehealth.room_state import Room
from carebase.telehealth.room_store import RoomStore, now_ms
from carebase.telehealth.scheduling import appointment_patient, body_of
from carebase.telehealth.settings import TelehealthSettings
from carebase.telehealth.turn import ice_servers

log = logging.getLogger("carebase.telehealth.signalling")

RELAYED = ("offer", "answer", "ice")
JOIN_TIMEOUT = 10.0
#: WebSocket close codes: bad first frame, refused token, room refused, replaced, ended
CLOSE_PROTOCOL, CLOSE_UNAUTHORIZED, CLOSE_REFUSED, CLOSE_REPLACED, CLOSE_ENDED = (
    4400,
    4401,
    4409,
    4000,
    4001,
)


class FrameError(Exception):
    """A frame the server refuses (answered with an error frame; the connection stays)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


#: Frames waiting for a slow peer, at most; past that the peer is dropped (it may resume).
MAX_OUTBOX = 256


@dataclass(eq=False, slots=True)
class Connection:
    """One live WebSocket of one participant on this worker.

    Frames to the peer go through an outbox that a writer task of its own drains, so a peer
    that reads slowly (or not at all) never holds up whoever sends to it: another
    participant's receive loop, or the bus listener delivering for every room.
    """

    ws: WebSocket
    grant: JoinGrant
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    last_seen: float = field(default_factory=time.monotonic)
    #: when the server pings next (set from `ping_seconds` when the connection joins)
    next_ping: float = 0.0
    closed: bool = False
    outbox: asyncio.Queue[str | tuple[int, str]] = field(default_factory=asyncio.Queue)
    writer: asyncio.Task[None] | None = None

    @property
    def room(self) -> str:
        return self.grant.room

    @property
    def pid(self) -> str:
        return self.grant.participant

    def start(self) -> None:
        """Start the writer task (once the connection is admitted to the room)."""
        self.writer = asyncio.create_task(self._write(), name=f"telehealth-writer-{self.id}")

    async def send(self, frame: dict[str, Any]) -> None:
        """Queue `frame` for the peer (returns at once)."""
        if self.closed:
            return
        if self.outbox.qsize() >= MAX_OUTBOX:
            log.warning(
                "dropping a participant of room %s: %d frames unread", self.room, MAX_OUTBOX
            )
            await self.close(1013, "too slow: reconnect")
            return
        self.outbox.put_nowait(orjson.dumps(frame).decode())

    async def close(self, code: int, reason: str = "") -> None:
        """Close after the frames already queued (at once when no writer runs)."""
        if self.closed:
            return
        self.closed = True
        if self.writer is None or self.writer.done():
            await self._close_now(code, reason)
        else:
            self.outbox.put_nowait((code, reason))

    async def _write(self) -> None:
        while True:
            item = await self.outbox.get()
            if isinstance(item, tuple):
                await self._close_now(*item)
                return
            try:
                await self.ws.send_text(item)
            except (RuntimeError, WebSocketDisconnect, OSError):
                self.closed = True
                return

    async def _close_now(self, code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
            if self.ws.application_state != WebSocketState.DISCONNECTED:
                await self.ws.close(code, reason[:120])

    def stop(self) -> None:
        """Stop the writer (the socket is gone)."""
        self.closed = True
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()


class Hub:
    """The rooms' connections on this worker, and the bus to the other workers."""

    def __init__(
        self,
        *,
        store: Store,
        rooms: RoomStore,
        bus: Bus,
        tokens: JoinTokens,
        settings: TelehealthSettings,
        trail: Callable[[], AuditTrail | None],
    ) -> None:
        self.store, self.rooms, self.bus, self.tokens = store, rooms, bus, tokens
        self.settings, self._trail = settings, trail
        #: tags this worker's events, so it skips them when the bus brings them back
        self.worker = uuid.uuid4().hex
        self.local: dict[str, dict[str, Connection]] = {}
        self.snapshots: dict[str, Room] = {}
        self._leaving: dict[str, asyncio.TimerHandle] = {}
        self._pinger: asyncio.Task[None] | None = None
        self.relayed = 0

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.bus.start(self.on_event)
        self._pinger = asyncio.create_task(self._ping_loop(), name="telehealth-ping")

    async def stop(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
        for handle in self._leaving.values():
            handle.cancel()
        for conns in list(self.local.values()):
            for conn in list(conns.values()):
                await conn.close(1001, "server shutting down")
        await self.bus.close()

    # --- audit -----------------------------------------------------------------------------
    def audit(
        self,
        who: JoinGrant | None,
        what: str,
        room: str,
        *,
        outcome: str = "0",
        action: str = "E",
        detail: str = "",
        ws: WebSocket | None = None,
        patients: tuple[str, ...] = (),
    ) -> None:
        trail = self._trail()
        if trail is None:
            raise Unavailable("The audit trail is not running; try again shortly")
        client = ws.client if ws is not None else None
        note = who.audit_note() if who is not None else ""
        record(
            trail,
            who.principal() if who is not None else None,
            f"telehealth-{what}",
            action,  # type: ignore[arg-type]
            outcome=outcome,  # type: ignore[arg-type]
            entities=(f"Appointment/{room}",),
            patients=patients,
            description=f"visit {room}: {what} {detail} {note}".strip(),
            source_ip=client.host if client else None,
        )

    # --- one connection --------------------------------------------------------------------
    async def serve(self, ws: WebSocket, room: str) -> None:
        """Run one participant's WebSocket until it closes."""
        await ws.accept()
        conn: Connection | None = None
        try:
            grant = await self._join_grant(ws, room)
            if grant is None:
                return
            conn = await self._admit_connection(ws, grant)
            if conn is None:
                return
            await self._receive_loop(conn)
        except WebSocketDisconnect:
            pass
        finally:
            if conn is not None:
                if conn.closed and conn.writer is not None and not conn.writer.done():
                    # closed by us: let the writer send what is queued, then the close
                    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                        await asyncio.wait_for(asyncio.shield(conn.writer), 5)
                await self._dropped(conn)

    async def _join_grant(self, ws: WebSocket, room: str) -> JoinGrant | None:
        try:
            message = await asyncio.wait_for(ws.receive(), JOIN_TIMEOUT)
        except TimeoutError:
            await _refuse(ws, "timeout", "No join frame within 10 s", CLOSE_PROTOCOL)
            return None
        if message["type"] == "websocket.disconnect":
            return None
        try:
            frame = self._parse(message)
            if frame.get("type") != "join" or not isinstance(frame.get("token"), str):
                raise FrameError(
                    "protocol", 'The first frame must be {"type": "join", "token": ...}'
                )
            grant = self.tokens.verify(frame["token"], room)
        except FrameError as exc:
            await _refuse(ws, exc.code, exc.message, CLOSE_PROTOCOL)
            return None
        except Unauthorized as exc:
            with contextlib.suppress(Unavailable):
                self.audit(None, "join", room, outcome="4", detail=f"refused: {exc.message}", ws=ws)
            await _refuse(ws, "unauthorized", exc.message, CLOSE_UNAUTHORIZED)
            return None
        return grant

    async def _admit_connection(self, ws: WebSocket, grant: JoinGrant) -> Connection | None:
        conn = Connection(ws, grant, next_ping=time.monotonic() + self.settings.ping_seconds)
        now = now_ms()

        def arrive(room: Room) -> None:
            reference = grant.fhir_user or "" if grant.role != "guest" else ""
            joined = room.check_in(grant.participant, grant.role, grant.display, now, reference)
            joined.kind = grant.kind
            room.connect(grant.participant, now, conn.id)

        try:
            snapshot, _ = await run_in_threadpool(self.rooms.change, grant.room, arrive)
            self.audit(
                grant,
                "join",
                grant.room,
                detail=f"{grant.role} {grant.participant}",
                ws=ws,
                patients=self._patients(grant.room),
            )
        except CarebaseError as exc:
            with contextlib.suppress(Unavailable):
                self.audit(
                    grant,
                    "join",
                    grant.room,
                    outcome="4",
                    detail=f"refused: {exc.message}",
                    ws=ws,
                )
            await _refuse(ws, "refused", exc.message, CLOSE_REFUSED)
            return None
        if grant.role == "clinician":  # joining a visit under way: into its Encounter
            await run_in_threadpool(self._visit_started, snapshot)
        handle = self._leaving.pop(f"{grant.room}/{grant.participant}", None)
        if handle is not None:
            handle.cancel()
        old = self.local.setdefault(grant.room, {}).get(grant.participant)
        self.local[grant.room][grant.participant] = conn
        conn.start()
        if old is not None:
            await old.close(CLOSE_REPLACED, "replaced by a newer connection")
        self.snapshots[grant.room] = snapshot
        me = snapshot.participants[grant.participant]
        await conn.send(
            {
                "type": "joined",
                "participant": grant.participant,
                "role": grant.role,
                "state": me.state,
                "iceServers": ice_servers(self.settings, grant.participant),
                "room": self.view(snapshot, grant.participant),
            }
        )
        await self._publish(
            {"kind": "replaced", "room": grant.room, "pid": grant.participant, "conn": conn.id}
        )
        await self._room_changed(snapshot)
        return conn

    async def _receive_loop(self, conn: Connection) -> None:
        while True:
            message = await conn.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            conn.last_seen = time.monotonic()
            try:
                frame = self._parse(message)
                if await self._handle(conn, frame):
                    return
            except FrameError as exc:
                await conn.send({"type": "error", "code": exc.code, "message": exc.message})
            except CarebaseError as exc:
                await conn.send({"type": "error", "code": "refused", "message": exc.message})
            except Exception:  # never let one frame take the room down
                log.exception("telehealth frame failed in room %s", conn.room)
                await conn.send(
                    {
                        "type": "error",
                        "code": "internal",
                        "message": "The server failed on that frame",
                    }
                )
            if conn.closed:
                return

    def _parse(self, message: MutableMapping[str, Any]) -> dict[str, Any]:
        text = message.get("text")
        if text is None:
            raise FrameError("protocol", "Frames are JSON text, not binary")
        if (
            len(text) > self.settings.max_message_bytes
            or len(text.encode()) > self.settings.max_message_bytes
        ):
            raise FrameError(
                "too-large", f"A frame holds at most {self.settings.max_message_bytes} bytes"
            )
        try:
            frame = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise FrameError("malformed", "The frame is not JSON") from exc
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            raise FrameError("malformed", 'A frame is a JSON object with a "type"')
        return frame

    async def _handle(self, conn: Connection, frame: dict[str, Any]) -> bool:
        """Act on one frame; True when the connection should end."""
        kind = frame["type"]
        if kind == "ping":
            await conn.send({"type": "pong", "t": frame.get("t")})
        elif kind == "pong":
            pass
        elif kind in RELAYED:
            await self._relay(conn, kind, frame)
        elif kind == "chat":
            await self._chat(conn, frame)
        elif kind in ("admit", "decline"):
            await self._decide(conn, kind, frame)
        elif kind == "leave":
            await self._change(conn, "leave", lambda room: room.leave(conn.pid, now_ms()))
            await conn.close(1000, "left")
            return True
        elif kind == "end":
            await self._change(
                conn,
                "end",
                lambda room: room.end(conn.pid, now_ms()),
                after=lambda _: encounter.visit_ended(self.store, conn.room),
            )
            return True
        elif kind == "join":
            raise FrameError("protocol", "Already joined")
        else:
            raise FrameError("unknown-type", f"Unknown frame type {kind[:40]!r}")
        return False

    # --- actions ---------------------------------------------------------------------------
    def _snapshot(self, conn: Connection) -> Room:
        room = self.snapshots.get(conn.room)
        if room is None:
            raise FrameError("refused", "The room is not known here")
        return room

    async def _relay(self, conn: Connection, kind: str, frame: dict[str, Any]) -> None:
        room = self._snapshot(conn)
        target = frame.get("to")
        if not room.is_admitted(conn.pid):
            raise FrameError("not-admitted", "Wait until the clinician admits you")
        if not isinstance(target, str) or not room.is_admitted(target) or target == conn.pid:
            raise FrameError("bad-target", '"to" must name another participant in the visit')
        out: dict[str, Any] = {"type": kind, "from": conn.pid}
        if kind == "ice":
            candidate = frame.get("candidate")
            if candidate is not None and not isinstance(candidate, dict):
                raise FrameError("malformed", "candidate must be an object or null")
            out["candidate"] = candidate
        else:
            sdp = frame.get("sdp")
            if not isinstance(sdp, str) or not sdp:
                raise FrameError("malformed", f"{kind} needs an sdp string")
            out["sdp"] = sdp
        self.audit(conn.grant, "signal", conn.room, detail=f"{kind} {conn.pid}->{target}")
        self.relayed += 1
        await self._publish({"kind": "relay", "room": conn.room, "to": target, "frame": out})

    async def _chat(self, conn: Connection, frame: dict[str, Any]) -> None:
        room = self._snapshot(conn)
        if not room.is_admitted(conn.pid):
            raise FrameError("not-admitted", "Chat opens once you are admitted")
        try:
            text = messages.check_text(frame.get("text"), "text")
        except CarebaseError as exc:
            raise FrameError("malformed", exc.message) from exc
        stored = await run_in_threadpool(self._store_chat, conn.grant, text)
        self.audit(
            conn.grant,
            "chat",
            conn.room,
            action="C",
            detail=f"Communication/{stored['id']}",
            patients=self._patients(conn.room),
        )
        out = {
            "type": "chat",
            "from": conn.pid,
            "name": conn.grant.display,
            "text": text,
            "id": stored["id"],
            "sent": stored["sent"],
        }
        await self._publish({"kind": "broadcast", "room": conn.room, "frame": out})

    def _store_chat(self, grant: JoinGrant, text: str) -> dict[str, Any]:
        stored = self.store.read("Appointment", grant.room)
        assert stored is not None and stored.body is not None
        appointment = body_of(stored)
        patient = appointment_patient(appointment) or ""
        sender: dict[str, Any] = {"display": grant.display}
        if grant.fhir_user and grant.role != "guest":
            sender["reference"] = grant.fhir_user
        refs = [
            (p.get("actor") or {}).get("reference", "") for p in appointment.get("participant", [])
        ]
        resource = messages.communication(
            category="visit-chat",
            patient=patient,
            sender=sender,
            recipients=[r for r in refs if r and r != grant.fhir_user],
            text=text,
            appointment=grant.room,
            encounter=encounter.encounter_id(self.store, grant.room),
        )
        return messages.store_communication(self.store, resource)

    async def _decide(self, conn: Connection, kind: str, frame: dict[str, Any]) -> None:
        target = frame.get("participant")
        if not isinstance(target, str):
            raise FrameError("malformed", f'{kind} needs "participant"')
        now = now_ms()
        if kind == "admit":
            await self._change(
                conn,
                f"admit {target}",
                lambda room: room.admit(conn.pid, target, now),
                after=self._visit_started,
            )
        else:
            await self._change(
                conn, f"decline {target}", lambda room: room.decline(conn.pid, target, now)
            )

    def _visit_started(self, room: Room) -> None:
        """Once a clinician and the patient are both in: the Encounter, with every
        practitioner in the visit (runs in the thread pool)."""
        admitted = room.admitted()
        if any(p.role == "patient" for p in admitted) and any(
            p.role == "clinician" for p in admitted
        ):
            refs = sorted(
                {p.reference for p in admitted if p.reference.startswith("Practitioner/")}
            )
            guests = [
                encounter.Guest(p.id, p.display, p.kind or "guest")
                for p in admitted
                if p.role == "guest"
            ]
            encounter.visit_started(self.store, room.id, refs, guests)

    async def _change(
        self,
        conn: Connection,
        what: str,
        transition: Callable[[Room], object],
        after: Callable[[Room], object] | None = None,
    ) -> Room:
        """Apply a transition, run `after` on the new state (the record's side, in the
        thread pool), then tell every worker."""
        snapshot, _ = await run_in_threadpool(self.rooms.change, conn.room, transition)
        if after is not None:
            await run_in_threadpool(after, snapshot)
        self.audit(
            conn.grant,
            what.split(" ")[0],
            conn.room,
            detail=what,
            patients=self._patients(conn.room),
        )
        await self._room_changed(snapshot)
        return snapshot

    async def _room_changed(self, snapshot: Room) -> None:
        await self._publish({"kind": "room", "room": snapshot.id, "state": snapshot.to_json()})

    def _patients(self, room: str) -> tuple[str, ...]:
        stored = self.store.read("Appointment", room)
        if stored is None or stored.body is None:
            return ()
        patient = appointment_patient(body_of(stored))
        return (patient,) if patient else ()

    # --- drops -----------------------------------------------------------------------------
    async def _dropped(self, conn: Connection) -> None:
        conns = self.local.get(conn.room, {})
        if conns.get(conn.pid) is conn:
            del conns[conn.pid]
            if not conns:
                self.local.pop(conn.room, None)
        conn.stop()
        room = self.snapshots.get(conn.room)
        me = room.participants.get(conn.pid) if room else None
        if me is None or me.state not in ("checked-in", "waiting", "admitted"):
            return
        loop = asyncio.get_running_loop()
        key = f"{conn.room}/{conn.pid}"
        self._leaving[key] = loop.call_later(
            self.settings.resume_seconds,
            lambda: asyncio.ensure_future(self._resume_expired(conn, key)),
        )

    async def _resume_expired(self, conn: Connection, key: str) -> None:
        self._leaving.pop(key, None)
        try:
            snapshot, _ = await run_in_threadpool(
                self.rooms.change, conn.room, lambda room: room.leave(conn.pid, now_ms(), conn.id)
            )
            self.audit(conn.grant, "leave", conn.room, detail="connection lost")
            await self._room_changed(snapshot)
        except CarebaseError as exc:
            log.warning("leave after a drop in room %s failed: %s", conn.room, exc.message)

    async def _ping_loop(self) -> None:
        """Ping each connection every `ping_seconds` from when it joined (so the pings of a
        thousand connections are spread out, not one burst), and close a connection silent
        for three intervals."""
        interval = self.settings.ping_seconds
        tick = min(1.0, interval / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            limit = now - 3 * interval
            for conns in list(self.local.values()):
                for conn in list(conns.values()):
                    if conn.last_seen < limit:
                        await conn.close(1011, "keep-alive timeout")
                    elif conn.next_ping <= now:
                        conn.next_ping = now + interval
                        await conn.send({"type": "ping", "t": int(time.time() * 1000)})

    # --- events ------------------------------------------------------------------------------
    async def _publish(self, event: dict[str, Any]) -> None:
        """Deliver `event` to this worker's sockets now, and to the other workers over the
        bus (a relay to a socket held here needs no bus at all)."""
        await self._apply(event)
        if not self.bus.shared:
            return
        if event["kind"] == "relay" and event["to"] in self.local.get(event["room"], {}):
            return
        event["origin"] = self.worker
        await self.bus.publish(event)

    async def on_event(self, event: dict[str, Any]) -> None:
        """An event from the bus (this worker's own were delivered when published)."""
        if event.get("origin") != self.worker:
            await self._apply(event)

    async def _apply(self, event: dict[str, Any]) -> None:
        room_id = event.get("room")
        conns = self.local.get(room_id or "")
        kind = event.get("kind")
        if kind == "room":
            snapshot = Room.from_json(event["state"])
            held = self.snapshots.get(snapshot.id)
            if conns is None:
                self.snapshots.pop(snapshot.id, None)
                return
            if held is not None and held.seq > snapshot.seq:
                return
            self.snapshots[snapshot.id] = snapshot
            for conn in list(conns.values()):
                me = snapshot.participants.get(conn.pid)
                await conn.send({"type": "room", "room": self.view(snapshot, conn.pid)})
                if me is not None and me.state in ("declined", "ended", "left"):
                    await conn.close(CLOSE_ENDED, me.state)
        elif conns is None:
            return
        elif kind == "relay":
            target = conns.get(event["to"])
            if target is not None:
                await target.send(event["frame"])
        elif kind == "broadcast":
            room = self.snapshots.get(room_id or "")
            for conn in list(conns.values()):
                if room is not None and room.is_admitted(conn.pid):
                    await conn.send(event["frame"])
        elif kind == "replaced":
            older = conns.get(event["pid"])
            if older is not None and older.id != event["conn"]:
                del conns[older.pid]
                await older.close(CLOSE_REPLACED, "replaced by a newer connection")

    @staticmethod
    def view(room: Room, pid: str) -> dict[str, Any]:
        """The room as participant `pid` may see it: the visit's participants once admitted;
        while waiting only its own state and whether a clinician is there."""
        me = room.participants.get(pid)
        clinician = any(
            p.role == "clinician" and p.state == "admitted" for p in room.participants.values()
        )
        if me is not None and (me.state == "admitted" or me.role == "clinician"):
            visible = [
                {k: v for k, v in p.to_json().items() if k != "connection"}
                for p in room.participants.values()
            ]
        else:
            visible = [{k: v for k, v in me.to_json().items() if k != "connection"}] if me else []
        return {
            "id": room.id,
            "ended": room.ended,
            "clinicianPresent": clinician,
            "participants": visible,
        }


async def _refuse(ws: WebSocket, code: str, message: str, close_code: int) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
        await ws.send_text(
            orjson.dumps({"type": "error", "code": code, "message": message}).decode()
        )
        await ws.close(close_code, message[:120])
