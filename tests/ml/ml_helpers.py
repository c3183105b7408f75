"""Hand-written FHIR resources for ML tests (a module of its own: test modules cannot import
from conftest when several conftest modules exist)."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

from carebase.ml.timeutil import iso

Resources = list[tuple[str, list[dict[str, Any]]]]


def obs(
    pid: str, n: int, code: str, value: float, when: str, system: str = "http://loinc.org"
) -> dict[str, Any]:
    """An Observation with a quantity value."""
    return {
        "resourceType": "Observation",
        "id": f"o{n}",
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "1"},
    }


def cond(
    pid: str,
    n: int,
    codings: list[tuple[str, str]],
    onset: str,
    recorded: str | None = None,
    status: str = "confirmed",
) -> dict[str, Any]:
    """A Condition with the given (system, code) codings."""
    out: dict[str, Any] = {
        "resourceType": "Condition",
        "id": f"c{n}",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": s, "code": c} for s, c in codings]},
        "verificationStatus": {"coding": [{"code": status}]},
        "onsetDateTime": onset,
    }
    if recorded:
        out["recordedDate"] = recorded
    return out


def enc(pid: str, n: int, cls: str, start: str, end: str) -> dict[str, Any]:
    """A finished Encounter of class `cls`."""
    return {
        "resourceType": "Encounter",
        "id": f"e{n}",
        "status": "finished",
        "class": {"code": cls},
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": start, "end": end},
    }


def med(pid: str, n: int, rxnorm: str, when: str) -> dict[str, Any]:
    """An active MedicationRequest coded in RxNorm."""
    return {
        "resourceType": "MedicationRequest",
        "id": f"m{n}",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": rxnorm}]
        },
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": when,
    }


def patient(
    pid: str, birth: str = "1960-06-15", gender: str = "female", **extra: Any
) -> dict[str, Any]:
    """A Patient."""
    return {"resourceType": "Patient", "id": pid, "birthDate": birth, "gender": gender, **extra}


def future_copies(resources: list[dict[str, Any]], after: datetime) -> list[dict[str, Any]]:
    """Every clinical resource again, dated `after` + 1 hour, with altered values: anything
    a feature read after the index would show up."""
    moved = iso(after + timedelta(hours=1))
    out = []
    for r in resources:
        if r["resourceType"] == "Patient":
            continue
        c = copy.deepcopy(r)
        c["id"] = f"{r['id']}-future"
        for key in ("effectiveDateTime", "onsetDateTime", "recordedDate", "authoredOn", "issued"):
            if key in c:
                c[key] = moved
        if "period" in c:
            c["period"] = {"start": moved, "end": iso(after + timedelta(hours=3))}
        if "valueQuantity" in c:
            c["valueQuantity"]["value"] = c["valueQuantity"]["value"] * 3 + 100
        for comp in c.get("component", []):
            if "valueQuantity" in comp:
                comp["valueQuantity"]["value"] = comp["valueQuantity"]["value"] * 3 + 100
        out.append(c)
    return out
