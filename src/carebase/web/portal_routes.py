"""The patient portal under `/portal`: the signed-in patient's own record only.

No portal URL names a patient: every page reads the record of the patient the user is
linked to (`User.patient`), under a `patient/` access policy that limits every read to that
patient's compartment, so no address leads to another patient's data. Pages: summary, lab
results with plain-language names, medications, appointments, messages with the care team,
who accessed the record (from the audit log), and a download of the whole record as FHIR
JSON (the Bundle `Patient/$everything` returns, `api/everything.py`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from carebase.api.everything import everything_bundle
from carebase.auth.audit_access import audit_view
from carebase.errors import Forbidden
from carebase.store import audit_records
from carebase.store.sql_store import SqlStore
from carebase.web import fhir_view as fv
from carebase.web import sessions_http as http
from carebase.web.chart import build_chart, observation_row
from carebase.web.forms import read_form
from carebase.web.pages import PORTAL_PREFIX as PORTAL
from carebase.web.pages import WebPage, page
from carebase.web.plain_labels import PLAIN_LABELS
from carebase.web.visit_routes import appointment_row
from carebase.web.vitals import LABORATORY_CATEGORY, LOINC

MAX_MESSAGE = 4000


def _patient_id(web: WebPage) -> str:
    if not web.user.patient:
        raise Forbidden(web._("Your account is not linked to a patient record."))
    return web.user.patient


async def summary(web: WebPage) -> Response:
    """The summary of the patient's record."""
    patient_id = _patient_id(web)
    chart = await run_in_threadpool(build_chart, web.records, patient_id)
    return web.render("portal_summary.html", {"chart": chart})


async def labs(web: WebPage) -> Response:
    """Lab results, newest first, with plain-language names and what the flag means."""
    patient_id = _patient_id(web)
    cursor = web.request.query_params.get("cursor") or None

    def load() -> dict[str, Any]:
        params = [("patient", patient_id), ("category", LABORATORY_CATEGORY), ("_sort", "-date")]
        found = web.records.find("Observation", params, count=50, cursor=cursor)
        rows = []
        for obs in found.resources:
            code = next(iter(fv.codes(obs.get("code"), LOINC)), "")
            rows.append({"row": observation_row(obs), "plain": PLAIN_LABELS.get(code)})
        return {"rows": rows, "next": found.next_cursor}

    return web.render("portal_labs.html", await run_in_threadpool(load))


async def medications(web: WebPage) -> Response:
    """Medications: current ones first, then the rest."""
    patient_id = _patient_id(web)

    def load() -> list[dict[str, Any]]:
        params = [("patient", patient_id), ("_sort", "-authoredon")]
        out = []
        for item in web.records.search("MedicationRequest", params, 100):
            dosage = [
                str(d.get("text")) for d in item.get("dosageInstruction") or [] if d.get("text")
            ]
            out.append(
                {
                    "name": fv.concept_text(item.get("medicationCodeableConcept")),
                    "dosage": "; ".join(dosage),
                    "status": item.get("status") or "",
                    "when": fv.short_date(fv.when(item)),
                }
            )
        out.sort(key=lambda m: m["status"] != "active")
        return out

    return web.render("portal_medications.html", {"items": await run_in_threadpool(load)})


async def appointments(web: WebPage) -> Response:
    """Appointments, soonest first."""
    patient_id = _patient_id(web)

    def load() -> list[dict[str, Any]]:
        params = [("patient", patient_id), ("_sort", "date")]
        return [appointment_row(a) for a in web.records.search("Appointment", params, 50)]

    return web.render("portal_appointments.html", {"items": await run_in_threadpool(load)})


async def messages(web: WebPage) -> Response:
    """GET: the messages with the care team. POST: send one (a Communication)."""
    patient_id = _patient_id(web)
    error = None
    if web.request.method == "POST":
        form = await read_form(web.request)
        http.check_csrf(web.request, form)
        text = form.get("message", "").strip()
        if not text:
            error = web._("Write a message first.")
        elif len(text) > MAX_MESSAGE:
            error = web._("A message is at most {n} characters.", n=MAX_MESSAGE)
        else:
            web.writes("create", "C")
            await run_in_threadpool(_send, web, patient_id, text)
            return RedirectResponse(f"{PORTAL}/messages", 303)

    def load() -> list[dict[str, Any]]:
        params = [("subject", f"Patient/{patient_id}"), ("_sort", "-sent")]
        out = []
        for item in web.records.search("Communication", params, 50):
            sender = item.get("sender") or {}
            text = " ".join(
                str(p.get("contentString"))
                for p in item.get("payload") or []
                if p.get("contentString")
            )
            out.append(
                {
                    "when": fv.short_date(str(item.get("sent") or "")),
                    "text": text,
                    "from_me": sender.get("reference") == f"Patient/{patient_id}",
                    "sender": sender.get("display") or sender.get("reference") or "",
                }
            )
        return out

    items = await run_in_threadpool(load)
    return web.render(
        "portal_messages.html", {"items": items, "error": error}, 400 if error else 200
    )


def _send(web: WebPage, patient_id: str, text: str) -> None:
    patient = web.records.read("Patient", patient_id)
    recipients = [r for r in patient.get("generalPractitioner") or [] if isinstance(r, dict)]
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": f"Patient/{patient_id}"},
        "sender": {"reference": f"Patient/{patient_id}", "display": fv.human_name(patient)},
        "sent": datetime.now(UTC).isoformat(timespec="seconds"),
        "payload": [{"contentString": text}],
    }
    if recipients:
        resource["recipient"] = recipients
    web.records.create("Communication", resource)


async def access_log(web: WebPage) -> Response:
    """Who accessed the record: the audit log's entries about this patient."""
    patient_id = _patient_id(web)
    view = audit_view(web.guard.principal, "s")  # the API's rule: a patient sees their own

    def load() -> list[dict[str, Any]]:
        store = web.records.ctx.store
        if not isinstance(store, SqlStore) or not audit_records.has_log(store):
            return []
        query = audit_records.AuditQuery(required_patient=view.patient or patient_id)
        return [
            {
                "when": datetime.fromtimestamp(r.recorded / 1000, UTC).strftime("%Y-%m-%d %H:%M"),
                "who": r.agent_name or r.agent or "",
                "action": r.action,
                "what": r.interaction,
                "outcome": r.outcome,
            }
            for r in audit_records.search(store, query, limit=100)
        ]

    return web.render("portal_access.html", {"items": await run_in_threadpool(load)})


async def download(web: WebPage) -> Response:
    """The whole record as a FHIR Bundle (JSON): `Patient/$everything`'s Bundle."""
    patient_id = _patient_id(web)
    web.writes("operation", "E")

    def load() -> bytes:
        return orjson.dumps(everything_bundle(web.records.ctx, patient_id))

    body = await run_in_threadpool(load)
    return Response(
        body,
        media_type="application/fhir+json",
        headers={
            "Content-Disposition": 'attachment; filename="my-health-record.json"',
            "Cache-Control": "no-store",
        },
    )


def portal_routes() -> list[Route]:
    """The routes of this module."""
    area = page("portal")
    return [
        Route(PORTAL, area(summary), methods=["GET"]),
        Route(f"{PORTAL}/labs", area(labs), methods=["GET"]),
        Route(f"{PORTAL}/medications", area(medications), methods=["GET"]),
        Route(f"{PORTAL}/appointments", area(appointments), methods=["GET"]),
        Route(f"{PORTAL}/messages", area(messages), methods=["GET", "POST"]),
        Route(f"{PORTAL}/access", area(access_log), methods=["GET"]),
        Route(f"{PORTAL}/download", area(download), methods=["GET"]),
    ]
