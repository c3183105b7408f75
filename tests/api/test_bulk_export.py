"""$export at system, Patient and Group level: the asynchronous protocol, parameters, errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from api_helpers import create, issue_text, observation, patient
from bulk_helpers import (
    download,
    exported,
    finished,
    kick_off,
    parameters,
    run_jobs,
    status_path,
)
from starlette.applications import Starlette

from carebase.auth.audit_entry import MemoryAuditTrail

pytestmark = pytest.mark.asyncio


async def _world(client: httpx.AsyncClient) -> dict[str, Any]:
    """Two patients with observations, a Practitioner and a Group holding the first."""
    p1 = await create(client, patient("One"))
    p2 = await create(client, patient("Two"))
    o1 = await create(client, observation(f"Patient/{p1['id']}", 1.0))
    o2 = await create(client, observation(f"Patient/{p1['id']}", 2.0))
    o3 = await create(client, observation(f"Patient/{p2['id']}", 3.0))
    doc = await create(client, {"resourceType": "Practitioner", "name": [{"family": "Doc"}]})
    group = await create(
        client,
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{p1['id']}"}}],
        },
    )
    return {"p1": p1, "p2": p2, "obs": [o1, o2, o3], "doc": doc, "group": group}


def _ids(resources: list[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in resources}


async def test_system_export_protocol(
    client: httpx.AsyncClient, app: Starlette, audit: MemoryAuditTrail
) -> None:
    world = await _world(client)
    kickoff = await kick_off(client, "/fhir/$export")
    path = status_path(kickoff)
    pending = await client.get(path)
    assert pending.status_code == 202
    assert pending.headers["x-progress"] and pending.headers["retry-after"]
    manifest = await finished(client, app, kickoff)
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"].endswith("/fhir/$export")
    assert manifest["transactionTime"].endswith("Z") and manifest["error"] == []
    files = await exported(client, manifest)
    assert _ids(files["Patient"]) == {world["p1"]["id"], world["p2"]["id"]}
    assert _ids(files["Observation"]) == _ids(world["obs"])
    assert _ids(files["Practitioner"]) == {world["doc"]["id"]}
    assert files["Observation"][0]["meta"]["versionId"] == "1"
    # the lines are the stored bytes: a read returns the same resource
    one = files["Observation"][0]
    read = await client.get(f"/fhir/Observation/{one['id']}")
    assert read.json() == one
    interactions = [e.interaction for e in audit.entries]
    assert interactions.count("export") >= 2 + len(manifest["output"])


async def test_type_since_and_type_filter(client: httpx.AsyncClient, app: Starlette) -> None:
    world = await _world(client)
    manifest = await finished(
        client, app, await kick_off(client, "/fhir/$export", params={"_type": "Observation"})
    )
    assert [e["type"] for e in manifest["output"]] == ["Observation"]
    later = await kick_off(client, "/fhir/$export", params={"_since": "2999-01-01T00:00:00Z"})
    assert (await finished(client, app, later))["output"] == []
    value_filter = "Observation?value-quantity=gt1.5"
    filtered = await kick_off(
        client,
        "/fhir/$export",
        params=[("_type", "Observation,Patient"), ("_typeFilter", value_filter)],
    )
    files = await exported(client, await finished(client, app, filtered))
    assert _ids(files["Observation"]) == {world["obs"][1]["id"], world["obs"][2]["id"]}
    assert len(files["Patient"]) == 2


async def test_patient_and_group_level(client: httpx.AsyncClient, app: Starlette) -> None:
    world = await _world(client)
    p1 = world["p1"]["id"]
    everyone = await exported(
        client, await finished(client, app, await kick_off(client, "/fhir/Patient/$export"))
    )
    assert "Practitioner" not in everyone  # outside the Patient compartment
    assert _ids(everyone["Observation"]) == _ids(world["obs"])
    group_path = f"/fhir/Group/{world['group']['id']}/$export"
    grouped = await exported(
        client, await finished(client, app, await kick_off(client, group_path))
    )
    assert _ids(grouped["Patient"]) == {p1}
    assert _ids(grouped["Observation"]) == {world["obs"][0]["id"], world["obs"][1]["id"]}
    body = parameters(
        ("patient", "valueReference", f"Patient/{world['p2']['id']}"),
        ("_type", "valueString", "Observation"),
        ("_outputFormat", "valueString", "application/ndjson"),
    )
    posted = await kick_off(client, "/fhir/Patient/$export", body=body)
    files = await exported(client, await finished(client, app, posted))
    assert _ids(files["Observation"]) == {world["obs"][2]["id"]}


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("/fhir/$export", {"_outputFormat": "text/csv"}, "_outputFormat"),
        ("/fhir/$export", {"_since": "yesterday"}, "_since"),
        ("/fhir/$export", {"_since": "2024-01-01"}, "_since"),
        ("/fhir/$export", {"_type": "Nonsense"}, "_type"),
        ("/fhir/$export", {"_typeFilter": "Observation"}, "_typeFilter"),
        ("/fhir/$export", {"_typeFilter": "Observation?bogus=1"}, "_typeFilter"),
        ("/fhir/$export", {"_typeFilter": "Observation?_sort=date"}, "_typeFilter"),
        (
            "/fhir/$export",
            {"_type": "Patient", "_typeFilter": "Observation?code=x"},
            "_typeFilter",
        ),
        ("/fhir/$export", {"_elements": "id"}, "_elements"),
        ("/fhir/$export", {"includeAssociatedData": "LatestProvenanceResources"}, "include"),
        ("/fhir/$export", {"patient": "Patient/1"}, "patient"),
        ("/fhir/Patient/$export", {"patient": "Patient/1"}, "patient"),
        ("/fhir/Patient/$export", {"_type": "Practitioner"}, "_type"),
        ("/fhir/$export", {"frobnicate": "1"}, "frobnicate"),
    ],
)
async def test_bad_parameters_are_400_naming_them(
    client: httpx.AsyncClient, path: str, params: dict[str, str], named: str
) -> None:
    r = await kick_off(client, path, params=params)
    assert r.status_code == 400, r.text
    assert named in issue_text(r)


async def test_bad_posted_parameters(client: httpx.AsyncClient) -> None:
    bad_ref = parameters(("patient", "valueReference", "Observation/1"))
    r = await kick_off(client, "/fhir/Patient/$export", body=bad_ref)
    assert r.status_code == 400 and "patient" in issue_text(r)
    r = await kick_off(client, "/fhir/$export", body={"resourceType": "Patient"})
    assert r.status_code == 400 and "Parameters" in issue_text(r)


async def test_kickoff_needs_prefer_async(client: httpx.AsyncClient) -> None:
    r = await client.get("/fhir/$export", headers={"Accept": "application/fhir+json"})
    assert r.status_code == 400 and "respond-async" in issue_text(r)
    r = await client.get("/fhir/$export", headers={"Prefer": "respond-async", "Accept": "text/csv"})
    assert r.status_code == 406
    r = await client.get("/fhir/$export", headers={"Prefer": "respond-async", "Accept": ""})
    assert r.status_code == 400 and "Accept" in issue_text(r)


async def test_unknown_group_and_patient(client: httpx.AsyncClient) -> None:
    r = await kick_off(client, "/fhir/Group/nope/$export")
    assert r.status_code == 404
    body = parameters(("patient", "valueReference", "Patient/nope"))
    r = await kick_off(client, "/fhir/Patient/$export", body=body)
    assert r.status_code == 404


async def test_cancel_deletes_files(client: httpx.AsyncClient, app: Starlette) -> None:
    await _world(client)
    queued = await kick_off(client, "/fhir/$export")
    path = status_path(queued)
    assert (await client.delete(path)).status_code == 202
    assert run_jobs(app) == 0  # a cancelled job never runs
    assert (await client.get(path)).status_code == 404
    done = await kick_off(client, "/fhir/$export")
    manifest = await finished(client, app, done)
    job_dir = app.state.bulk.directory(status_path(done).rsplit("/", 1)[-1])
    assert any(job_dir.iterdir())
    assert (await client.delete(status_path(done))).status_code == 202
    assert not job_dir.exists()
    gone = await client.get(manifest["output"][0]["url"].removeprefix("http://testserver"))
    assert gone.status_code == 404


async def test_expired_files_are_deleted(client: httpx.AsyncClient, app: Starlette) -> None:
    await _world(client)
    kickoff = await kick_off(client, "/fhir/$export")
    manifest = await finished(client, app, kickoff)
    runner = app.state.bulk
    job_id = status_path(kickoff).rsplit("/", 1)[-1]
    from carebase.store import bulk_jobs

    assert runner.clean_expired() == 0
    cleaned = bulk_jobs.expired(runner.store, at=bulk_jobs.now_ms() + 25 * 3600 * 1000)
    assert cleaned == [job_id]  # the default time to live is 24 hours
    with runner.store.writing() as cur:
        cur.execute(runner.store.q("UPDATE bulk_job SET expires = ? WHERE id = ?"), (1, job_id))
    url = manifest["output"][0]["url"]
    assert (await client.get(url.removeprefix("http://testserver"))).status_code == 410
    assert runner.clean_expired() == 1
    assert not runner.directory(job_id).exists()
    r = await client.get(status_path(kickoff))
    assert r.status_code == 410 and "expired" in issue_text(r)


async def test_download_is_streamed_from_disk_per_file(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    await _world(client)
    manifest = await finished(client, app, await kick_off(client, "/fhir/$export"))
    url = manifest["output"][0]["url"]
    base = url.rsplit("/", 1)[0].removeprefix("http://testserver")
    for name in ("..%2Fcarebase.db", "nope.ndjson", "input.ndjson"):
        assert (await client.get(f"{base}/{name}")).status_code == 404
    assert await download(client, url)


async def test_capability_statement_advertises_bulk_data(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    rest = statement["rest"][0]
    names = {op["name"] for op in rest["operation"]}
    assert names == {"export", "import", "viewdefinition-run"}  # the last: SQL on FHIR
    by_type = {r["type"]: r for r in rest["resource"]}
    for type_ in ("Patient", "Group"):
        assert "export" in {op["name"] for op in by_type[type_]["operation"]}
    assert statement["instantiates"] == [
        "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
    ]


async def test_patient_level_filters_and_since(client: httpx.AsyncClient, app: Starlette) -> None:
    world = await _world(client)
    query = [
        ("_type", "Observation"),
        ("_typeFilter", "Observation?value-quantity=lt2.5"),
        ("_since", "2000-01-01T00:00:00+00:00"),
    ]
    group_path = f"/fhir/Group/{world['group']['id']}/$export"
    files = await exported(
        client, await finished(client, app, await kick_off(client, group_path, params=query))
    )
    assert _ids(files["Observation"]) == {world["obs"][0]["id"], world["obs"][1]["id"]}
    query[1] = ("_typeFilter", "Observation?value-quantity=gt1.5")
    files = await exported(
        client, await finished(client, app, await kick_off(client, group_path, params=query))
    )
    assert _ids(files["Observation"]) == {world["obs"][1]["id"]}


async def test_every_bulk_call_is_audited(
    client: httpx.AsyncClient, app: Starlette, audit: MemoryAuditTrail
) -> None:
    world = await _world(client)
    before = len(audit.entries)
    kickoff = await kick_off(client, f"/fhir/Group/{world['group']['id']}/$export")
    manifest = await finished(client, app, kickoff)
    await download(client, manifest["output"][0]["url"])
    refused = await kick_off(client, "/fhir/$export", params={"_type": "Nonsense"})
    assert refused.status_code == 400
    await client.delete(status_path(kickoff))
    entries = audit.entries[before:]
    assert [(e.interaction, e.action, e.outcome) for e in entries] == [
        ("export", "E", "0"),  # kick-off
        ("export", "R", "0"),  # status
        ("export", "R", "0"),  # download
        ("export", "E", "4"),  # a refused kick-off
        ("export", "D", "0"),  # cancel
    ]
    assert f"Group/{world['group']['id']}" in entries[0].entities
    assert world["p1"]["id"] in entries[0].patients
