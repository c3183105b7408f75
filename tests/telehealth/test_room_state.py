"""The waiting room state machine (pure)."""

from __future__ import annotations

import pytest

from carebase.errors import Forbidden
from carebase.telehealth.room_state import Room, RoomError


def _room() -> Room:
    room = Room("a1", capacity=4)
    room.check_in("doc", "clinician", "Dr", 1, "Practitioner/doc")
    return room


def test_patient_checks_in_waits_and_is_admitted() -> None:
    room = _room()
    assert room.participants["doc"].state == "admitted"
    assert room.check_in("pat", "patient", "P", 2).state == "checked-in"
    assert room.connect("pat", 3, "c1").state == "waiting"
    assert [p.id for p in room.waiting()] == ["pat"]
    assert room.admit("doc", "pat", 4).state == "admitted"
    assert room.participants["pat"].since == 4
    assert {p.id for p in room.admitted()} == {"doc", "pat"}


def test_only_an_admitted_clinician_admits_declines_or_ends() -> None:
    room = _room()
    room.check_in("pat", "patient", "P", 2)
    room.check_in("g", "guest", "G", 2)
    room.connect("g", 2)
    with pytest.raises(Forbidden):
        room.admit("pat", "g", 3)
    with pytest.raises(Forbidden):
        room.end("g", 3)
    room.admit("doc", "g", 3)
    with pytest.raises(Forbidden):
        room.decline("g", "pat", 3)  # an admitted guest is still not a clinician


def test_declined_is_final_and_left_can_check_in_again() -> None:
    room = _room()
    room.check_in("pat", "patient", "P", 2)
    room.decline("doc", "pat", 3)
    with pytest.raises(Forbidden):
        room.check_in("pat", "patient", "P", 4)
    with pytest.raises(RoomError):
        room.admit("doc", "pat", 4)
    room.check_in("g", "guest", "G", 5)
    room.admit("doc", "g", 6)
    room.leave("g", 7)
    assert room.participants["g"].state == "left"
    assert (
        room.check_in("g", "guest", "G", 8).state == "checked-in"
    )  # admitted again only by the clinician


def test_a_leave_for_an_old_connection_does_not_undo_a_reconnect() -> None:
    room = _room()
    room.check_in("pat", "patient", "P", 2)
    room.connect("pat", 2, "old")
    room.admit("doc", "pat", 3)
    room.connect("pat", 4, "new")  # reconnected before the old connection's window ran out
    room.leave("pat", 5, "old")
    assert room.participants["pat"].state == "admitted"
    room.leave("pat", 6, "new")
    assert room.participants["pat"].state == "left"


def test_capacity_and_end() -> None:
    room = _room()
    for i in range(3):
        room.check_in(f"g{i}", "guest", "G", 2)
    with pytest.raises(RoomError, match="full"):
        room.check_in("late", "guest", "G", 3)
    assert room.check_in("g0", "guest", "G", 3).state == "checked-in"  # already in: no error
    room.leave("g2", 4)
    room.check_in("late", "guest", "G", 5)
    room.end("doc", 6)
    assert room.ended and {p.state for p in room.participants.values()} == {"ended"}
    with pytest.raises(RoomError, match="ended"):
        room.check_in("again", "guest", "G", 7)
    with pytest.raises(RoomError):
        room.connect("doc", 7)


def test_bad_role_and_unknown_participant() -> None:
    room = _room()
    with pytest.raises(Forbidden):
        room.check_in("x", "superuser", "X", 1)
    with pytest.raises(RoomError):
        room.admit("doc", "ghost", 2)


def test_json_round_trip() -> None:
    room = _room()
    room.check_in("pat", "patient", "P", 2)
    room.connect("pat", 3, "c")
    room.seq = 5
    again = Room.from_json(room.to_json())
    assert again.to_json() == room.to_json()
