"""Attack suite, part 2: writes across the line (create, update, patch, delete, conditional
ones, transaction and batch entries, Bundle references), break-glass, `$validate`, and the
audit trail (every denial recorded; no data served when the trail is down).

Runs on SQLite and PostgreSQL (the `store` fixture).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from access_world import World, build_world, ids, obs
from api_helpers import FHIR_JSON, issue_text
from starlette.applications import Starlette

from carebase.auth.audit_entry import AuditEntry, AuditTrail, MemoryAuditTrail
from carebase.errors import Unavailable

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def world(client: httpx.AsyncClient, app: Starlette, audit: MemoryAuditTrail) -> World:
    built = await build_world(client, app)
    audit.entries.clear()
    return built


def _as(world: World, headers: dict[str, str]) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=world.app), base_url="http://testserver", headers=headers
    )


def communication(subject: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": subject},
        "payload": [{"contentString": "hello"}],
        **extra,
    }


async def _count(world: World, path: str, **params: str) -> int:
    async with _as(world, world.admin) as c:
        bundle = (await c.get(path, params={**params, "_summary": "count"})).json()
    return int(bundle["total"])


async def _subject(world: World, path: str) -> str:
    async with _as(world, world.admin) as c:
        return str((await c.get(path)).json()["subject"]["reference"])


# --- patient-context writes -------------------------------------------------------------------


async def test_patient_writes_stay_in_their_compartment(
    world: World, audit: MemoryAuditTrail
) -> None:
    async with _as(world, world.patient_a) as c:
        own = await c.post(
            "/fhir/Communication", json=communication("Patient/A"), headers=FHIR_JSON
        )
        assert own.status_code == 201, own.text
        for body in (
            communication("Patient/B"),
            communication("Patient/A", recipient=[{"reference": "Patient/B"}]),
            communication("Patient/A", sender={"reference": "Patient/B"}),
        ):
            r = await c.post("/fhir/Communication", json=body, headers=FHIR_JSON)
            assert r.status_code == 403, r.text
            assert "outside" in issue_text(r)
        # the patient's scopes grant no other writes
        r = await c.post("/fhir/Observation", json=obs("x", "Patient/A", "laboratory"))
        assert r.status_code == 403
        r = await c.put("/fhir/Patient/A", json={"resourceType": "Patient", "id": "A"})
        assert r.status_code == 403
    assert await _count(world, "/fhir/Communication") == 1
    denied = [e for e in audit.entries if e.outcome == "4"]
    assert [e.interaction for e in denied] == ["create"] * 4 + ["update"]
    assert all(e.action in ("C", "U") for e in denied)


# --- clinician writes outside their organisation ---------------------------------------------


async def test_update_checks_the_stored_and_the_new_version(world: World) -> None:
    async with _as(world, world.clinician_org1) as c:
        theirs = obs("obs-b-lab", "Patient/B", "laboratory", "9999-9")
        r = await c.put("/fhir/Observation/obs-b-lab", json=theirs, headers=FHIR_JSON)
        assert r.status_code == 403
        taken = obs("obs-b-lab", "Patient/A", "laboratory", "9999-9")  # move B's into A's
        r = await c.put("/fhir/Observation/obs-b-lab", json=taken, headers=FHIR_JSON)
        assert r.status_code == 403
        moved = obs("obs-a-lab", "Patient/B", "laboratory")  # move A's into B's record
        r = await c.put("/fhir/Observation/obs-a-lab", json=moved, headers=FHIR_JSON)
        assert r.status_code == 403
        fine = obs("obs-a-lab", "Patient/A", "laboratory", "5555-5")
        r = await c.put("/fhir/Observation/obs-a-lab", json=fine, headers=FHIR_JSON)
        assert r.status_code == 200, r.text
        created_for_b = obs("new-b", "Patient/B", "laboratory")
        r = await c.put("/fhir/Observation/new-b", json=created_for_b, headers=FHIR_JSON)
        assert r.status_code == 403
    assert await _subject(world, "/fhir/Observation/obs-b-lab") == "Patient/B"
    assert await _subject(world, "/fhir/Observation/obs-a-lab") == "Patient/A"
    assert await _count(world, "/fhir/Observation", _id="new-b") == 0


async def test_patch_and_delete_outside_are_refused(world: World) -> None:
    patch = [{"op": "replace", "path": "/status", "value": "cancelled"}]
    json_patch = {"Content-Type": "application/json-patch+json"}
    async with _as(world, world.clinician_org1) as c:
        hidden = await c.patch("/fhir/Observation/obs-b-lab", json=patch, headers=json_patch)
        missing = await c.patch("/fhir/Observation/obs-z", json=patch, headers=json_patch)
        assert hidden.status_code == missing.status_code == 404
        steal = [{"op": "replace", "path": "/subject/reference", "value": "Patient/B"}]
        r = await c.patch("/fhir/Observation/obs-a-lab", json=steal, headers=json_patch)
        assert r.status_code == 403
        assert (await c.delete("/fhir/Observation/obs-b-lab")).status_code == 403
        assert (await c.delete("/fhir/Patient/B")).status_code == 403
    assert await _subject(world, "/fhir/Observation/obs-a-lab") == "Patient/A"
    assert await _count(world, "/fhir/Observation", _id="obs-b-lab", status="final") == 1
    assert await _count(world, "/fhir/Patient", _id="B") == 1


async def test_conditional_writes_match_only_visible_resources(world: World) -> None:
    async with _as(world, world.clinician_org1) as c:
        # B's observation has code 4444-4 only: the clinician's criteria match nothing
        r = await c.delete("/fhir/Observation", params={"code": "4444-4"})
        assert r.status_code == 200 and "nothing deleted" in issue_text(r)
        # PUT Type?criteria with no visible match creates - here in B's record: refused
        body = obs("obs-b-focus", "Patient/B", "laboratory", "4444-4")
        del body["id"]
        r = await c.put(
            "/fhir/Observation", params={"identifier": "urn:test|obs-b-focus"}, json=body
        )
        assert r.status_code == 403
        patch = [{"op": "replace", "path": "/status", "value": "cancelled"}]
        r = await c.patch(
            "/fhir/Observation",
            params={"identifier": "urn:test|obs-b-lab"},
            json=patch,
            headers={"Content-Type": "application/json-patch+json"},
        )
        assert r.status_code == 404
        # If-None-Exist does not see B's observation either (and the create is refused)
        body = obs("x", "Patient/B", "laboratory")
        r = await c.post(
            "/fhir/Observation",
            json=body,
            headers={**FHIR_JSON, "If-None-Exist": "identifier=urn:test|obs-b-lab"},
        )
        assert r.status_code == 403
    assert await _count(world, "/fhir/Observation", code="4444-4") == 1
    assert await _count(world, "/fhir/Observation", status="final") == 5


async def test_conditional_writes_need_a_search_scope(world: World) -> None:
    no_search = world.token(("system/Observation.cud",), kind="service", role="service")
    async with _as(world, no_search) as c:
        r = await c.delete("/fhir/Observation", params={"code": "1111-1"})
        assert r.status_code == 403 and "search" in issue_text(r)
        assert (await c.delete("/fhir/Observation/obs-a-vital")).status_code == 200


# --- transaction and batch --------------------------------------------------------------------


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _post(resource: dict[str, Any], url: str | None = None) -> dict[str, Any]:
    return {
        "resource": resource,
        "request": {"method": "POST", "url": url or resource["resourceType"]},
    }


def _get(url: str) -> dict[str, Any]:
    return {"request": {"method": "GET", "url": url}}


async def test_transaction_with_one_forbidden_entry_writes_nothing(
    world: World, audit: MemoryAuditTrail
) -> None:
    async with _as(world, world.patient_a) as c:
        bundle = _bundle(
            "transaction",
            _post(communication("Patient/A")),
            _post(communication("Patient/B")),
        )
        r = await c.post("/fhir", json=bundle, headers=FHIR_JSON)
        assert r.status_code == 403
        assert "Bundle.entry[1]" in issue_text(r)
    assert audit.entries[-1].interaction == "transaction" and audit.entries[-1].outcome == "4"
    assert await _count(world, "/fhir/Communication") == 0


async def test_transaction_bundle_references_cannot_reach_another_patient(world: World) -> None:
    async with _as(world, world.clinician_org1) as c:
        via_reference = _bundle(
            "transaction",
            _post(obs("x", "Patient/B", "laboratory")),
        )
        r = await c.post("/fhir", json=via_reference, headers=FHIR_JSON)
        assert r.status_code == 403
        # a conditional reference resolves among visible Patients only
        via_condition = _bundle(
            "transaction",
            _post(obs("y", "Patient?identifier=urn:mrn|b", "laboratory")),
        )
        r = await c.post("/fhir", json=via_condition, headers=FHIR_JSON)
        assert r.status_code == 412 and "matches no Patient" in issue_text(r)
        own = _bundle("transaction", _post(obs("z", "Patient?identifier=urn:mrn|a", "laboratory")))
        r = await c.post("/fhir", json=own, headers=FHIR_JSON)
        assert r.status_code == 200, r.text
    assert await _count(world, "/fhir/Observation", subject="Patient/B") == 2


async def test_batch_entries_fail_one_by_one(world: World) -> None:
    async with _as(world, world.patient_a) as c:
        bundle = _bundle(
            "batch",
            _post(communication("Patient/A")),
            _post(communication("Patient/B")),
            _get("Patient/B"),
            _get("Patient/A"),
            _get("Observation?code=1111-1"),
            _get("Observation/obs-b-lab/_history/1"),
            _get("Patient/_history"),
            {
                "request": {"method": "DELETE", "url": "Observation/obs-a-lab"},
            },
        )
        r = await c.post("/fhir", json=bundle, headers=FHIR_JSON)
        assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    statuses = [e["response"]["status"].split()[0] for e in entries]
    assert statuses == ["201", "403", "404", "200", "200", "404", "200", "403"]
    assert ids(entries[4]["resource"]) == ["Observation/obs-a-lab"]
    history = entries[6]["resource"]
    assert {e["fullUrl"].rsplit("/", 1)[1] for e in history["entry"]} == {"A"}
    assert await _count(world, "/fhir/Communication") == 1


# --- break-glass ------------------------------------------------------------------------------


async def test_break_glass_opens_the_record_and_flags_the_audit(
    world: World, audit: MemoryAuditTrail
) -> None:
    async with _as(world, world.clinician_org1) as c:
        assert (await c.get("/fhir/Patient/B")).status_code == 404
        reason = "Unconscious patient in the emergency department"
        r = await c.get("/fhir/Patient/B", headers={"X-Break-Glass": reason})
        assert r.status_code == 200 and r.json()["id"] == "B"
        s = await c.get("/fhir/Observation", headers={"X-Break-Glass": reason})
        assert "Observation/obs-b-lab" in ids(s.json())
        for bad in ("", "   ", "x" * 501):
            r = await c.get("/fhir/Patient/B", headers={"X-Break-Glass": bad})
            assert r.status_code == 400
    async with _as(world, world.nurse_org1) as c:
        r = await c.get("/fhir/Patient/B", headers={"X-Break-Glass": "handover"})
        assert r.status_code == 200
    async with _as(world, world.patient_a) as c:
        r = await c.get("/fhir/Patient/B", headers={"X-Break-Glass": "curious"})
        assert r.status_code == 403
    glass = [e for e in audit.entries if e.break_glass]
    assert [e.break_glass for e in glass[:2]] == [reason, reason]
    assert glass[0].patients == ("B",) and glass[0].outcome == "0"
    assert "flagged for review" in (glass[0].description or "")
    assert "B" in glass[1].patients
    refused = [e for e in audit.entries if e.interaction == "break-glass"]
    assert len(refused) == 4 and all(e.outcome == "4" for e in refused)


# --- $validate --------------------------------------------------------------------------------


async def test_validate_needs_some_scope_for_the_type(world: World) -> None:
    async with _as(world, world.patient_a) as c:
        r = await c.post("/fhir/Observation/$validate", json=obs("v", "Patient/B", "laboratory"))
        assert r.status_code == 200  # the body only: nothing stored is read
    nothing = world.token(("patient/Patient.rs",), role="patient", kind="user", patient="A")
    async with _as(world, nothing) as c:
        r = await c.post("/fhir/Observation/$validate", json=obs("v", "Patient/A", "laboratory"))
        assert r.status_code == 403


# --- audit ------------------------------------------------------------------------------------


async def test_every_interaction_is_audited(world: World, audit: MemoryAuditTrail) -> None:
    async with _as(world, world.clinician_org1) as c:
        await c.get("/fhir/Observation", params={"code": "1111-1"}, headers={"User-Agent": "t/1"})
        await c.get("/fhir/Patient/A/_history/1")
        await c.get("/fhir/Observation/_history")
        await c.post("/fhir/Observation", json=obs("n", "Patient/A", "laboratory"))
        await c.delete("/fhir/Observation/obs-a-vital")
    got = [(e.interaction, e.action, e.outcome) for e in audit.entries]
    assert got == [
        ("search-type", "R", "0"),
        ("vread", "R", "0"),
        ("history-type", "R", "0"),
        ("create", "C", "0"),
        ("delete", "D", "0"),
    ]
    search = audit.entries[0]
    assert search.entities == ("Observation/obs-a-lab",) and search.patients == ("A",)
    assert search.query == "code=1111-1" and search.user_agent == "t/1"
    assert search.principal is not None and search.principal.subject == "doc1"
    # every field in its place (`audited.run` builds the entry positionally, for speed)
    assert search.description == "GET /fhir/Observation -> 200"
    assert search.source_ip is not None and search.break_glass is None
    assert abs((datetime.now(UTC) - search.recorded).total_seconds()) < 60
    assert audit.entries[3].patients == ("A",)


class _Down(AuditTrail):
    def record(self, entry: AuditEntry) -> None:
        raise Unavailable("The audit store is unreachable")


async def test_no_patient_data_leaves_unaudited(world: World) -> None:
    world.app.state.audit_trail = _Down()
    async with _as(world, world.admin) as c:
        for path in ("/fhir/Patient/A", "/fhir/Observation", "/fhir/Patient/A/_history"):
            r = await c.get(path)
            assert r.status_code == 503, path
            assert b"Alpha" not in r.content and b"obs-a" not in r.content
        r = await c.get("/fhir/Patient", headers={"Authorization": "Bearer nonsense"})
        assert r.status_code == 503
