"""Shared pieces of the telehealth tests: a practitioner, a patient and published slots."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from carebase.auth.principal import DEVELOPMENT_PRINCIPAL, Principal
from carebase.store.base import Store
from carebase.telehealth.access import Caller
from carebase.telehealth.availability import parse_pattern
from carebase.telehealth.scheduling import Published, publish

ADMIN = Caller(DEVELOPMENT_PRINCIPAL)


def clinician(practitioner: str = "Practitioner/doc") -> Caller:
    return Caller(
        Principal(
            subject="u-doc",
            role="clinician",
            fhir_user=practitioner,
            scopes=frozenset({"user/*.cruds"}),
        )
    )


def patient_caller(patient_id: str) -> Caller:
    return Caller(
        Principal(
            subject=f"u-{patient_id}",
            role="patient",
            patient=patient_id,
            fhir_user=f"Patient/{patient_id}",
            scopes=frozenset({"patient/*.rs", "patient/Communication.c"}),
        )
    )


def seed(store: Store, patients: tuple[str, ...] = ("pat1", "pat2")) -> None:
    """Practitioner/doc and the given Patients."""
    with store.transaction() as tx:
        tx.create(
            "Practitioner", {"resourceType": "Practitioner", "name": [{"family": "Who"}]}, "doc"
        )
        for pid in patients:
            tx.create(
                "Patient",
                {
                    "resourceType": "Patient",
                    "name": [{"family": pid}],
                    "telecom": [{"system": "email", "value": f"{pid}@example.org"}],
                },
                pid,
            )


def week_ahead() -> date:
    """A Monday at least a week from today."""
    day = datetime.now(UTC).date() + timedelta(days=7)
    return day + timedelta(days=(7 - day.weekday()) % 7)


def pattern(**changes: Any) -> dict[str, Any]:
    monday = week_ahead()
    body: dict[str, Any] = {
        "practitioner": "Practitioner/doc",
        "timezone": "Europe/Berlin",
        "from": monday.isoformat(),
        "to": (monday + timedelta(days=6)).isoformat(),
        "slotMinutes": 30,
        "visitTypes": ["virtual", "in-person"],
        "weekly": {"mon": [["09:00", "11:00"]], "wed": [["14:00", "15:00"]]},
    }
    body.update(changes)
    return body


def published(store: Store, **changes: Any) -> Published:
    return publish(store, ADMIN, parse_pattern(pattern(**changes)))
