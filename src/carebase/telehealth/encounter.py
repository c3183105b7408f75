"""The visit in the record: an Encounter (class VR, virtual) linked to the Appointment,
created when the clinician and the patient are first both in the visit, updated with each
practitioner and each admitted guest or interpreter (listed by name, with a participant type
`translator` or `PART` and an identifier `GUEST_SYSTEM|<participant id>`: guests have no
FHIR identity), and finished (period end) when the clinician ends the visit; the
Appointment moves to `arrived` and then `fulfilled` with it.

Workers may both see a visit start: the Encounter is found or created under a transaction
lock on the appointment, so there is one per visit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from carebase.fhir.validation import check_resource
from carebase.store.base import Store, Transaction
from carebase.telehealth.availability import instant
from carebase.telehealth.codes import ACT_CODE
from carebase.telehealth.scheduling import appointment_patient, body_of

VIRTUAL_CLASS = {"system": ACT_CODE, "code": "VR", "display": "virtual"}
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/participant-type"
#: identifies a guest's participant id in `Encounter.participant.individual`
GUEST_SYSTEM = "urn:carebase:telehealth-guest"


@dataclass(frozen=True, slots=True)
class Guest:
    """An admitted guest: its room participant id, the name it was invited under, its kind."""

    participant: str
    display: str
    kind: str  # "guest" or "interpreter"

    def entry(self, at: str) -> dict[str, Any]:
        """Its `Encounter.participant`."""
        if self.kind == "interpreter":
            coding = {"system": _PARTICIPANT_TYPE, "code": "translator", "display": "Translator"}
        else:
            coding = {"system": _PARTICIPATION, "code": "PART", "display": "Participation"}
        return {
            "type": [{"coding": [coding], "text": self.kind}],
            "individual": {
                "identifier": {"system": GUEST_SYSTEM, "value": self.participant},
                "display": self.display,
            },
            "period": {"start": at},
        }


def _listed(participant: dict[str, Any]) -> str:
    """The key of an `Encounter.participant`: its reference, or a guest's participant id."""
    individual = participant.get("individual") or {}
    if "reference" in individual:
        return str(individual["reference"])
    return f"guest:{(individual.get('identifier') or {}).get('value', '')}"


def _find(tx: Transaction, appointment_id: str) -> dict[str, Any] | None:
    ids = tx.search_ids("Encounter", [("appointment", f"Appointment/{appointment_id}")], limit=1)
    if not ids:
        return None
    stored = tx.read("Encounter", ids[0])
    return body_of(stored) if stored is not None and stored.body else None


def _set_appointment_status(tx: Transaction, appointment_id: str, status: str) -> None:
    stored = tx.read("Appointment", appointment_id)
    if stored is None or stored.body is None:
        return
    appointment = body_of(stored)
    if appointment.get("status") not in (status, "cancelled", "fulfilled"):
        appointment["status"] = status
        tx.update("Appointment", appointment_id, appointment)


def visit_started(
    store: Store,
    appointment_id: str,
    practitioners: list[str],
    guests: list[Guest] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The visit's Encounter, created or with `practitioners` and `guests` added (in
    progress)."""
    at = instant(now or datetime.now(UTC))
    with store.transaction() as tx:
        tx.lock(f"telehealth-encounter:{appointment_id}")
        encounter = _find(tx, appointment_id)
        if encounter is None:
            stored = tx.read("Appointment", appointment_id)
            assert stored is not None and stored.body is not None
            patient = appointment_patient(body_of(stored))
            encounter = {
                "resourceType": "Encounter",
                "status": "in-progress",
                "class": VIRTUAL_CLASS,
                "subject": {"reference": f"Patient/{patient}"},
                "appointment": [{"reference": f"Appointment/{appointment_id}"}],
                "period": {"start": at},
                "participant": [],
            }
        listed = {_listed(p) for p in encounter.get("participant", [])}
        added = [ref for ref in practitioners if ref not in listed]
        new_guests = [g for g in guests or [] if f"guest:{g.participant}" not in listed]
        if not added and not new_guests and "id" in encounter:
            return encounter
        for ref in added:
            encounter.setdefault("participant", []).append(
                {
                    "type": [{"coding": [{"system": _PARTICIPATION, "code": "PPRF"}]}],
                    "individual": {"reference": ref},
                    "period": {"start": at},
                }
            )
        for guest in new_guests:
            encounter.setdefault("participant", []).append(guest.entry(at))
        check_resource(encounter, expected_type="Encounter")
        if "id" in encounter:
            stored_encounter, _ = tx.update("Encounter", encounter["id"], encounter)
        else:
            stored_encounter = tx.create("Encounter", encounter)
        _set_appointment_status(tx, appointment_id, "arrived")
        return body_of(stored_encounter)


def visit_ended(
    store: Store, appointment_id: str, now: datetime | None = None
) -> dict[str, Any] | None:
    """Finish the visit's Encounter (None when the visit never started)."""
    at = instant(now or datetime.now(UTC))
    with store.transaction() as tx:
        tx.lock(f"telehealth-encounter:{appointment_id}")
        encounter = _find(tx, appointment_id)
        if encounter is None or encounter.get("status") == "finished":
            return encounter
        encounter["status"] = "finished"
        encounter.setdefault("period", {})["end"] = at
        for participant in encounter.get("participant", []):
            participant.setdefault("period", {}).setdefault("end", at)
        stored, _ = tx.update("Encounter", encounter["id"], encounter)
        _set_appointment_status(tx, appointment_id, "fulfilled")
        return body_of(stored)


def encounter_id(store: Store, appointment_id: str) -> str | None:
    """The id of the visit's Encounter, if it has started."""
    page = store.search(
        "Encounter", [("appointment", f"Appointment/{appointment_id}")], count=1, total="none"
    )
    return page.entries[0].id if page.entries else None
