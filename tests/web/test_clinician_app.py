"""The clinician app over HTTP on SQLite and PostgreSQL: sign-in redirects, search, the
chart, documenting (with plausibility checks and nothing written on bad input), versions
and who changed what, roles, organisations, registration with duplicate detection,
session expiry, CSRF, escaping and the audit of every page."""

from __future__ import annotations

import base64
import re

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from web_world import World, csrf, errors, sign_in

from carebase.auth.audit_entry import AuditEntry, AuditTrail
from carebase.auth.sessions import BrowserSessions
from carebase.errors import Unavailable
from carebase.store.base import Store

pytestmark = pytest.mark.asyncio


def _count(store: Store, type_: str, patient: str) -> int:
    page = store.search(type_, [("patient", patient)], count=1000, total="accurate")
    assert page.total is not None
    return page.total


def _flush(app: Starlette) -> None:
    app.state.audit_trail.flush()


async def test_pages_send_a_visitor_to_sign_in_and_back(
    web: httpx.AsyncClient, world: World
) -> None:
    response = await web.get(f"/app/patients/{world.first}")
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next=%2Fapp%2Fpatients%2F{world.first}"
    await sign_in(web, "doc")
    start = await web.get("/")
    assert (start.status_code, start.headers["location"]) == (303, "/app")


async def test_search_by_name_mrn_and_birth_date(web: httpx.AsyncClient, world: World) -> None:
    await sign_in(web, "admin")
    given, family = world.first_name.split()[0], world.first_name.split()[-1]
    by_name = await web.get("/app", params={"q": family})
    assert f"/app/patients/{world.first}" in by_name.text
    assert f"/app/patients/{world.second}" not in by_name.text or family in world.second_name
    chart = await web.get(f"/app/patients/{world.first}")
    mrn = re.search(r"<dt>MRN</dt><dd>([^<]+)</dd>", chart.text)
    assert mrn is not None
    by_mrn = await web.get("/app/search", params={"q": mrn.group(1)})
    assert f"/app/patients/{world.first}" in by_mrn.text and "<html" not in by_mrn.text
    born = re.search(r"<dt>Born</dt><dd>([^<]+)</dd>", chart.text)
    assert born is not None
    both = await web.get("/app/search", params={"q": f"{given} {born.group(1)}"})
    assert f"/app/patients/{world.first}" in both.text
    wrong = await web.get("/app/search", params={"q": f"{given} 1801-01-01"})
    assert "No patient matches" in wrong.text


async def test_chart_summary_trends_and_its_audit_entry(
    web: httpx.AsyncClient, world: World, store: Store, audited_app: Starlette
) -> None:
    with store.transaction() as tx:
        tx.create(
            "AllergyIntolerance",
            {
                "resourceType": "AllergyIntolerance",
                "patient": {"reference": f"Patient/{world.first}"},
                "code": {"text": "Penicillin"},
                "criticality": "high",
                "reaction": [{"manifestation": [{"text": "Hives"}]}],
            },
        )
    await sign_in(web, "doc")
    response = await web.get(f"/app/patients/{world.first}")
    assert response.status_code == 200
    html = response.text
    assert world.first_name in html
    assert re.search(r"<dt>Age</dt><dd>\d+ years</dd>", html)
    assert 'class="banner danger"' in html and "Penicillin (Hives)" in html
    assert "Active problems" in html and "Recent lab results" in html
    assert re.search(r'<svg class="trend" id="trend-bp"', html)
    assert 'class="flag flag-' in html  # synthetic labs include abnormal values
    assert "<script" not in html and " style=" not in html and " onclick" not in html
    _flush(audited_app)
    from carebase.store import audit_records

    [entry] = audit_records.search(
        store,
        audit_records.AuditQuery(agents=("doc",), entities=(f"Patient/{world.first}",)),
        limit=1,
    )
    assert entry.interaction == "read" and entry.outcome == "0"
    assert world.first in entry.patients
    assert any(e.startswith("Observation/") for e in entry.entities)
    home = await web.get("/app")
    recent = home.text.split("Recent patients", 1)[1]
    assert f"/app/patients/{world.first}" in recent


async def test_vitals_are_checked_then_charted(
    web: httpx.AsyncClient, world: World, store: Store
) -> None:
    await sign_in(web, "doc")
    form = await web.get(f"/app/patients/{world.first}/vitals")
    token = csrf(form.text)
    before = _count(store, "Observation", world.first)
    bad = await web.post(
        f"/app/patients/{world.first}/vitals",
        data={
            "csrf_token": token,
            "systolic": "1280",
            "diastolic": "80",
            "heart_rate": "abc",
            "temperature": "37.1",
        },
    )
    assert bad.status_code == 400
    shown = errors(bad.text)
    assert "1280 mmHg is not plausible (expected 40-300)" in shown
    assert "Enter a number" in shown
    assert 'value="37.1"' in bad.text  # the form keeps what was typed
    inverted = await web.post(
        f"/app/patients/{world.first}/vitals",
        data={"csrf_token": token, "systolic": "80", "diastolic": "120"},
    )
    assert "Diastolic must be lower than systolic" in errors(inverted.text)
    assert _count(store, "Observation", world.first) == before
    good = await web.post(
        f"/app/patients/{world.first}/vitals",
        data={
            "csrf_token": token,
            "systolic": "187",
            "diastolic": "111",
            "heart_rate": "72",
            "weight": "81.4",
        },
    )
    assert (good.status_code, good.headers["location"]) == (
        303,
        f"/app/patients/{world.first}#vitals",
    )
    assert _count(store, "Observation", world.first) == before + 3
    page = store.search(
        "Observation", [("patient", world.first), ("code", "85354-9"), ("_sort", "-date")], count=1
    )
    panel = orjson.loads(page.entries[0].body or b"{}")
    systolic = panel["component"][0]
    assert systolic["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "8480-6",
        "display": "Systolic blood pressure",
    }
    assert systolic["valueQuantity"] == {
        "value": 187,
        "unit": "mmHg",
        "system": "http://unitsofmeasure.org",
        "code": "mm[Hg]",
    }
    assert panel["performer"][0]["display"] == "Dr Doc"
    chart = (await web.get(f"/app/patients/{world.first}")).text
    bp = chart.split('id="fig-bp"', 1)[1].split("</figure>", 1)[0]
    assert "Systolic blood pressure 187 mmHg" in bp and "<td>187 / 111</td>" in bp
    assert "81.4 kg" in chart


async def test_problem_from_icd10_resolved_as_a_new_version_with_who_changed_it(
    web: httpx.AsyncClient, world: World, store: Store, audited_app: Starlette
) -> None:
    await sign_in(web, "doc")
    found = await web.get("/app/icd10", params={"q": "type 2 diabetes without complications"})
    assert 'data-value="E11.9"' in found.text
    by_code = await web.get("/app/icd10", params={"q": "j45.90"})
    assert 'data-value="J45.901"' in by_code.text
    token = csrf((await web.get(f"/app/patients/{world.first}/problem")).text)
    unknown = await web.post(
        f"/app/patients/{world.first}/problem", data={"csrf_token": token, "code": "A00.5"}
    )
    assert "A00.5 is not an ICD-10-CM code" in errors(unknown.text)
    created = await web.post(
        f"/app/patients/{world.first}/problem",
        data={"csrf_token": token, "code": "j45.909", "onset": "2020-02-03"},
    )
    assert created.status_code == 303
    page = store.search(
        "Condition",
        [("patient", world.first), ("code", "http://hl7.org/fhir/sid/icd-10-cm|J45.909")],
    )
    [stored] = page.entries
    condition = orjson.loads(stored.body or b"{}")
    assert condition["code"]["text"] == "Unspecified asthma, uncomplicated"
    resolved = await web.post(
        f"/app/patients/{world.first}/problems/{stored.id}/resolve",
        data={"csrf_token": token, "version": "1"},
    )
    assert resolved.status_code == 303
    current = store.read("Condition", stored.id)
    assert current is not None and current.version == 2
    assert orjson.loads(current.body or b"{}")["clinicalStatus"]["coding"][0]["code"] == "resolved"
    stale = await web.post(
        f"/app/patients/{world.first}/problems/{stored.id}/resolve",
        data={"csrf_token": token, "version": "1"},
    )
    assert stale.status_code == 412  # someone changed it since the page was shown
    _flush(audited_app)
    chart = (await web.get(f"/app/patients/{world.first}")).text
    changes = chart.split('id="changes"', 1)[1]
    link = f'<a href="/app/patients/{world.first}/history/Condition/{stored.id}">'
    assert re.search(
        rf"<td>doc</td><td>update</td><td>{link}Condition/{stored.id}</a></td>", changes
    )
    assert re.search(
        rf"<td>doc</td><td>create</td><td>{link}Condition/{stored.id}</a></td>", changes
    )


async def test_note_text_is_escaped_and_html_sanitised(
    web: httpx.AsyncClient, world: World, store: Store
) -> None:
    await sign_in(web, "doc")
    token = csrf((await web.get(f"/app/patients/{world.first}/note")).text)
    empty = await web.post(f"/app/patients/{world.first}/note", data={"csrf_token": token})
    assert "Write at least one section" in errors(empty.text)
    posted = await web.post(
        f"/app/patients/{world.first}/note",
        data={
            "csrf_token": token,
            "subjective": "Cough <script>alert(1)</script> for 3 days",
            "plan": "Rest & fluids",
        },
    )
    assert posted.status_code == 303
    evil = "<p>Seen <b>today</b></p><script>alert(2)</script><img src=x onerror=alert(3)>"
    with store.transaction() as tx:
        tx.create(
            "DocumentReference",
            {
                "resourceType": "DocumentReference",
                "status": "current",
                "subject": {"reference": f"Patient/{world.first}"},
                "date": "2099-01-01T00:00:00Z",
                "type": {"text": "Outside letter"},
                "content": [
                    {
                        "attachment": {
                            "contentType": "text/html",
                            "data": base64.b64encode(evil.encode()).decode(),
                        }
                    }
                ],
            },
        )
    chart = (await web.get(f"/app/patients/{world.first}")).text
    notes = chart.split('id="h-notes"', 1)[1]
    assert "Cough &lt;script&gt;alert(1)&lt;/script&gt; for 3 days" in notes
    assert "Rest &amp; fluids" in notes
    assert "<p>Seen <b>today</b></p>" in notes
    assert "alert(2)" not in notes and "onerror" not in notes and "<img" not in notes


async def test_prescribe_order_and_start_an_encounter(
    web: httpx.AsyncClient, world: World, store: Store
) -> None:
    await sign_in(web, "nurse")  # nurses document too (no delete in their role)
    token = csrf((await web.get(f"/app/patients/{world.first}/encounter")).text)
    started = await web.post(
        f"/app/patients/{world.first}/encounter",
        data={"csrf_token": token, "class": "AMB", "reason": "Follow-up"},
    )
    assert started.status_code == 303
    open_ = store.search("Encounter", [("patient", world.first), ("status", "in-progress")])
    [encounter] = open_.entries
    form = (await web.get(f"/app/patients/{world.first}/prescribe")).text
    assert f'<option value="{encounter.id}" selected>' in form
    missing = await web.post(
        f"/app/patients/{world.first}/prescribe",
        data={"csrf_token": token, "medication": "Metformin", "rxnorm": "x1"},
    )
    assert set(errors(missing.text)) >= {"This field is required", "An RxNorm code is digits only"}
    rx = await web.post(
        f"/app/patients/{world.first}/prescribe",
        data={
            "csrf_token": token,
            "medication": "Metformin 500 mg oral tablet",
            "rxnorm": "860975",
            "dosage": "1 tablet twice daily",
            "refills": "2",
            "encounter": encounter.id,
        },
    )
    assert rx.status_code == 303
    order = await web.post(
        f"/app/patients/{world.first}/order",
        data={
            "csrf_token": token,
            "test": "4548-4",
            "priority": "urgent",
            "encounter": encounter.id,
        },
    )
    assert order.status_code == 303
    request = store.search(
        "MedicationRequest", [("patient", world.first), ("code", "860975")]
    ).entries
    body = orjson.loads(request[0].body or b"{}")
    assert body["requester"]["display"] == "Nora Nurse"
    assert body["encounter"] == {"reference": f"Encounter/{encounter.id}"}
    [lab] = store.search("ServiceRequest", [("patient", world.first)]).entries
    assert orjson.loads(lab.body or b"{}")["priority"] == "urgent"
    chart = (await web.get(f"/app/patients/{world.first}")).text
    assert "Metformin 500 mg oral tablet" in chart and "Follow-up" in chart


async def test_forms_need_the_csrf_token(
    web: httpx.AsyncClient, world: World, store: Store
) -> None:
    await sign_in(web, "doc")
    before = _count(store, "Observation", world.first)
    response = await web.post(
        f"/app/patients/{world.first}/vitals", data={"systolic": "120", "diastolic": "80"}
    )
    assert response.status_code == 403
    forged = await web.post(
        f"/app/patients/{world.first}/vitals",
        data={"csrf_token": "x" * 43, "systolic": "120", "diastolic": "80"},
    )
    assert forged.status_code == 403
    assert _count(store, "Observation", world.first) == before


async def test_roles_see_their_own_navigation_and_pages(
    web: httpx.AsyncClient, world: World
) -> None:
    await sign_in(web, "desk")
    home = (await web.get("/app")).text
    assert "Register a patient" in home and "Audit log" not in home
    chart = (await web.get(f"/app/patients/{world.first}")).text
    assert world.first_name in chart
    assert "Recent lab results" not in chart and "Record vital signs" not in chart
    assert (await web.get(f"/app/patients/{world.first}/vitals")).status_code == 403
    assert (await web.get("/app/admin/audit")).status_code == 403
    assert (await web.get("/portal")).status_code == 403


async def test_a_clinician_sees_only_their_organisations_patients(
    web: httpx.AsyncClient, world: World, store: Store
) -> None:
    with store.transaction() as tx:
        other_org = tx.create("Organization", {"resourceType": "Organization", "name": "Other"})
        stranger = tx.create(
            "Patient",
            {
                "resourceType": "Patient",
                "name": [{"family": "Stranger", "given": ["Sam"]}],
                "birthDate": "1990-01-01",
                "managingOrganization": {"reference": f"Organization/{other_org.id}"},
            },
        )
    await sign_in(web, "doc")
    assert (await web.get(f"/app/patients/{stranger.id}")).status_code == 404
    found = (await web.get("/app/search", params={"q": "Stranger"})).text
    assert "No patient matches" in found and stranger.id not in found
    assert (await web.get(f"/app/patients/{stranger.id}/vitals")).status_code == 404


async def test_registration_detects_duplicates(
    web: httpx.AsyncClient, world: World, store: Store
) -> None:
    await sign_in(web, "doc")
    token = csrf((await web.get("/app/patients/new")).text)
    fields = {
        "csrf_token": token,
        "given": "Lin",
        "family": "Wei",
        "birth_date": "1980-05-06",
        "gender": "female",
    }
    bad = await web.post("/app/patients/new", data={**fields, "birth_date": "3000-01-01"})
    assert "The birth date cannot be in the future" in errors(bad.text)
    first = await web.post("/app/patients/new", data=fields)
    assert first.status_code == 303
    new_id = first.headers["location"].rsplit("/", 1)[1]
    created = orjson.loads(store.read("Patient", new_id).body or b"{}")  # type: ignore[union-attr]
    assert created["managingOrganization"] == {"reference": f"Organization/{world.organization}"}
    assert created["identifier"][0]["type"]["coding"][0]["code"] == "MR"
    again = await web.post("/app/patients/new", data=fields)
    assert again.status_code == 409
    assert "Possible duplicate" in again.text and f"/app/patients/{new_id}" in again.text
    confirmed = await web.post("/app/patients/new", data={**fields, "confirm_new": "yes"})
    assert confirmed.status_code == 303
    assert store.search("Patient", [("family", "Wei")], total="accurate").total == 2


async def test_an_idle_session_expires(
    web: httpx.AsyncClient, world: World, store: Store, audited_app: Starlette
) -> None:
    now = [1_000_000.0]
    audited_app.state.browser_sessions = BrowserSessions(
        store, idle_seconds=60, absolute_seconds=3600, clock=lambda: now[0]
    )
    await sign_in(web, "doc")
    assert (await web.get(f"/app/patients/{world.first}")).status_code == 200
    now[0] += 61
    expired = await web.get(f"/app/patients/{world.first}")
    assert expired.status_code == 303 and expired.headers["location"].startswith("/login?next=")


async def test_language_follows_the_browser_and_the_switch(
    web: httpx.AsyncClient, world: World
) -> None:
    await sign_in(web, "doc")
    chinese = await web.get("/app", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
    assert '<html lang="zh-Hans">' in chinese.text and "查找患者" in chinese.text
    assert chinese.headers["content-language"] == "zh-Hans"
    english = await web.get("/app", headers={"Accept-Language": "de,en;q=0.5"})
    assert '<html lang="en">' in english.text and "Find a patient" in english.text
    switched = await web.post(
        "/language",
        data={
            "csrf_token": csrf(english.text),
            "lang": "zh",
            "back": f"/app/patients/{world.first}",
        },
    )
    assert (switched.status_code, switched.headers["location"]) == (
        303,
        f"/app/patients/{world.first}",
    )
    chart = await web.get(f"/app/patients/{world.first}")
    assert "当前问题" in chart.text and "Active problems" not in chart.text
    offsite = await web.post(
        "/language", data={"csrf_token": csrf(chart.text), "lang": "en", "back": "//evil.example/"}
    )
    assert offsite.headers["location"] == "/"


async def test_pages_carry_the_strict_content_security_policy(
    web: httpx.AsyncClient, world: World
) -> None:
    await sign_in(web, "admin")
    for path in (
        "/app",
        f"/app/patients/{world.first}",
        f"/app/patients/{world.first}/problem",
        "/app/admin/audit",
        "/app/admin/users",
    ):
        response = await web.get(path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        html = response.text
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert not re.search(r"\s(on[a-z]+|style)=", html), path
        assert response.headers["cache-control"] == "no-store"
    script = await web.get("/static/carebase.js")
    assert script.status_code == 200 and "data-live" in script.text


class _BrokenTrail(AuditTrail):
    def record(self, entry: AuditEntry) -> None:
        raise Unavailable("The audit store is unavailable")


async def test_no_page_is_shown_unaudited(
    web: httpx.AsyncClient, world: World, audited_app: Starlette
) -> None:
    await sign_in(web, "doc")
    working = audited_app.state.audit_trail
    audited_app.state.audit_trail = _BrokenTrail()
    try:
        response = await web.get(f"/app/patients/{world.first}")
    finally:
        audited_app.state.audit_trail = working
    assert response.status_code == 503
    assert world.first_name not in response.text
    assert "The audit store is unavailable" in response.text
