"""Appointment reminders through a `Notifier`: a logging one by default, email (SMTP) and SMS
(an HTTP gateway) adapters for production.

`send_due_reminders` finds booked appointments starting within `lead` of now, sends one
reminder per appointment, lead and start time through the notifier, and records each as a
FHIR Communication (identifier `REMINDER_SYSTEM|<appointment>-<lead minutes>-<start>`): the
record shows what was sent and when, and a reminder is never sent twice, by this worker or
another (the identifier is checked under a transaction lock before sending). The start time
is part of the identifier, so an appointment rescheduled after its reminder went out gets a
new reminder naming the new time when that one is due.
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

from carebase.store.base import Store
from carebase.telehealth.availability import instant
from carebase.telehealth.codes import CATEGORY_SYSTEM, REMINDER_SYSTEM, visit_types_of
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

    def text(self) -> str:
        """The message (no clinical detail: reminders may travel over insecure channels)."""
        how = "a video visit" if self.visit_type == "virtual" else "an appointment"
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
        message["Subject"] = "Appointment reminder"
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
        patient_id = appointment_patient(appointment)
        if patient_id is None:
            continue
        start = str(appointment.get("start", ""))
        identifier = f"{stored.id}-{lead_key}-{''.join(c for c in start if c.isalnum())}"
        with store.transaction() as tx:
            tx.lock(f"telehealth-reminder:{identifier}")
            if tx.search_ids(
                "Communication", [("identifier", f"{REMINDER_SYSTEM}|{identifier}")], limit=1
            ):
                continue
            patient = tx.read("Patient", patient_id)
            details = body_of(patient) if patient is not None and patient.body else {}
            reminder = Reminder(
                appointment=f"Appointment/{stored.id}",
                patient=f"Patient/{patient_id}",
                start=start,
                visit_type=(visit_types_of(appointment) or ["in-person"])[0],
                email=_contact(details, "email"),
                phone=_contact(details, "phone"),
            )
            try:
                notifier.send(reminder)
            except Exception as exc:  # one failing reminder must not stop the others
                log.warning("reminder for %s not sent: %s", reminder.appointment, exc)
                continue
            tx.create(
                "Communication",
                {
                    "resourceType": "Communication",
                    "identifier": [{"system": REMINDER_SYSTEM, "value": identifier}],
                    "status": "completed",
                    "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "reminder"}]}],
                    "subject": {"reference": reminder.patient},
                    "about": [{"reference": reminder.appointment}],
                    "recipient": [{"reference": reminder.patient}],
                    "sent": instant(now),
                    "medium": [{"text": notifier.channel}],
                    "payload": [{"contentString": reminder.text()}],
                },
            )
            sent.append(reminder)
    return sent
