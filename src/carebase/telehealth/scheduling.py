"""Scheduling on FHIR: publish availability (Schedule + Slots), find free slots, book,
cancel and reschedule Appointments.

No double booking: a booking locks the slot for its transaction (`Transaction.lock`, an
advisory transaction lock on PostgreSQL; SQLite writers run one at a time), reads it, and
updates it from `free` to `busy` with `if_match` on the version it read (PostgreSQL takes
the resource row `FOR UPDATE`), then creates the Appointment in the same transaction. Two
bookers of one slot: one commits, the other finds the slot busy (409) and writes nothing.

Who may do what (besides the scopes the FHIR API asks for): a clinician or nurse publishes
only their own availability (`fhirUser`), admins and services anyone's; a patient books,
cancels and reschedules only their own appointments (the operation writes the Appointment
and Slot for them: patient tokens carry no Appointment write scope); other callers need
Appointment create/update scopes and the written Appointment must be one they may see.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from carebase.errors import BadRequest, Conflict, Forbidden, NotFound, PreconditionFailed
from carebase.fhir.validation import check_resource
from carebase.store.base import Store, StoredResource, Transaction
from carebase.telehealth.access import Caller
from carebase.telehealth.availability import WeeklyPattern, instant, parse_instant
from carebase.telehealth.codes import VISIT_TYPES, visit_coding, visit_types_of

#: Free slots returned by one search, at most.
MAX_SLOTS_PAGE = 200
_REF_TYPES = {"patient": "Patient", "slot": "Slot"}


@dataclass(frozen=True, slots=True)
class Published:
    """The Schedule written by a publication and how many Slots it made."""

    schedule: dict[str, Any]
    slot_count: int


def body_of(stored: StoredResource) -> dict[str, Any]:
    """The JSON of a stored resource."""
    assert stored.body is not None
    value: dict[str, Any] = orjson.loads(stored.body)
    return value


def reference_id(value: object, type_: str, where: str) -> str:
    """The id of a reference `Type/id` (as a string or `{"reference": ...}`); 400 else."""
    if isinstance(value, dict):
        value = value.get("reference")
    if isinstance(value, str) and value.startswith(f"{type_}/"):
        id_ = value[len(type_) + 1 :]
        if id_ and len(id_) <= 64 and all(c.isalnum() or c in "-." for c in id_):
            return id_
    raise BadRequest(f"{where} must reference a {type_} ('{type_}/<id>')", location=where)


def _write(tx: Transaction, caller: Caller, type_: str, resource: dict[str, Any]) -> StoredResource:
    check_resource(resource, expected_type=type_)
    if "id" in resource:
        stored, _ = tx.update(type_, str(resource["id"]), resource)
    else:
        stored = tx.create(type_, resource)
    caller.saw(stored)
    return stored


# --- availability ----------------------------------------------------------------------------


def publish(store: Store, caller: Caller, pattern: WeeklyPattern) -> Published:
    """Write a Schedule for the pattern's practitioner and one free Slot per slot time."""
    practitioner_id = pattern.practitioner.split("/", 1)[1]
    if caller.role in ("clinician", "nurse") and caller.principal.fhir_user != pattern.practitioner:
        raise Forbidden(
            "Clinicians publish their own availability only (the token's fhirUser is "
            f"{caller.principal.fhir_user or 'not set'})",
            location="practitioner",
        )
    caller.require("Schedule", "c")
    caller.require("Slot", "c")
    times = pattern.slots()
    if not times:
        raise BadRequest("The pattern makes no slot in its period", location="weekly")
    services = [visit_coding(t) for t in pattern.visit_types]
    with store.transaction() as tx:
        caller.read(tx, "Practitioner", practitioner_id)
        schedule = {
            "resourceType": "Schedule",
            "active": True,
            "serviceType": services,
            "actor": [{"reference": pattern.practitioner}],
            "planningHorizon": {"start": instant(times[0].start), "end": instant(times[-1].end)},
            "comment": f"Published for {pattern.first}..{pattern.last} ({pattern.zone.key})",
        }
        stored = _write(tx, caller, "Schedule", schedule)
        ref = {"reference": f"Schedule/{stored.id}"}
        for slot in times:
            _write(
                tx,
                caller,
                "Slot",
                {
                    "resourceType": "Slot",
                    "schedule": ref,
                    "status": "free",
                    "serviceType": services,
                    "start": instant(slot.start),
                    "end": instant(slot.end),
                },
            )
        return Published(body_of(stored), len(times))


def free_slots(
    store: Store,
    caller: Caller,
    *,
    practitioner: str | None,
    start: datetime,
    end: datetime,
    visit_type: str | None,
    count: int = 50,
) -> list[dict[str, Any]]:
    """Free slots starting in [start, end), soonest first, of one practitioner (or all)."""
    caller.require("Slot", "s")
    if visit_type is not None and visit_type not in VISIT_TYPES:
        raise BadRequest(
            f"visit-type must be one of {', '.join(VISIT_TYPES)}", location="visit-type"
        )
    if end <= start:
        raise BadRequest("end must be after start", location="end")
    restriction = caller.policy.restriction("s")
    params = [("status", "free"), ("start", f"ge{instant(start)}"), ("start", f"lt{instant(end)}")]
    if practitioner is not None:
        pid = reference_id(practitioner, "Practitioner", "practitioner")
        # Only to narrow the Slots: the Schedules are never returned, and Schedule is in the
        # Patient compartment (a Patient can be its actor), so a patient token could not see
        # a practitioner's Schedule although it may see its free Slots.
        page = store.search(
            "Schedule",
            [("actor", f"Practitioner/{pid}"), ("active", "true")],
            count=100,
            total="none",
        )
        if not page.entries:
            return []
        params.append(("schedule", ",".join(f"Schedule/{s.id}" for s in page.entries)))
    if visit_type is not None:
        code = visit_coding(visit_type)["coding"][0]
        params.append(("service-type", f"{code['system']}|{code['code']}"))
    params.append(("_sort", "start"))
    count = max(1, min(count, MAX_SLOTS_PAGE))
    page = store.search("Slot", params, count=count, total="none", restriction=restriction)
    for entry in page.entries:
        caller.saw(entry)
    return [body_of(s) for s in page.entries]


# --- appointments ----------------------------------------------------------------------------


def _own_patient(caller: Caller, patient_id: str) -> bool:
    """Whether the caller is a patient acting for itself (checked, never assumed)."""
    if caller.role != "patient":
        return False
    if caller.principal.patient != patient_id:
        raise Forbidden(
            "A patient books and changes only their own appointments", location="patient"
        )
    return True


def _take_slot(
    tx: Transaction, slot_id: str, visit_type: str | None
) -> tuple[dict[str, Any], str, str]:
    """Lock and mark a free slot busy; (slot, its practitioner reference, the visit type).
    409 when it is not free (someone else booked it first)."""
    tx.lock(f"telehealth-slot:{slot_id}")
    stored = tx.read("Slot", slot_id)
    if stored is None or stored.deleted:
        raise NotFound(f"Slot/{slot_id} is not known", location="slot")
    slot = body_of(stored)
    if slot.get("status") != "free":
        raise Conflict(f"Slot/{slot_id} is not free (it is {slot.get('status')})", location="slot")
    if parse_instant(slot["end"], "Slot.end") <= datetime.now(UTC):
        raise Conflict(f"Slot/{slot_id} is in the past", location="slot")
    offered = visit_types_of(slot) or ["in-person"]
    if visit_type is None:
        if len(offered) > 1:
            raise BadRequest(
                f"Slot/{slot_id} offers {' and '.join(offered)} visits: say which (visitType)",
                location="visitType",
            )
        visit_type = offered[0]
    elif visit_type not in offered:
        raise BadRequest(f"Slot/{slot_id} does not offer {visit_type} visits", location="visitType")
    schedule_id = reference_id(slot.get("schedule"), "Schedule", "Slot.schedule")
    schedule = tx.read("Schedule", schedule_id)
    if schedule is None or schedule.deleted:
        raise NotFound(f"Schedule/{schedule_id} of Slot/{slot_id} is not known", location="slot")
    actors = [a.get("reference", "") for a in body_of(schedule).get("actor", [])]
    practitioner = next((a for a in actors if a.startswith("Practitioner/")), None)
    if practitioner is None:
        raise Conflict(f"Schedule/{schedule_id} names no practitioner", location="slot")
    slot["status"] = "busy"
    try:
        tx.update("Slot", slot_id, slot, if_match=stored.version)
    except PreconditionFailed as exc:  # changed under us: someone else got it
        raise Conflict(f"Slot/{slot_id} was just taken", location="slot") from exc
    return slot, practitioner, visit_type


def _release_slot(tx: Transaction, slot_id: str) -> None:
    tx.lock(f"telehealth-slot:{slot_id}")
    stored = tx.read("Slot", slot_id)
    if stored is None or stored.deleted:
        return
    slot = body_of(stored)
    if slot.get("status") == "busy":
        slot["status"] = "free"
        tx.update("Slot", slot_id, slot, if_match=stored.version)


def _appointment_fields(
    slot: dict[str, Any], slot_id: str, practitioner: str, visit_type: str
) -> dict[str, Any]:
    return {
        "serviceType": [visit_coding(visit_type)],
        "start": slot["start"],
        "end": slot["end"],
        "slot": [{"reference": f"Slot/{slot_id}"}],
    }


def _participants(patient_id: str, practitioner: str) -> list[dict[str, Any]]:
    return [
        {
            "actor": {"reference": f"Patient/{patient_id}"},
            "required": "required",
            "status": "accepted",
        },
        {"actor": {"reference": practitioner}, "required": "required", "status": "accepted"},
    ]


def book(
    store: Store,
    caller: Caller,
    *,
    slot_id: str,
    patient_id: str,
    visit_type: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Book a free slot for a patient; the booked Appointment (409 if the slot is taken)."""
    if visit_type is not None and visit_type not in VISIT_TYPES:
        raise BadRequest(f"visitType must be one of {', '.join(VISIT_TYPES)}", location="visitType")
    own = _own_patient(caller, patient_id)
    if not own:
        caller.require("Appointment", "c")
    with store.transaction() as tx:
        caller.read(tx, "Patient", patient_id)
        caller.read(tx, "Slot", slot_id)
        slot, practitioner, chosen = _take_slot(tx, slot_id, visit_type)
        appointment: dict[str, Any] = {
            "resourceType": "Appointment",
            "status": "booked",
            **_appointment_fields(slot, slot_id, practitioner, chosen),
            "created": datetime.now(UTC).strftime("%Y-%m-%d"),
            "participant": _participants(patient_id, practitioner),
        }
        if reason:
            appointment["description"] = reason[:1000]
        stored = _write(tx, caller, "Appointment", appointment)
        if not own:
            caller.written(tx, stored, "c")
        return body_of(stored)


def appointment_patient(appointment: dict[str, Any]) -> str | None:
    """The id of the appointment's Patient participant."""
    for p in appointment.get("participant", []):
        ref = (p.get("actor") or {}).get("reference", "")
        if ref.startswith("Patient/"):
            return str(ref[len("Patient/") :])
    return None


def appointment_practitioners(appointment: dict[str, Any]) -> list[str]:
    """The Practitioner references among the appointment's participants."""
    refs = [(p.get("actor") or {}).get("reference", "") for p in appointment.get("participant", [])]
    return [r for r in refs if r.startswith("Practitioner/")]


def _changeable(
    tx: Transaction, caller: Caller, appointment_id: str
) -> tuple[StoredResource, dict[str, Any], bool]:
    stored = caller.read(tx, "Appointment", appointment_id)
    appointment = body_of(stored)
    patient_id = appointment_patient(appointment)
    own = caller.role == "patient"
    if own:
        _own_patient(caller, patient_id or "")
    else:
        caller.require("Appointment", "u")
    if appointment.get("status") not in ("booked", "pending", "proposed"):
        raise Conflict(
            f"Appointment/{appointment_id} is {appointment.get('status')}; only booked "
            "appointments can be changed",
            location="Appointment.status",
        )
    return stored, appointment, own


def _slot_ids(appointment: dict[str, Any]) -> list[str]:
    return [reference_id(s, "Slot", "Appointment.slot") for s in appointment.get("slot", [])]


def cancel(store: Store, caller: Caller, appointment_id: str, reason: str | None) -> dict[str, Any]:
    """Cancel an appointment and free its slot."""
    with store.transaction() as tx:
        stored, appointment, own = _changeable(tx, caller, appointment_id)
        for slot_id in sorted(_slot_ids(appointment)):
            _release_slot(tx, slot_id)
        appointment["status"] = "cancelled"
        if reason:
            appointment["cancelationReason"] = {"text": reason[:1000]}
        tx_stored, _ = tx.update(
            "Appointment", appointment_id, appointment, if_match=stored.version
        )
        if not own:
            caller.written(tx, tx_stored, "u")
        caller.saw(tx_stored)
        return body_of(tx_stored)


def reschedule(
    store: Store, caller: Caller, appointment_id: str, slot_id: str, visit_type: str | None = None
) -> dict[str, Any]:
    """Move an appointment to another free slot (the old one is freed) in one transaction."""
    with store.transaction() as tx:
        stored, appointment, own = _changeable(tx, caller, appointment_id)
        old = _slot_ids(appointment)
        if slot_id in old:
            raise BadRequest(
                f"Appointment/{appointment_id} is already in Slot/{slot_id}", location="slot"
            )
        caller.read(tx, "Slot", slot_id)
        current = visit_types_of(appointment)
        if visit_type is None and current and _offers(tx, slot_id, current[0]):
            visit_type = current[0]  # keep the visit type when the new slot offers it
        slot, practitioner, chosen = _take_slot(tx, slot_id, visit_type)
        for old_id in sorted(old):
            _release_slot(tx, old_id)
        appointment.update(_appointment_fields(slot, slot_id, practitioner, chosen))
        patient_id = appointment_patient(appointment) or ""
        appointment["participant"] = _participants(patient_id, practitioner)
        new, _ = tx.update("Appointment", appointment_id, appointment, if_match=stored.version)
        if not own:
            caller.written(tx, new, "u")
        caller.saw(new)
        return body_of(new)


def _offers(tx: Transaction, slot_id: str, visit_type: str) -> bool:
    stored = tx.read("Slot", slot_id)
    return (
        stored is not None
        and stored.body is not None
        and visit_type in visit_types_of(body_of(stored))
    )
