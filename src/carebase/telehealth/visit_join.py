"""Joining a visit: which Appointments have a visit, who joins it in which room role, and the
join grant (a room join token and where to use it). The bearer-token API
(`POST /telehealth/api/appointments/{id}/join`) and the browser pages of the web app (the
clinician's chart visit page, the portal's *Join*) both use `grant()`.
"""

from __future__ import annotations

from typing import Any

from carebase.errors import Conflict, Forbidden
from carebase.store.base import Store
from carebase.telehealth import scheduling
from carebase.telehealth.access import CLINICAL_ROLES, Caller
from carebase.telehealth.codes import visit_types_of
from carebase.telehealth.service import Telehealth
from carebase.telehealth.turn import ice_servers

#: Appointment statuses whose visit may be joined.
JOINABLE = ("booked", "arrived")
VISIT_PAGE = "/telehealth/visit"


def is_visit(appointment: dict[str, Any]) -> bool:
    """Whether the appointment is a virtual visit one may join now (booked or arrived)."""
    return appointment.get("status") in JOINABLE and "virtual" in visit_types_of(appointment)


def visit(store: Store, caller: Caller, appointment_id: str) -> dict[str, Any]:
    """The Appointment of a visit the caller may read; 404 unknown, 409 not a joinable visit."""
    appointment = scheduling.body_of(caller.read(store, "Appointment", appointment_id))
    if appointment.get("status") not in JOINABLE:
        raise Conflict(
            f"Appointment/{appointment_id} is {appointment.get('status')}: "
            "there is no visit to join",
            location="Appointment.status",
        )
    if "virtual" not in visit_types_of(appointment):
        raise Conflict(
            f"Appointment/{appointment_id} is an in-person visit",
            location="Appointment.serviceType",
        )
    return appointment


def room_role(caller: Caller, appointment: dict[str, Any]) -> tuple[str, str]:
    """(room role, participant id) of the caller in this appointment's visit; 403 else."""
    principal = caller.principal
    if caller.role == "patient":
        patient = scheduling.appointment_patient(appointment)
        if principal.patient is None or principal.patient != patient:
            raise Forbidden(
                "Only the appointment's patient may join as patient", location="Appointment"
            )
        return "patient", f"patient-{patient}"
    if caller.role in CLINICAL_ROLES:
        practitioners = scheduling.appointment_practitioners(appointment)
        if caller.role != "admin" and principal.fhir_user not in practitioners:
            raise Forbidden(
                "Only the appointment's practitioners run its visit", location="Appointment"
            )
        return "clinician", f"clinician-{principal.subject}"
    raise Forbidden("This role cannot join visits", location="Appointment")


def grant(service: Telehealth, caller: Caller, appointment_id: str) -> dict[str, Any]:
    """A join token for the caller into the appointment's visit room, with the visit page
    link (token in the URL fragment) and the ICE servers."""
    appointment = visit(service.store, caller, appointment_id)
    role, pid = room_role(caller, appointment)
    principal = caller.principal
    token, expires = service.tokens.issue(
        room=appointment_id,
        role=role,
        participant=pid,
        display=principal.username or principal.subject,
        subject=principal.subject,
        fhir_user=principal.fhir_user,
    )
    return room_grant(service, appointment_id, token, expires, role, pid)


def room_grant(
    service: Telehealth, room: str, token: str, expires: int, role: str, pid: str
) -> dict[str, Any]:
    """The answer to a join or invite: the token and where to use it."""
    return {
        "room": room,
        "token": token,
        "expiresAt": expires,
        "role": role,
        "participant": pid,
        "websocket": f"/telehealth/ws/{room}",
        "page": f"{VISIT_PAGE}#room={room}&token={token}",
        "iceServers": ice_servers(service.settings, pid),
    }
