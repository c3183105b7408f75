"""Shared ML fixtures: a small synthetic population generated once per session, and a
hand-written patient whose features can be checked by eye."""

from __future__ import annotations

from typing import Any

import pytest

from carebase.data.synthetic.population import Population
from carebase.ml.features import Dataset, build_dataset
from carebase.ml.tasks import load_task
from carebase.ml.training import TrainedModel, train

SEED = 11
PATIENTS = 150

Resources = list[tuple[str, list[dict[str, Any]]]]


@pytest.fixture(scope="session")
def population() -> Resources:
    """(patient id, resources) of PATIENTS synthetic patients (about 15 s to generate)."""
    return [(r[0]["id"], r) for _, r in Population(SEED).patients(PATIENTS)]


@pytest.fixture(scope="session")
def readmission(population: Resources) -> Dataset:
    """The readmission_30d table of the session population."""
    return build_dataset(load_task("readmission_30d"), population)


@pytest.fixture(scope="session")
def hba1c(population: Resources) -> Dataset:
    """The next_hba1c table of the session population."""
    return build_dataset(load_task("next_hba1c"), population)


@pytest.fixture(scope="session")
def trained(readmission: Dataset, hba1c: Dataset) -> dict[str, TrainedModel]:
    """Models trained once per session (3 folds and 30 bootstrap rounds keep it short)."""
    opts: dict[str, Any] = {"folds": 3, "bootstrap_rounds": 30}
    return {
        "logistic": train(load_task("readmission_30d"), readmission, "logistic", **opts),
        "hgb": train(load_task("readmission_30d"), readmission, "hgb", **opts),
        "linear": train(load_task("next_hba1c"), hba1c, "linear", **opts),
    }


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
