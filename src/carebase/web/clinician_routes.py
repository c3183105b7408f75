"""The clinician app under `/app`: home (search and recent patients), the as-you-type
search fragment, patient registration with duplicate detection, the chart and the
encounters timeline."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from carebase.store import audit_records
from carebase.store.sql_store import SqlStore
from carebase.web import documenting
from carebase.web import sessions_http as http
from carebase.web.chart import build_chart, encounter_row
from carebase.web.document_routes import document_rows
from carebase.web.forms import read_form
from carebase.web.pages import CLINICIAN_PREFIX as APP
from carebase.web.pages import WebPage, page, require
from carebase.web.patient_search import duplicates, find_patients, summary
from carebase.web.records import Records, stored_json
from carebase.web.resource_history import versions
from carebase.web.visit_routes import upcoming

RECENT = 10


async def home(web: WebPage) -> Response:
    """Search box and the user's recent patients."""
    web.writes("search-type", "R")
    query = web.request.query_params.get("q", "").strip()
    records = web.records
    results = await run_in_threadpool(find_patients, records, query) if query else []
    recent = await run_in_threadpool(recent_patients, web) if not query else []
    practitioner = web.user.fhir_user or ""
    appointments = None
    if not query and practitioner.startswith("Practitioner/"):
        params = [("practitioner", practitioner)]
        appointments = await run_in_threadpool(upcoming, web.records, params)
    return web.render(
        "app_home.html",
        {
            "query": query,
            "results": [summary(p) for p in results],
            "recent": recent,
            "appointments": appointments,
        },
    )


async def search_fragment(web: WebPage) -> Response:
    """The result list alone, for the as-you-type script."""
    web.writes("search-type", "R")
    query = web.request.query_params.get("q", "").strip()
    results = await run_in_threadpool(find_patients, web.records, query) if query else []
    return web.render(
        "fragments/patient_results.html", {"query": query, "results": [summary(p) for p in results]}
    )


def recent_patients(web: WebPage) -> list[dict[str, Any]]:
    """The patients whose charts this user opened last (from the audit log, newest first)."""
    store = web.records.ctx.store
    if not isinstance(store, SqlStore) or not audit_records.has_log(store):
        return []
    query = audit_records.AuditQuery(agents=(web.user.username,), actions=("R",))
    ids: list[str] = []
    for record in audit_records.search(store, query, limit=200):
        if record.interaction != "read" or not record.entities:
            continue
        first = record.entities[0]
        if first.startswith("Patient/") and first[8:] not in ids:
            ids.append(first[8:])
        if len(ids) == RECENT:
            break
    out = []
    for patient_id in ids:
        try:
            out.append(summary(web.records.read("Patient", patient_id)))
        except Exception:
            continue
    return out


async def chart(web: WebPage) -> Response:
    """The patient chart."""
    patient_id = web.request.path_params["id"]
    view = await run_in_threadpool(build_chart, web.records, patient_id)
    changes = await run_in_threadpool(recent_changes, web, patient_id)
    documents, documents_total = None, None
    if web.records.may("DocumentReference", "s"):
        documents, documents_total = await run_in_threadpool(document_rows, web, patient_id, 10)
    appointments = None
    if web.records.may("Appointment", "s"):
        params = [("patient", patient_id)]
        appointments = await run_in_threadpool(upcoming, web.records, params)
    return web.render(
        "chart.html",
        {
            "chart": view,
            "pid": patient_id,
            "changes": changes,
            "can": _abilities(web.records),
            "appointments": appointments,
            "documents": documents,
            "documents_total": documents_total,
        },
    )


def _abilities(records: Records) -> dict[str, bool]:
    return {
        kind: records.may(type_, "c")
        for kind, type_ in (
            ("encounter", "Encounter"),
            ("vitals", "Observation"),
            ("problem", "Condition"),
            ("note", "DocumentReference"),
            ("prescribe", "MedicationRequest"),
            ("order", "ServiceRequest"),
        )
    } | {"risk": records.may("Observation", "s") and records.may("Condition", "s")}


def recent_changes(web: WebPage, patient_id: str, limit: int = 15) -> list[dict[str, Any]]:
    """Who changed what in this patient's record, newest first (the audit log's creates,
    updates and deletes about the patient; administrators and the patient see all of it,
    through the audit API, too)."""
    store = web.records.ctx.store
    if not isinstance(store, SqlStore) or not audit_records.has_log(store):
        return []
    query = audit_records.AuditQuery(patients=(patient_id,), actions=("C", "U", "D"))
    out = []
    for record in audit_records.search(store, query, limit=limit):
        if record.outcome != "0":
            continue
        out.append(
            {
                "when": _millis(record.recorded),
                "who": record.agent_name or record.agent or "",
                "what": record.interaction,
                "entities": [e for e in record.entities if not e.startswith("Patient/")]
                or list(record.entities),
            }
        )
    return out


def _millis(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


async def history(web: WebPage) -> Response:
    """The versions of one resource of the record: who changed what, when."""
    params = web.request.path_params
    patient_id, type_, id_ = params["id"], params["type"], params["rid"]

    def load() -> dict[str, Any]:
        rows = versions(web.records, patient_id, type_, id_)
        return {"patient": summary(web.records.read("Patient", patient_id)), "versions": rows}

    values = await run_in_threadpool(load)
    return web.render("history.html", {**values, "pid": patient_id, "reference": f"{type_}/{id_}"})


async def encounters(web: WebPage) -> Response:
    """The whole encounters timeline, a page at a time."""
    patient_id = web.request.path_params["id"]
    cursor = web.request.query_params.get("cursor") or None

    def load() -> dict[str, Any]:
        patient = web.records.read("Patient", patient_id)
        params = [("patient", patient_id), ("_sort", "-date")]
        found = web.records.find("Encounter", params, count=50, cursor=cursor, counted=True)
        return {
            "patient": summary(patient),
            "rows": [encounter_row(e) for e in found.resources],
            "total": found.total,
            "next": found.next_cursor,
        }

    values = await run_in_threadpool(load)
    return web.render("encounters.html", {**values, "pid": patient_id})


async def register(web: WebPage) -> Response:
    """GET: the registration form. POST: register, unless a patient with the same name and
    birth date exists and the user has not confirmed it is someone else."""
    require(web.records.may("Patient", "c"), web._("Your role may not register patients."))
    if web.request.method == "GET":
        return web.render("register.html", {"form": {}, "errors": {}, "duplicates": []})
    form = await read_form(web.request)
    http.check_csrf(web.request, form)
    web.writes("create", "C")
    organization = web.user.organization
    mrn = f"{secrets.randbelow(10**8):08d}"
    try:
        resource = documenting.new_patient(form, organization, mrn)
    except documenting.FormErrors as exc:
        return web.render(
            "register.html", {"form": form, "errors": exc.errors, "duplicates": []}, 400
        )
    if form.get("confirm_new") != "yes":
        same = await run_in_threadpool(
            duplicates,
            web.records,
            form["family"].strip(),
            form["given"].strip(),
            form["birth_date"].strip(),
        )
        if same:
            web.writes("search-type", "R")
            return web.render(
                "register.html",
                {"form": form, "errors": {}, "duplicates": [summary(p) for p in same]},
                409,
            )
    stored = await run_in_threadpool(web.records.create, "Patient", resource)
    return RedirectResponse(f"{APP}/patients/{stored_json(stored)['id']}", 303)


def clinician_routes() -> list[Route]:
    """The routes of this module."""
    area = page("clinician")
    return [
        Route(APP, area(home), methods=["GET"]),
        Route(f"{APP}/search", area(search_fragment), methods=["GET"]),
        Route(f"{APP}/patients/new", area(register), methods=["GET", "POST"]),
        Route(f"{APP}/patients/{{id}}", area(chart), methods=["GET"]),
        Route(f"{APP}/patients/{{id}}/encounters", area(encounters), methods=["GET"]),
        Route(f"{APP}/patients/{{id}}/history/{{type}}/{{rid}}", area(history), methods=["GET"]),
    ]
