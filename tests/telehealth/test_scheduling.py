"""Scheduling on both databases: publish availability, free-slot search, book, cancel,
reschedule, access rules, and no double booking under concurrent bookers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from telehealth_helpers import (
    ADMIN,
    clinician,
    patient_caller,
    pattern,
    published,
    seed,
    week_ahead,
)

from carebase.errors import BadRequest, CarebaseError, Conflict, Forbidden
from carebase.store.base import Store
from carebase.store.factory import open_store
from carebase.telehealth.availability import parse_pattern
from carebase.telehealth.scheduling import book, cancel, free_slots, publish, reschedule

FAR = datetime.now(UTC) + timedelta(days=60)


def _free(store: Store, visit_type: str | None = None) -> list[dict]:
    return free_slots(
        store,
        ADMIN,
        practitioner="Practitioner/doc",
        start=datetime.now(UTC),
        end=FAR,
        visit_type=visit_type,
    )


def test_publish_makes_schedule_and_slots_in_local_time(store: Store) -> None:
    seed(store)
    result = published(store)
    # mon 09:00-11:00 (4 slots of 30 min) and wed 14:00-15:00 (2)
    assert result.slot_count == 6
    assert result.schedule["actor"] == [{"reference": "Practitioner/doc"}]
    slots = _free(store)
    assert len(slots) == 6
    monday = week_ahead()
    local = datetime.fromisoformat(slots[0]["start"].replace("Z", "+00:00"))
    from zoneinfo import ZoneInfo

    assert local.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") == "09:00"
    assert slots[0]["start"].startswith(monday.isoformat())
    assert [s["start"] for s in slots] == sorted(s["start"] for s in slots)


def test_a_clinician_publishes_only_their_own_availability(store: Store) -> None:
    seed(store)
    with pytest.raises(Forbidden):
        publish(store, clinician("Practitioner/other"), parse_pattern(pattern()))
    assert publish(store, clinician(), parse_pattern(pattern())).slot_count == 6


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"weekly": {"mon": [["10:00", "09:00"]]}}, "weekly.mon[0]"),
        ({"weekly": {"mon": [["09:00", "11:00"], ["10:00", "12:00"]]}}, "weekly.mon"),
        ({"weekly": {"funday": [["09:00", "10:00"]]}}, "weekly.funday"),
        ({"slotMinutes": 2}, "slotMinutes"),
        ({"visitTypes": ["telepathy"]}, "visitTypes"),
        ({"practitioner": "Patient/x"}, "practitioner"),
        ({"to": "2099-01-01"}, "to"),
    ],
)
def test_bad_patterns_name_the_field(change: dict, where: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_pattern(pattern(**change))
    assert err.value.issues[0].expression == [where]


def test_book_cancel_reschedule(store: Store) -> None:
    seed(store)
    published(store)
    first, second = _free(store)[:2]
    appt = book(
        store, patient_caller("pat1"), slot_id=first["id"], patient_id="pat1", visit_type="virtual"
    )
    assert appt["status"] == "booked" and appt["slot"] == [{"reference": f"Slot/{first['id']}"}]
    assert appt["serviceType"][0]["coding"][0]["code"] == "VR"
    assert first["id"] not in {s["id"] for s in _free(store)}
    assert len(_free(store, "virtual")) == 5
    moved = reschedule(store, patient_caller("pat1"), appt["id"], second["id"])
    assert moved["slot"] == [{"reference": f"Slot/{second['id']}"}]
    assert moved["serviceType"][0]["coding"][0]["code"] == "VR"  # kept
    free_ids = {s["id"] for s in _free(store)}
    assert first["id"] in free_ids and second["id"] not in free_ids
    cancelled = cancel(store, patient_caller("pat1"), appt["id"], "feeling better")
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelationReason"] == {"text": "feeling better"}
    assert len(_free(store)) == 6
    with pytest.raises(Conflict):
        cancel(store, ADMIN, appt["id"], None)


def test_a_patient_books_only_for_themselves_and_a_taken_slot_is_refused(store: Store) -> None:
    seed(store)
    published(store)
    slot = _free(store)[0]
    with pytest.raises(Forbidden):
        book(
            store,
            patient_caller("pat1"),
            slot_id=slot["id"],
            patient_id="pat2",
            visit_type="virtual",
        )
    with pytest.raises(BadRequest, match="say which"):
        book(store, ADMIN, slot_id=slot["id"], patient_id="pat1")
    book(store, ADMIN, slot_id=slot["id"], patient_id="pat1", visit_type="in-person")
    with pytest.raises(Conflict):
        book(store, ADMIN, slot_id=slot["id"], patient_id="pat2", visit_type="in-person")
    appt_ids = store.search("Appointment", [], total="accurate").total
    assert appt_ids == 1  # the refused bookings wrote nothing


def _race(stores: list[Store], slot_id: str, patients: list[str]) -> tuple[int, list[Exception]]:
    barrier = threading.Barrier(len(patients))
    won: list[str] = []
    errors: list[Exception] = []

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            book(
                stores[i % len(stores)],
                ADMIN,
                slot_id=slot_id,
                patient_id=patients[i],
                visit_type="virtual",
            )
            won.append(patients[i])
        except CarebaseError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(patients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(won), errors


def test_concurrent_bookers_of_one_slot_one_wins(store: Store, tmp_path: Path) -> None:
    patients = tuple(f"p{i}" for i in range(8))
    seed(store, patients)
    published(store)
    slot_id = _free(store)[0]["id"]
    stores = [store]
    if store.dialect == "sqlite":  # separate connections to the file, as separate processes
        stores += [open_store(store.url) for _ in range(3)]
    try:
        won, errors = _race(stores, slot_id, list(patients))
    finally:
        for extra in stores[1:]:
            extra.close()
    assert won == 1
    assert len(errors) == 7 and all(isinstance(e, Conflict) for e in errors), errors
    page = store.search("Appointment", [("slot", f"Slot/{slot_id}")], total="accurate")
    assert page.total == 1
