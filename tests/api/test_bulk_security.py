"""Who may export what: scopes, patient context, and jobs that belong to their requester."""

from __future__ import annotations

import httpx
import pytest
from api_helpers import bearer, create, issue_text, observation, patient
from bulk_helpers import ASYNC, exported, finished, kick_off, parameters, status_path
from starlette.applications import Starlette

pytestmark = pytest.mark.asyncio


async def _two_patients(client: httpx.AsyncClient) -> tuple[str, str]:
    p1 = (await create(client, patient("One")))["id"]
    p2 = (await create(client, patient("Two")))["id"]
    await create(client, observation(f"Patient/{p1}", 1.0))
    await create(client, observation(f"Patient/{p2}", 2.0))
    await create(client, {"resourceType": "Practitioner", "name": [{"family": "Doc"}]})
    return p1, p2


async def test_no_token_is_401(anonymous_client: httpx.AsyncClient) -> None:
    for path in ("/fhir/$export", "/fhir/$bulk-status/x", "/fhir/$bulk-file/x/Patient.ndjson"):
        r = await anonymous_client.get(path, headers=ASYNC)
        assert r.status_code == 401, path


async def test_patient_token_exports_only_its_compartment(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    p1, p2 = await _two_patients(client)
    me = bearer(app, ("patient/*.rs",), kind="user", role="patient", patient=p1, subject="pat")
    kickoff = await kick_off(client, "/fhir/Patient/$export", headers=me)
    manifest = await finished(client, app, kickoff, **me)
    files = await exported(client, manifest, **me)
    assert {r["id"] for r in files["Patient"]} == {p1}
    assert [r["subject"]["reference"] for r in files["Observation"]] == [f"Patient/{p1}"]
    other = parameters(("patient", "valueReference", f"Patient/{p2}"))
    r = await kick_off(client, "/fhir/Patient/$export", body=other, headers=me)
    assert r.status_code == 404
    r = await kick_off(client, "/fhir/$export", headers=me)
    assert r.status_code == 403 and "system" in issue_text(r)


async def test_system_export_needs_system_scopes(client: httpx.AsyncClient, app: Starlette) -> None:
    await _two_patients(client)
    user = bearer(app, ("user/*.rs",), kind="user", role="admin", subject="admin")
    assert (await kick_off(client, "/fhir/$export", headers=user)).status_code == 403
    nothing = bearer(app, ("system/Patient.c",), subject="writer")
    assert (await kick_off(client, "/fhir/$export", headers=nothing)).status_code == 403
    only = bearer(app, ("system/Patient.rs",), subject="patients-only")
    kickoff = await kick_off(client, "/fhir/$export", headers=only)
    manifest = await finished(client, app, kickoff, **only)
    assert [e["type"] for e in manifest["output"]] == ["Patient"]
    r = await kick_off(client, "/fhir/$export", params={"_type": "Observation"}, headers=only)
    assert r.status_code == 403 and "Observation" in issue_text(r)


async def test_only_the_requester_sees_the_job(client: httpx.AsyncClient, app: Starlette) -> None:
    await _two_patients(client)
    first = bearer(app, subject="client-a", client_id="app-a")
    kickoff = await kick_off(client, "/fhir/$export", headers=first)
    manifest = await finished(client, app, kickoff, **first)
    url = manifest["output"][0]["url"].removeprefix("http://testserver")
    status = status_path(kickoff)
    for intruder in (
        bearer(app, subject="client-b", client_id="app-b"),
        bearer(app, subject="client-a", client_id="app-b"),  # same subject, other client
    ):
        assert (await client.get(status, headers=intruder)).status_code == 404
        assert (await client.get(url, headers=intruder)).status_code == 404
        assert (await client.delete(status, headers=intruder)).status_code == 404
    assert (await client.get(url, headers=first)).status_code == 200
