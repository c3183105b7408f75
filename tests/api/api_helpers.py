"""Helpers shared by the API tests: sample resources, request shortcuts, outcome text."""

from __future__ import annotations

from typing import Any

import httpx

FHIR_JSON = {"Content-Type": "application/fhir+json"}
BASE = "http://testserver/fhir"


def patient(family: str = "Chalmers", **extra: Any) -> dict[str, Any]:
    """A small valid Patient."""
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Peter"]}], **extra}


def observation(subject: str, value: float = 7.2, **extra: Any) -> dict[str, Any]:
    """A small valid Observation about `subject`."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": value, "unit": "%"},
        **extra,
    }


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    """POST a resource and return the stored representation (asserting 201)."""
    r = await client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def issue_text(response: httpx.Response) -> str:
    """All diagnostics of an OperationOutcome response, joined (asserting it is one)."""
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return " | ".join(i.get("diagnostics", "") for i in body["issue"])


def bearer(
    app: Any, scopes: tuple[str, ...] = ("system/*.cruds",), **claims: Any
) -> dict[str, str]:
    """An Authorization header with a token the app accepts (default: a backend service
    allowed everything); `claims` go to `TokenService.issue` (role, patient, ...)."""
    claims.setdefault("kind", "service")
    claims.setdefault("role", "service")
    claims.setdefault("subject", "test-client")
    token, _ = app.state.tokens.issue(scopes=list(scopes), **claims)
    return {"Authorization": f"Bearer {token}"}
