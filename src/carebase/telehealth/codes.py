"""The codes and URLs telehealth writes into FHIR resources."""

from __future__ import annotations

from typing import Any, Literal

#: HL7 v3 ActCode: the encounter classes; VR is a virtual visit, AMB an in-person one.
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
VisitType = Literal["virtual", "in-person"]
VISIT_CODES: dict[str, str] = {"virtual": "VR", "in-person": "AMB"}
VISIT_DISPLAY: dict[str, str] = {"VR": "virtual", "AMB": "ambulatory"}
VISIT_TYPES: tuple[str, ...] = tuple(VISIT_CODES)
#: Communication.category of visit chat, between-visit messages and reminders.
CATEGORY_SYSTEM = "https://carebase.dev/fhir/CodeSystem/telehealth-message"
#: Communication.identifier system of appointment reminders (one per appointment and lead).
REMINDER_SYSTEM = "https://carebase.dev/fhir/telehealth-reminder"
#: Communication.identifier system of notices that a reminded appointment moved or was
#: cancelled (one per appointment and change).
CHANGE_SYSTEM = "https://carebase.dev/fhir/telehealth-appointment-change"


def visit_coding(visit_type: str) -> dict[str, Any]:
    """The serviceType CodeableConcept of a visit type."""
    code = VISIT_CODES[visit_type]
    return {"coding": [{"system": ACT_CODE, "code": code, "display": VISIT_DISPLAY[code]}]}


def visit_types_of(resource: dict[str, Any]) -> list[str]:
    """The visit types a Slot or Appointment names in `serviceType`."""
    by_code = {code: name for name, code in VISIT_CODES.items()}
    found: list[str] = []
    for concept in resource.get("serviceType") or []:
        for coding in concept.get("coding") or []:
            if coding.get("system") == ACT_CODE and coding.get("code") in by_code:
                found.append(by_code[coding["code"]])
    return found
