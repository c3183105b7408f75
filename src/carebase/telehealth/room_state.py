"""The visit room and its waiting room as a pure state machine (no I/O; `room_store`
persists it, `signalling` drives it).

A participant's states::

    (new) --check_in--> checked-in --connect--> waiting --admit--> admitted
                                                   |  \\--decline--> declined (final)
    checked-in / waiting / admitted --leave--> left --check_in--> checked-in (admitted again
    only by a clinician);  any --end (the room)--> ended (final)

Clinicians check in straight to `admitted` (they run the visit) and alone may admit,
decline, and end the room. A dropped connection is not a leave: the participant keeps its
state and resumes with the same participant id. At most `capacity` participants are active
(checked-in, waiting or admitted) at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from carebase.errors import Conflict, Forbidden

Role = Literal["clinician", "patient", "guest"]
ROLES: tuple[str, ...] = ("clinician", "patient", "guest")
State = Literal["checked-in", "waiting", "admitted", "declined", "left", "ended"]
ACTIVE: frozenset[str] = frozenset({"checked-in", "waiting", "admitted"})


class RoomError(Conflict):
    """A transition the room's state does not allow (409)."""


@dataclass(slots=True)
class Participant:
    """One participant of a room."""

    id: str
    role: str
    display: str
    state: str
    since: int  # epoch ms of the last state change
    #: the id of the participant's current connection ("" when none): a drop starts a resume
    #: window, and only a leave naming this connection (not an older one) counts
    connection: str = ""
    #: the participant's FHIR identity ("Practitioner/1"), for the Encounter; "" for guests
    reference: str = ""
    #: a guest's kind ("guest" or "interpreter"), for the Encounter; "" for others
    kind: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "display": self.display,
            "state": self.state,
            "since": self.since,
            "connection": self.connection,
            "reference": self.reference,
            "kind": self.kind,
        }


@dataclass(slots=True)
class Room:
    """The state of one visit room (one per Appointment)."""

    id: str
    capacity: int = 4
    ended: bool = False
    #: bumped by every stored change (workers ignore snapshots older than the one they hold)
    seq: int = 0
    participants: dict[str, Participant] = field(default_factory=dict)

    # --- transitions -----------------------------------------------------------------------
    def check_in(
        self, pid: str, role: str, display: str, now: int, reference: str = ""
    ) -> Participant:
        """A participant arrives: clinicians are admitted, others checked in to wait."""
        self._open()
        if role not in ROLES:
            raise Forbidden(f"{role!r} is not a room role", location="role")
        found = self.participants.get(pid)
        if found is not None:
            if found.state == "declined":
                raise Forbidden("The clinician declined this participant", location="room")
            if found.state in ACTIVE:
                return found  # already here (a second tab, or a retry)
        if self.active_count() >= self.capacity:
            raise RoomError(f"The room is full ({self.capacity} participants)", location="room")
        state = "admitted" if role == "clinician" else "checked-in"
        participant = Participant(pid, role, display, state, now, reference=reference)
        self.participants[pid] = participant
        return participant

    def connect(self, pid: str, now: int, connection: str = "") -> Participant:
        """The participant's connection is live: a checked-in one now waits."""
        participant = self._active(pid)
        participant.connection = connection
        if participant.state == "checked-in":
            self._set(participant, "waiting", now)
        return participant

    def admit(self, actor: str, pid: str, now: int) -> Participant:
        """A clinician lets a waiting (or checked-in) participant into the visit."""
        self._clinician(actor)
        participant = self._get(pid)
        if participant.state not in ("checked-in", "waiting"):
            raise RoomError(f"Cannot admit a participant who is {participant.state}", location=pid)
        return self._set(participant, "admitted", now)

    def decline(self, actor: str, pid: str, now: int) -> Participant:
        """A clinician turns a waiting participant away (final for this visit)."""
        self._clinician(actor)
        participant = self._get(pid)
        if participant.state not in ("checked-in", "waiting"):
            raise RoomError(
                f"Cannot decline a participant who is {participant.state}", location=pid
            )
        return self._set(participant, "declined", now)

    def leave(self, pid: str, now: int, connection: str | None = None) -> Participant:
        """A participant leaves, or its `connection` was gone past the resume window (then
        nothing changes if the participant has reconnected since)."""
        participant = self._get(pid)
        if connection is not None and participant.connection != connection:
            return participant
        participant.connection = ""
        if participant.state in ACTIVE:
            self._set(participant, "left", now)
        return participant

    def end(self, actor: str, now: int) -> None:
        """A clinician ends the visit: everybody is out, nobody can join again."""
        self._clinician(actor)
        self.ended = True
        for participant in self.participants.values():
            if participant.state != "declined":
                self._set(participant, "ended", now)

    # --- questions -------------------------------------------------------------------------
    def active_count(self) -> int:
        return sum(1 for p in self.participants.values() if p.state in ACTIVE)

    def admitted(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.state == "admitted"]

    def waiting(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.state in ("checked-in", "waiting")]

    def is_admitted(self, pid: str) -> bool:
        found = self.participants.get(pid)
        return found is not None and found.state == "admitted"

    # --- (de)serialisation -----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "capacity": self.capacity,
            "ended": self.ended,
            "seq": self.seq,
            "participants": [p.to_json() for p in self.participants.values()],
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Room:
        room = cls(
            str(value["id"]),
            int(value.get("capacity", 4)),
            bool(value.get("ended")),
            int(value.get("seq", 0)),
        )
        for p in value.get("participants", []):
            room.participants[p["id"]] = Participant(
                p["id"],
                p["role"],
                p["display"],
                p["state"],
                int(p["since"]),
                p.get("connection", ""),
                p.get("reference", ""),
                p.get("kind", ""),
            )
        return room

    # --- helpers ---------------------------------------------------------------------------
    def _open(self) -> None:
        if self.ended:
            raise RoomError("The visit has ended", location="room")

    def _get(self, pid: str) -> Participant:
        found = self.participants.get(pid)
        if found is None:
            raise RoomError(f"No participant {pid} in this room", location=pid)
        return found

    def _active(self, pid: str) -> Participant:
        self._open()
        participant = self._get(pid)
        if participant.state not in ACTIVE:
            raise RoomError(f"The participant is {participant.state}", location=pid)
        return participant

    def _clinician(self, actor: str) -> None:
        self._open()
        found = self.participants.get(actor)
        if found is None or found.role != "clinician" or found.state != "admitted":
            raise Forbidden("Only a clinician in the visit may do that", location="room")

    @staticmethod
    def _set(participant: Participant, state: str, now: int) -> Participant:
        participant.state = state
        participant.since = now
        return participant
