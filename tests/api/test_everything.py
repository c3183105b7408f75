"""`Patient/$everything` over HTTP on SQLite and PostgreSQL: the whole compartment for the
caller, nothing of another patient, a patient token only for itself, refused parameters,
and its audit entry."""

from __future__ import annotations

import httpx
import pytest
from api_helpers import bearer
from starlette.applications import Starlette

from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.data.synthetic.population import Population, load_into_store
from carebase.store.base import Store

pytestmark = pytest.mark.asyncio


@pytest.fixture
def two(store: Store) -> tuple[str, str]:
    population = Population(5)
    load_into_store(population, 2, store)
    return population.ids.of("Patient", 0), population.ids.of("Patient", 1)


async def test_everything_is_the_whole_compartment(
    client: httpx.AsyncClient, store: Store, two: tuple[str, str], audit: MemoryAuditTrail
) -> None:
    first, second = two
    response = await client.get(f"/fhir/Patient/{first}/$everything")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    assert bundle["type"] == "searchset" and bundle["total"] == len(bundle["entry"])
    ids = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
    assert ("Patient", first) in ids and ("Patient", second) not in ids
    observations = store.search("Observation", [("patient", first)], count=1, total="accurate")
    assert sum(t == "Observation" for t, _ in ids) == observations.total
    subjects = {
        ref
        for e in bundle["entry"]
        for key in ("subject", "patient")
        if isinstance(ref := (e["resource"].get(key) or {}).get("reference"), str)
    }
    assert subjects == {f"Patient/{first}"}
    entry = audit.entries[-1]
    assert (entry.interaction, entry.action, entry.outcome) == ("operation", "E", "0")
    assert first in entry.patients


async def test_a_patient_token_gets_only_its_own(
    app: Starlette, client: httpx.AsyncClient, two: tuple[str, str]
) -> None:
    first, second = two
    headers = bearer(app, ("patient/*.rs",), kind="user", role="patient", patient=first)
    own = await client.get(f"/fhir/Patient/{first}/$everything", headers=headers)
    assert own.status_code == 200 and own.json()["total"] > 1
    other = await client.get(f"/fhir/Patient/{second}/$everything", headers=headers)
    assert other.status_code == 404


async def test_unsupported_parameters_and_unknown_patients(
    client: httpx.AsyncClient, two: tuple[str, str]
) -> None:
    first, _ = two
    refused = await client.get(f"/fhir/Patient/{first}/$everything", params={"_since": "2020"})
    assert refused.status_code == 400 and "_since" in refused.text
    missing = await client.get("/fhir/Patient/nobody/$everything")
    assert missing.status_code == 404
