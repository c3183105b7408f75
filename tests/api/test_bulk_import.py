"""$import: NDJSON bodies and allowed local files, loaded by a background job with a report."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from api_helpers import bearer, issue_text
from bulk_helpers import ASYNC, download, finished, run_jobs, status_path
from starlette.applications import Starlette

from carebase.api import bulk_import, bulk_runner
from carebase.api.app import create_app
from carebase.auth.audit_entry import MemoryAuditTrail
from carebase.config import Settings
from carebase.store import bulk_jobs
from carebase.store.base import Store

pytestmark = pytest.mark.asyncio
NDJSON = {**ASYNC, "Content-Type": "application/fhir+ndjson"}


def _lines(*resources: Any) -> bytes:
    return b"\n".join(r if isinstance(r, bytes) else orjson.dumps(r) for r in resources) + b"\n"


GOOD = [
    {"resourceType": "Patient", "id": "imp-1", "gender": "female"},
    {"resourceType": "Patient", "id": "imp-2", "gender": "male"},
    {
        "resourceType": "Observation",
        "id": "imp-o1",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": "Patient/imp-1"},
    },
]


def _import_parameters(*inputs: tuple[str, str], fmt: str = "application/fhir+ndjson") -> Any:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputFormat", "valueCode": fmt},
            {"name": "inputSource", "valueUri": "https://example.org/source"},
            *(
                {
                    "name": "input",
                    "part": [
                        {"name": "type", "valueCode": type_},
                        {"name": "url", "valueUrl": url},
                    ],
                }
                for type_, url in inputs
            ),
        ],
    }


async def test_ndjson_body_with_good_and_bad_lines(
    client: httpx.AsyncClient, app: Starlette, audit: MemoryAuditTrail
) -> None:
    body = _lines(
        GOOD[0],
        b"{not json",
        GOOD[1],
        {"resourceType": "Patient", "id": "bad", "gender": "sometimes"},
        {"id": "no-type"},
        GOOD[2],
    )
    kickoff = await client.post("/fhir/$import", content=body, headers=NDJSON)
    manifest = await finished(client, app, kickoff)
    assert sorted((e["type"], e["count"]) for e in manifest["output"]) == [
        ("Observation", 1), ("Patient", 2),
    ]  # fmt: skip
    counts = manifest["extension"]["counts"]
    assert counts == {"read": 6, "created": 3, "updated": 0, "unchanged": 0, "rejected": 3}
    [errors] = manifest["error"]
    outcomes = await download(client, errors["url"])
    text = [o["issue"][0]["diagnostics"] for o in outcomes]
    assert len(outcomes) == errors["count"] == 3
    # Writer processes report the invalid resources of a batch when it is written, after
    # lines refused as they were read: the file is in the order problems were found.
    assert sorted(t.split(":")[1].strip() for t in text) == ["line 2", "line 4", "line 5"]
    assert (await client.get("/fhir/Observation/imp-o1")).status_code == 200
    assert "import" in [e.interaction for e in audit.entries]
    # the same lines again change nothing
    again = await finished(
        client, app, await client.post("/fhir/$import", content=body, headers=NDJSON)
    )
    assert again["extension"]["counts"]["unchanged"] == 3


async def test_files_from_an_import_directory(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    allowed = tmp_path / "incoming"
    allowed.mkdir()
    (allowed / "patients.ndjson").write_bytes(_lines(*GOOD[:2]))
    (allowed / "obs.ndjson").write_bytes(_lines(GOOD[2], GOOD[0]))
    app = create_app(settings.with_(import_dirs=(str(allowed),)), store, audit=MemoryAuditTrail())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=bearer(app)
    ) as client:
        params = _import_parameters(
            ("Patient", (allowed / "patients.ndjson").as_uri()),
            ("Observation", (allowed / "obs.ndjson").as_uri()),
        )
        kickoff = await client.post(
            "/fhir/$import", json=params, headers={**ASYNC, "Content-Type": "application/fhir+json"}
        )
        manifest = await finished(client, app, kickoff)
        assert manifest["extension"]["counts"]["created"] == 3
        [errors] = manifest["error"]  # a Patient in the Observation input
        [outcome] = await download(client, errors["url"])
        assert "obs.ndjson: line 2" in outcome["issue"][0]["diagnostics"]
        outside = tmp_path / "elsewhere.ndjson"
        outside.write_bytes(_lines(GOOD[0]))
        for url, named in (
            (outside.as_uri(), "outside the import directories"),
            ((allowed / "missing.ndjson").as_uri(), "does not exist"),
            ((allowed / ".." / "elsewhere.ndjson").as_uri(), "outside"),
            ("https://example.org/data.ndjson", "network"),
            ("ftp://example.org/data.ndjson", "file://"),
        ):
            r = await client.post(
                "/fhir/$import",
                json=_import_parameters(("Patient", url)),
                headers={**ASYNC, "Content-Type": "application/fhir+json"},
            )
            assert r.status_code == 400 and named in issue_text(r), (url, r.text)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        (_import_parameters(("Patient", "file:///tmp/x.ndjson")), "CAREBASE_IMPORT_DIRS"),
        (_import_parameters(("Patient", "file:///x"), fmt="text/csv"), "inputFormat"),
        (_import_parameters(("Nonsense", "file:///x")), "Nonsense"),
        (_import_parameters(), "input"),
        ({"resourceType": "Parameters", "parameter": [{"name": "wat"}]}, "wat"),
        ({"resourceType": "Patient"}, "Parameters"),
    ],
)
async def test_bad_import_requests_are_400(
    client: httpx.AsyncClient, params: Any, named: str
) -> None:
    headers = {**ASYNC, "Content-Type": "application/fhir+json"}
    r = await client.post("/fhir/$import", json=params, headers=headers)
    assert r.status_code == 400 and named in issue_text(r), r.text


async def test_import_needs_async_and_write_scopes(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    body = _lines(*GOOD)
    r = await client.post(
        "/fhir/$import", content=body, headers={"Content-Type": "application/fhir+ndjson"}
    )
    assert r.status_code == 400 and "respond-async" in issue_text(r)
    reader = bearer(app, ("system/*.rs",), subject="reader")
    r = await client.post("/fhir/$import", content=body, headers={**NDJSON, **reader})
    assert r.status_code == 403
    r = await client.post("/fhir/$import", content=b"", headers=NDJSON)
    assert r.status_code == 400
    # a token that may write Patients only: the Observation line is refused, the rest loads
    patients_only = bearer(app, ("system/Patient.cu",), subject="patient-writer")
    kickoff = await client.post("/fhir/$import", content=body, headers={**NDJSON, **patients_only})
    manifest = await finished(client, app, kickoff, **patients_only)
    assert manifest["extension"]["counts"]["created"] == 2
    [outcome] = await download(client, manifest["error"][0]["url"], **patients_only)
    assert outcome["issue"][0]["code"] == "forbidden"
    assert (await client.get("/fhir/Observation/imp-o1")).status_code == 404


async def test_a_cancelled_import_stops_after_a_batch_and_a_new_one_completes(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two writer processes on PostgreSQL (the job's thread on SQLite), whatever the cores.
    app = create_app(settings.with_(import_workers=2), store, audit=MemoryAuditTrail())
    monkeypatch.setattr(bulk_runner, "REPORT_EVERY", 0.0)  # report after every batch
    monkeypatch.setattr(bulk_import, "BATCH", 500)  # so 6,000 lines are a dozen batches
    report = bulk_jobs.report

    def cancel_then_report(s: Any, id_: str, *args: Any) -> bool:
        bulk_jobs.set_status(s, id_, bulk_jobs.CANCELLED)  # as DELETE of the status URL does
        return report(s, id_, *args)

    monkeypatch.setattr(bulk_jobs, "report", cancel_then_report)
    patients = [{"resourceType": "Patient", "id": f"c{n}", "gender": "other"} for n in range(6000)]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=bearer(app)
    ) as client:
        kickoff = await client.post("/fhir/$import", content=_lines(*patients), headers=NDJSON)
        path = status_path(kickoff)
        assert run_jobs(app) == 1
        assert (await client.get(path)).status_code == 404  # cancelled: gone with its files
        assert not [p for p in multiprocessing.active_children() if p.name.startswith("carebase")]
        found = await client.get("/fhir/Patient", params={"_summary": "count"})
        # At most three batches per writer are handed out before the first answer stops it.
        assert 0 < found.json()["total"] <= 3000
        monkeypatch.setattr(bulk_jobs, "report", report)
        again = await client.post("/fhir/$import", content=_lines(*patients), headers=NDJSON)
        counts = (await finished(client, app, again))["extension"]["counts"]
        assert counts["read"] == 6000 and counts["created"] + counts["unchanged"] == 6000
