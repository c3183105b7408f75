"""The AuditEvent API: search by patient/date/agent, paging, read, 405 on writes, access rules.

The authentication layer (helper "access") puts the caller in `scope["carebase.principal"]`;
here a small ASGI wrapper does that from a test header, so each request names its caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from api_helpers import issue_text
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from carebase.api import app as app_module
from carebase.api.app import audit_writer_kind, create_app, durable_trail
from carebase.auth.audit_chain import SHUTDOWN, verify
from carebase.auth.audit_entry import AuditEntry, MemoryAuditTrail
from carebase.auth.audit_log import DatabaseAuditTrail
from carebase.auth.audit_process import ProcessAuditTrail
from carebase.auth.principal import DEVELOPMENT_PRINCIPAL, Principal
from carebase.config import Settings
from carebase.errors import CarebaseError
from carebase.store import audit_records
from carebase.store.clock import datetime_to_ms
from carebase.store.factory import open_store
from carebase.store.sql_store import SqlStore

ADMIN = Principal(subject="a", username="root", role="admin", scopes=frozenset({"user/*.rs"}))
SERVICE = Principal(
    subject="s",
    kind="service",
    role="service",
    client_id="siem",
    scopes=frozenset({"system/AuditEvent.rs"}),
)
CLINICIAN = Principal(
    subject="c", username="dr.grey", role="clinician", fhir_user="Practitioner/7",
    scopes=frozenset({"user/*.rs"}),
)  # fmt: skip
PATIENT = Principal(
    subject="p", username="amy", role="patient", fhir_user="Patient/amy", patient="amy",
    scopes=frozenset({"patient/AuditEvent.rs", "patient/Observation.rs"}),
)  # fmt: skip
NO_AUDIT_SCOPE = Principal(
    subject="p2", username="bob", role="patient", patient="bob",
    scopes=frozenset({"patient/Observation.rs"}),
)  # fmt: skip
CALLERS = {
    "admin": ADMIN,
    "service": SERVICE,
    "clinician": CLINICIAN,
    "patient": PATIENT,
    "no-scope": NO_AUDIT_SCOPE,
    "dev": DEVELOPMENT_PRINCIPAL,
}
pytestmark = pytest.mark.asyncio


class AsCaller:
    """Sets the request's principal from the `x-test-caller` header (none: no principal)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            name = dict(scope["headers"]).get(b"x-test-caller")
            if name is not None:
                scope["carebase.principal"] = CALLERS[name.decode()]
        await self.app(scope, receive, send)


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


@pytest.fixture
def audit_app(store: SqlStore, settings: Settings) -> Iterator[Starlette]:
    app = create_app(settings, store)
    trail = app.state.audit_trail
    # the durable trail is the default: a process of its own or a thread, as `auto` picks
    kind = audit_writer_kind(settings)
    assert isinstance(trail, ProcessAuditTrail if kind == "process" else DatabaseAuditTrail)
    # the log to search: clinician and service reads of two patients over four days
    for day, who, patient in [
        (1, CLINICIAN, "amy"),
        (2, CLINICIAN, "zed"),
        (3, SERVICE, "amy"),
        (4, CLINICIAN, "amy"),
    ]:
        trail.record(
            AuditEntry(
                "read", "R", principal=who, patients=(patient,),
                entities=(f"Observation/{patient}-{day}",), recorded_ms=datetime_to_ms(at(day)),
            )
        )  # fmt: skip
    trail.record(AuditEntry("failed-auth", "E", outcome="4", recorded_ms=datetime_to_ms(at(5))))
    trail.flush()
    yield app
    trail.close()


@pytest_asyncio.fixture
async def api(audit_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=AsCaller(audit_app))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def search(
    api: httpx.AsyncClient, query: str, caller: str = "admin", status: int = 200
) -> dict[str, Any]:
    r = await api.get(f"/fhir/AuditEvent?{query}", headers={"x-test-caller": caller})
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    return body


def days(bundle: dict[str, Any]) -> list[str]:
    """The recorded date of each match (newest first)."""
    return [e["resource"]["recorded"][:10] for e in bundle.get("entry", [])]


async def test_search_by_patient_date_agent_and_more(api: httpx.AsyncClient) -> None:
    bundle = await search(api, "patient=amy")
    assert bundle["type"] == "searchset"
    assert days(bundle) == ["2026-03-04", "2026-03-03", "2026-03-01"]
    assert days(await search(api, "patient=Patient/zed")) == ["2026-03-02"]
    assert days(await search(api, "patient=amy&date=ge2026-03-02&date=le2026-03-03")) == [
        "2026-03-03"
    ]
    assert days(await search(api, "date=2026-03-02")) == ["2026-03-02"]
    assert days(await search(api, "agent=Practitioner/7&patient=amy")) == [
        "2026-03-04",
        "2026-03-01",
    ]
    assert days(await search(api, "agent=siem")) == ["2026-03-03"]
    assert days(await search(api, "outcome=4")) == ["2026-03-05"]
    failed = await search(api, "subtype=http://dicom.nema.org/resources/ontology/DCM|failed-auth")
    assert days(failed) == ["2026-03-05"]
    assert days(await search(api, "entity=Observation/zed-2")) == ["2026-03-02"]
    assert days(await search(api, "action=R&patient=zed,amy&date=lt2026-03-02")) == ["2026-03-01"]
    entry = (await search(api, "patient=zed"))["entry"][0]
    assert entry["fullUrl"] == f"http://testserver/fhir/AuditEvent/{entry['resource']['id']}"


async def test_paging_follows_next_links(api: httpx.AsyncClient) -> None:
    seen: list[str] = []
    bundle = await search(api, "_count=2&date=lt2026-03-06")
    pages = 1
    while True:
        seen += days(bundle)
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            break
        r = await api.get(nxt[0], headers={"x-test-caller": "admin"})
        bundle, pages = r.json(), pages + 1
    assert seen == ["2026-03-05", "2026-03-04", "2026-03-03", "2026-03-02", "2026-03-01"]
    assert pages == 3


async def test_read_by_id(api: httpx.AsyncClient) -> None:
    event = (await search(api, "patient=zed"))["entry"][0]["resource"]
    r = await api.get(f"/fhir/AuditEvent/{event['id']}", headers={"x-test-caller": "admin"})
    assert r.status_code == 200
    assert r.json() == event and r.headers["etag"] == 'W/"1"'
    r = await api.get(
        f"/fhir/AuditEvent/{event['id']}/_history/1", headers={"x-test-caller": "admin"}
    )
    assert r.status_code == 200
    r = await api.get("/fhir/AuditEvent/no-such-event", headers={"x-test-caller": "admin"})
    assert r.status_code == 404


async def test_writes_are_refused_append_only(api: httpx.AsyncClient) -> None:
    event = (await search(api, "patient=zed"))["entry"][0]["resource"]
    admin = {"x-test-caller": "admin", "content-type": "application/fhir+json"}
    for method, url in [
        ("POST", "/fhir/AuditEvent"),
        ("PUT", f"/fhir/AuditEvent/{event['id']}"),
        ("DELETE", f"/fhir/AuditEvent/{event['id']}"),
        ("PATCH", f"/fhir/AuditEvent/{event['id']}"),
        ("DELETE", "/fhir/AuditEvent?patient=zed"),
    ]:
        r = await api.request(method, url, json=event, headers=admin)
        assert r.status_code == 405, (method, url, r.text)
        assert "append-only" in issue_text(r)
    assert days(await search(api, "patient=zed")) == ["2026-03-02"]  # untouched


async def test_bad_search_input_is_400(api: httpx.AsyncClient) -> None:
    for query, where in [
        ("name=amy", "name"),
        ("date=yesterday", "date"),
        ("action=X", "action"),
        ("outcome=2", "outcome"),
        ("_cursor=abc", "_cursor"),
        ("patient=", "patient"),
    ]:
        body = await search(api, query, status=400)
        assert body["issue"][0]["expression"] == [where], query


async def test_access_rules(api: httpx.AsyncClient) -> None:
    # admins, services and development see everything
    for caller in ("admin", "service", "dev"):
        assert len(days(await search(api, "date=lt2026-03-06", caller))) == 5
    # a patient sees who accessed their own record, whatever they ask for
    assert days(await search(api, "", "patient")) == ["2026-03-04", "2026-03-03", "2026-03-01"]
    assert days(await search(api, "patient=zed", "patient")) == []
    zed = (await search(api, "patient=zed"))["entry"][0]["resource"]["id"]
    r = await api.get(f"/fhir/AuditEvent/{zed}", headers={"x-test-caller": "patient"})
    assert r.status_code == 404  # "not yours" looks like "not there"
    # a clinician may read patient data but not the audit log
    body = await search(api, "", "clinician", status=403)
    assert "administrators" in body["issue"][0]["diagnostics"]
    await search(api, "", "no-scope", status=403)
    # no authenticated caller at all
    r = await api.get("/fhir/AuditEvent")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")


async def test_reading_the_log_is_itself_audited(
    api: httpx.AsyncClient, audit_app: Starlette
) -> None:
    await search(api, "patient=amy", "patient")
    audit_app.state.audit_trail.flush()
    bundle = await search(api, "agent=amy&subtype=search-type")
    (entry,) = bundle["entry"]
    event = entry["resource"]
    assert event["agent"][0]["who"]["reference"] == "Patient/amy"
    assert event["entity"][0]["what"]["reference"] == "Patient/amy"


async def test_the_app_starts_and_closes_its_durable_trail(settings: Settings) -> None:
    settings = replace(settings, audit_writer="process")
    app = create_app(settings)  # opens its own SQLite store in the data directory
    async with app.router.lifespan_context(app):
        trail = app.state.audit_trail
        assert isinstance(trail, ProcessAuditTrail) and trail.healthy
        transport = httpx.ASGITransport(app=AsCaller(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            r = await c.get("/fhir/AuditEvent", headers={"x-test-caller": "admin"})
            assert r.status_code == 200
    store = open_store(settings.resolved_database_url)
    assert isinstance(store, SqlStore)
    try:
        records = list(audit_records.iter_records(store))
    finally:
        store.close()
    assert verify(records).intact
    # the search was recorded, and shutdown wrote everything and its marker
    assert [r.interaction for r in records] == ["search-type", SHUTDOWN]
    assert records[0].agent == "root"


@pytest.mark.parametrize(
    ("cpus", "workers", "kind"),
    [(2, 1, "process"), (8, 4, "process"), (1, 1, "thread"), (2, 2, "thread"), (4, 6, "thread")],
)
async def test_auto_picks_the_audit_writer_by_usable_cpus(
    store: SqlStore,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    cpus: int,
    workers: int,
    kind: str,
) -> None:
    monkeypatch.setattr(app_module, "usable_cpus", lambda: cpus)
    settings = replace(settings, workers=workers)
    assert settings.audit_writer == "auto"
    assert audit_writer_kind(settings) == kind
    trail = durable_trail(store, settings)  # made, not started, on either database
    assert isinstance(trail, ProcessAuditTrail if kind == "process" else DatabaseAuditTrail)
    # an explicit choice stands whatever the CPUs
    for chosen in ("process", "thread"):
        assert audit_writer_kind(replace(settings, audit_writer=chosen)) == chosen


async def test_an_unknown_audit_writer_is_refused_by_name(settings: Settings) -> None:
    with pytest.raises(CarebaseError, match=r"CAREBASE_AUDIT_WRITER is 'fork'.*'auto'"):
        audit_writer_kind(replace(settings, audit_writer="fork"))


async def test_a_given_trail_is_used(store: SqlStore, settings: Settings) -> None:
    memory = MemoryAuditTrail()
    app = create_app(settings, store, audit=memory)
    assert app.state.audit_trail is memory
    transport = httpx.ASGITransport(app=AsCaller(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        r = await c.get("/fhir/AuditEvent?patient=amy", headers={"x-test-caller": "service"})
    assert r.status_code == 200 and r.json()["type"] == "searchset"
    (entry,) = memory.entries
    assert entry.interaction == "search-type" and entry.principal is SERVICE
    assert entry.query == "patient=amy"


async def test_bundles_cannot_write_audit_events(api: httpx.AsyncClient) -> None:
    event = (await search(api, "patient=zed"))["entry"][0]["resource"]
    for kind in ("transaction", "batch"):
        bundle = {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [
                {
                    "resource": {**event, "outcome": "0"},
                    "request": {"method": "PUT", "url": f"AuditEvent/{event['id']}"},
                }
            ],
        }
        headers = {"content-type": "application/fhir+json", "x-test-caller": "admin"}
        r = await api.post("/fhir", json=bundle, headers=headers)
        text = r.text
        if kind == "transaction":
            assert r.status_code == 405, text
        else:
            assert r.json()["entry"][0]["response"]["status"].startswith("405"), text
        assert "append-only" in text
    r = await api.get("/fhir/AuditEvent?patient=zed", headers={"x-test-caller": "admin"})
    assert [e["resource"] for e in r.json()["entry"]] == [event]  # untouched
