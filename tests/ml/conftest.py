"""Shared ML fixtures: a small synthetic population generated once per session, and a
hand-written patient whose features can be checked by eye."""

from __future__ import annotations

from typing import Any

import pytest

from carebase.data.synthetic.population import Population

SEED = 11
PATIENTS = 150

Resources = list[tuple[str, list[dict[str, Any]]]]


@pytest.fixture(scope="session")
def population() -> Resources:
    """(patient id, resources) of PATIENTS synthetic patients (about 15 s to generate)."""
    return [(r[0]["id"], r) for _, r in Population(SEED).patients(PATIENTS)]


def obs(pid: str, n: int, code: str, value: float, when: str, system: str = "http://loinc.org") -> dict[str, Any]:
    """An Observation with a quantity value."""
    return {
        "resourceType": "Observation", "id": f"o{n}", "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "1"},
    }  # fmt: skip


def cond(pid: str, n: int, codings: list[tuple[str, str]], onset: str, recorded: str | None = None,
         status: str = "confirmed") -> dict[str, Any]:  # fmt: skip
    """A Condition with the given (system, code) codings."""
    out: dict[str, Any] = {
        "resourceType": "Condition", "id": f"c{n}", "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": s, "code": c} for s, c in codings]},
        "verificationStatus": {"coding": [{"code": status}]}, "onsetDateTime": onset,
    }  # fmt: skip
    if recorded:
        out["recordedDate"] = recorded
    return out


def enc(pid: str, n: int, cls: str, start: str, end: str) -> dict[str, Any]:
    """A finished Encounter of class `cls`."""
    return {
        "resourceType": "Encounter", "id": f"e{n}", "status": "finished",
        "class": {"code": cls}, "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": start, "end": end},
    }  # fmt: skip


def med(pid: str, n: int, rxnorm: str, when: str) -> dict[str, Any]:
    """An active MedicationRequest coded in RxNorm."""
    return {
        "resourceType": "MedicationRequest", "id": f"m{n}", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"coding": [
            {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": rxnorm}]},
        "subject": {"reference": f"Patient/{pid}"}, "authoredOn": when,
    }  # fmt: skip


def patient(pid: str, birth: str = "1960-06-15", gender: str = "female", **extra: Any) -> dict[str, Any]:
    """A Patient."""
    return {"resourceType": "Patient", "id": pid, "birthDate": birth, "gender": gender, **extra}
