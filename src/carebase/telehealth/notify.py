"""Appointment reminders through a `Notifier`: a logging one by default, email (SMTP) and SMS
(an HTTP gateway) adapters for production.

`send_due_reminders` finds booked appointments starting within `lead` of now, sends one
reminder per appointment, lead and start time through the notifier, and records each as a
FHIR Communication (identifier `REMINDER_SYSTEM|<appointment>-<lead minutes>-<start>`): the
record shows what was sent and when, and a reminder is never sent twice, by this worker or
another (the identifier is checked under a transaction lock before sending). The start time
is part of the identifier, so an appointment rescheduled after its reminder went out gets a
new reminder naming the new time when that one is due.

`send_change_notices` tells a patient who was reminded of an appointment that has since
moved or been cancelled, at once rather than at the next reminder: one notice per
appointment and change (identifier `CHANGE_SYSTEM|<appointment>-moved-<start>` or
`<appointment>-cancelled`), also kept as a Communication.
"""

from __future__ import annotations

import json
import logging
import smtplib
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from carebase.store.base import Store, every_match
from carebase.telehealth.availability import instant
from carebase.telehealth.codes import (
    CATEGORY_SYSTEM,
    CHANGE_SYSTEM,
    REMINDER_SYSTEM,
    visit_types_of,
)
from carebase.telehealth.scheduling import appointment_patient, body_of

log = logging.getLogger("carebase.telehealth.notify")


@dataclass(frozen=True, slots=True)
class Reminder:
    """One reminder to send: to whom (a Patient reference and its contact points), about what."""

    appointment: str
    patient: str
    start: str
    visit_type: str
    email: str | None
    phone: str | None
    #: "reminder", or a notice that the appointment "moved" (from `was`) or was "cancelled"
    kind: str = "reminder"
    #: the start time the patient was reminded of (notices)
    was: str = ""

    @property
    def subject(self) -> str:
        """The message's subject line (email)."""
        return {"moved": "Appointment moved", "cancelled": "Appointment cancelled"}.get(
            self.kind, "Appointment reminder"
        )

    def text(self) -> str:
        """The message (no clinical detail: reminders may travel over insecure channels)."""
        how = "a video visit" if self.visit_type == "virtual" else "an appointment"
        if self.kind == "moved":
            return (
                f"Changed: {how} you were reminded of at {self.was} (UTC) is now at "
                f"{self.start} (UTC). Reference {self.appointment}."
            )
        if self.kind == "cancelled":
            return (
                f"Cancelled: {how} you were reminded of at {self.was} (UTC) is cancelled. "
                f"Reference {self.appointment}."
            )
        return f"Reminder: you have {how} at {self.start} (UTC). Reference {self.appointment}."


class Notifier(ABC):
    """Sends reminders; raises on failure (the reminder is then tried again next round)."""

    channel: str = "other"

    @abstractmethod
    def send(self, reminder: Reminder) -> None:
        """Deliver `reminder`."""


class LoggingNotifier(Notifier):
    """The default: writes each reminder to the log (and keeps them, for tests)."""

    channel = "log"

    def __init__(self) -> None:
        self.sent: list[Reminder] = []

    def send(self, reminder: Reminder) -> None:
        log.info("reminder for %s: %s", reminder.patient, reminder.text())
        self.sent.append(reminder)


class EmailNotifier(Notifier):
    """Email over SMTP (STARTTLS when `starttls`); needs the patient's email telecom."""

    channel = "email"

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.username, self.password, self.starttls, self.timeout = (
            username,
            password,
            starttls,
            timeout,
        )

    def send(self, reminder: Reminder) -> None:
        if not reminder.email:
            raise ValueError(f"{reminder.patient} has no email address")
        message = EmailMessage()
        message["From"], message["To"] = self.sender, reminder.email
        message["Subject"] = reminder.subject
        message.set_content(reminder.text())
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)


class SmsNotifier(Notifier):
    """SMS through an HTTP gateway: POSTs JSON `{"to", "text"}` with a bearer API key."""

    channel = "sms"

    def __init__(self, url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self.url, self.api_key, self.timeout = url, api_key, timeout

    def send(self, reminder: Reminder) -> None:
        if not reminder.phone:
            raise ValueError(f"{reminder.patient} has no phone number")
        data = json.dumps({"to": reminder.phone, "text": reminder.text()}).encode()
        request = urllib.request.Request(
            self.url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            if response.status >= 300:
                raise OSError(f"SMS gateway answered {response.status}")


def _contact(patient: dict[str, Any], system: str) -> str | None:
    for telecom in patient.get("telecom", []):
        if telecom.get("system") == system and telecom.get("value"):
            return str(telecom["value"])
    return None


def _compact(start: str) -> str:
    return "".join(c for c in start if c.isalnum())


def _send_once(
    store: Store,
    notifier: Notifier,
    identifier: tuple[str, str],
    appointment_id: str,
    appointment: dict[str, Any],
    now: datetime,
    *,
    kind: str = "reminder",
    was: str = "",
) -> Reminder | None:
    """Send the message (`kind`, `was`: see `Reminder`) about `appointment` to its patient
    and record it as the Communication with `identifier` (system, value), unless one says it
    went out already; under a transaction lock on the identifier, so no other worker sends
    it meanwhile. The message sent, or None: sent before, no patient, or sending failed (it
    is tried again next round)."""
    system, key = identifier
    patient_id = appointment_patient(appointment)
    if patient_id is None:
        return None
    with store.transaction() as tx:
        tx.lock(f"{system}|{key}")
        if tx.search_ids("Communication", [("identifier", f"{system}|{key}")], limit=1):
            return None
        patient = tx.read("Patient", patient_id)
        details = body_of(patient) if patient is not None and patient.body else {}
        message = Reminder(
            appointment=f"Appointment/{appointment_id}",
            patient=f"Patient/{patient_id}",
            start=str(appointment.get("start", "")),
            visit_type=(visit_types_of(appointment) or ["in-person"])[0],
            email=_contact(details, "email"),
            phone=_contact(details, "phone"),
            kind=kind,
            was=was,
        )
        try:
            notifier.send(message)
        except Exception as exc:  # one failing message must not stop the others
            log.warning("%s for %s not sent: %s", kind, message.appointment, exc)
            return None
        tx.create(
            "Communication",
            {
                "resourceType": "Communication",
                "identifier": [{"system": system, "value": key}],
                "status": "completed",
                "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "reminder"}]}],
                "subject": {"reference": message.patient},
                "about": [{"reference": message.appointment}],
                "recipient": [{"reference": message.patient}],
                "sent": instant(now),
                "medium": [{"text": notifier.channel}],
                "payload": [{"contentString": message.text()}],
            },
        )
        return message


def send_due_reminders(
    store: Store, notifier: Notifier, *, lead: timedelta, now: datetime | None = None
) -> list[Reminder]:
    """Send the reminders now due (appointments starting within `lead`); those sent."""
    now = now or datetime.now(UTC)
    params = [
        ("status", "booked"),
        ("date", f"ge{instant(now)}"),
        ("date", f"le{instant(now + lead)}"),
    ]
    page = store.search("Appointment", params, count=500, total="none")
    lead_key = int(lead.total_seconds() // 60)
    sent: list[Reminder] = []
    for stored in page.entries:
        appointment = body_of(stored)
        key = f"{stored.id}-{lead_key}-{_compact(str(appointment.get('start', '')))}"
        reminder = _send_once(store, notifier, (REMINDER_SYSTEM, key), stored.id, appointment, now)
        if reminder is not None:
            sent.append(reminder)
    return sent


def send_change_notices(
    store: Store, notifier: Notifier, *, lead: timedelta, now: datetime | None = None
) -> list[Reminder]:
    """Tell patients reminded within the last `lead` of an appointment that has since
    moved or been cancelled (one notice per appointment and change); those sent."""
    now = now or datetime.now(UTC)
    params = [("identifier", f"{REMINDER_SYSTEM}|"), ("sent", f"ge{instant(now - lead)}")]
    latest: dict[str, tuple[str, str]] = {}  # appointment id -> (sent, start) of its last
    for stored in every_match(store, "Communication", params):
        communication = body_of(stored)
        values = [i.get("value", "") for i in communication.get("identifier", [])]
        about = [a.get("reference", "") for a in communication.get("about", [])]
        if not values or not about or not about[0].startswith("Appointment/"):
            continue
        appointment_id = about[0].removeprefix("Appointment/")
        seen = (str(communication.get("sent", "")), str(values[0]).rsplit("-", 1)[-1])
        latest[appointment_id] = max(latest.get(appointment_id, seen), seen)
    sent: list[Reminder] = []
    for appointment_id, (_, was) in sorted(latest.items()):
        current = store.read("Appointment", appointment_id)
        if current is None or current.body is None:
            continue
        appointment = body_of(current)
        start = str(appointment.get("start", ""))
        if appointment.get("status") == "cancelled":
            kind, key = "cancelled", f"{appointment_id}-cancelled"
        elif _compact(start) != was:
            kind, key = "moved", f"{appointment_id}-moved-{_compact(start)}"
        else:
            continue
        notice = _send_once(
            store, notifier, (CHANGE_SYSTEM, key), appointment_id, appointment, now,
            kind=kind, was=_shown(was),
        )  # fmt: skip
        if notice is not None:
            sent.append(notice)
    return sent


def _shown(compact: str) -> str:
    """A reminder key's start (`20261201T093000Z`: the start without its punctuation) as
    an instant to show (`2026-12-01T09:30:00Z`); as it is when it is not in UTC."""
    d = compact
    utc = d[15:] in ("Z", "", "0000")
    if len(d) >= 15 and d[8] == "T" and (d[:8] + d[9:15]).isdigit() and utc:
        return f"{d[0:4]}-{d[4:6]}-{d[6:8]}T{d[9:11]}:{d[11:13]}:{d[13:15]}Z"
    return compact
