"""A small world for the access-control tests: two organisations, one patient in each, their
observations, and tokens for the callers who try to reach across.

- Organization/org1 manages Patient A ("Alpha"), Organization/org2 manages Patient B
  ("Bravo"); Practitioner/doc is nobody's patient data.
- A has a laboratory Observation (`obs-a-lab`) and a vital-signs one (`obs-a-vital`), and
  `obs-a-focus` (subject A, focus Patient B). B has `obs-b-lab` and `obs-b-focus` (subject B,
  focus Patient A: in B's compartment only, since `focus` is no compartment parameter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from api_helpers import FHIR_JSON, bearer
from starlette.applications import Starlette

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LOINC = "http://loinc.org"


def obs(
    id_: str, subject: str, category: str, code: str = "4548-4", **extra: Any
) -> dict[str, Any]:
    """An Observation with a client id (PUT creates it)."""
    return {
        "resourceType": "Observation",
        "id": id_,
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": subject},
        "identifier": [{"system": "urn:test", "value": id_}],
        **extra,
    }


RESOURCES: list[dict[str, Any]] = [
    {"resourceType": "Organization", "id": "org1", "name": "One"},
    {"resourceType": "Organization", "id": "org2", "name": "Two"},
    {"resourceType": "Practitioner", "id": "doc", "name": [{"family": "Doc"}]},
    {
        "resourceType": "Patient",
        "id": "A",
        "name": [{"family": "Alpha"}],
        "identifier": [{"system": "urn:mrn", "value": "a"}],
        "managingOrganization": {"reference": "Organization/org1"},
    },
    {
        "resourceType": "Patient",
        "id": "B",
        "name": [{"family": "Bravo"}],
        "identifier": [{"system": "urn:mrn", "value": "b"}],
        "managingOrganization": {"reference": "Organization/org2"},
    },
    obs("obs-a-lab", "Patient/A", "laboratory", "1111-1"),
    obs("obs-a-vital", "Patient/A", "vital-signs", "2222-2"),
    obs("obs-a-focus", "Patient/A", "laboratory", "3333-3", focus=[{"reference": "Patient/B"}]),
    obs("obs-b-lab", "Patient/B", "laboratory", "1111-1"),
    obs("obs-b-focus", "Patient/B", "laboratory", "4444-4", focus=[{"reference": "Patient/A"}]),
]


@dataclass
class World:
    """The app, and Authorization headers of the callers."""

    app: Starlette
    admin: dict[str, str]
    patient_a: dict[str, str]
    clinician_org1: dict[str, str]
    nurse_org1: dict[str, str]
    lab_only_a: dict[str, str]

    def token(self, scopes: tuple[str, ...], **claims: Any) -> dict[str, str]:
        """Another caller's Authorization header."""
        return bearer(self.app, scopes, **claims)


async def build_world(client: httpx.AsyncClient, app: Starlette) -> World:
    """Store the resources (as the admin client) and mint the callers' tokens."""
    for resource in RESOURCES:
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        r = await client.put(url, json=resource, headers=FHIR_JSON)
        assert r.status_code == 201, r.text
    user = {"kind": "user"}
    return World(
        app=app,
        admin=bearer(app),
        patient_a=bearer(
            app,
            ("patient/*.rs", "patient/Communication.c", "launch/patient"),
            role="patient",
            patient="A",
            subject="pat-a",
            **user,
        ),
        clinician_org1=bearer(
            app,
            ("user/*.cruds",),
            role="clinician",
            organization="org1",
            subject="doc1",
            **user,
        ),
        nurse_org1=bearer(
            app, ("user/*.rus",), role="nurse", organization="org1", subject="nurse1", **user
        ),
        lab_only_a=bearer(
            app,
            (f"patient/Observation.rs?category={CATEGORY}|laboratory", "patient/Patient.rs"),
            role="patient",
            patient="A",
            subject="pat-a-lab",
            **user,
        ),
    )


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    """`Type/id` of a searchset's entries of one search mode, sorted."""
    return sorted(
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode", "match") == mode
    )


def history_ids(bundle: dict[str, Any]) -> set[str]:
    """`Type/id` of a history Bundle's entries."""
    return {e["fullUrl"].split("/fhir/")[1] for e in bundle.get("entry", [])}
