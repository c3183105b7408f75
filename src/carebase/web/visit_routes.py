"""Video visits in the browser: the clinician's chart visit page (the telehealth video panel
beside the SOAP note, lab order and prescription forms, which write into the visit's
Encounter), the clinician's upcoming appointments, and the portal's *Join* and visit page.

The panel is the telehealth package's own markup, stylesheet and script
(`telehealth/ui.py`); the forms are the chart's (`documenting_routes.build_resources` and
`write_all`); join tokens come from `telehealth.visit_join.grant`, as over the API. A join is a
POST (it issues a token, audited) answered with a redirect to the page with the room and token
in the URL fragment, where the panel's script finds them; the server never sees them again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from carebase.errors import NotFound
from carebase.telehealth import visit_join
from carebase.telehealth.access import Caller
from carebase.telehealth.encounter import encounter_id
from carebase.telehealth.scheduling import appointment_patient
from carebase.telehealth.service import Telehealth
from carebase.telehealth.ui import PANEL_SCRIPT, PANEL_STYLESHEET, visit_panel
from carebase.web import documenting as doc
from carebase.web import fhir_view as fv
from carebase.web import sessions_http as http
from carebase.web.documenting_routes import FORMS, build_resources, write_all
from carebase.web.forms import read_form
from carebase.web.i18n import N_
from carebase.web.pages import CLINICIAN_PREFIX as APP
from carebase.web.pages import PORTAL_PREFIX as PORTAL
from carebase.web.pages import WebPage, page, principal_of, require
from carebase.web.patient_search import summary
from carebase.web.records import Records, Resource

#: The forms of the visit page (a subset of the chart's documenting forms).
VISIT_FORMS = ("note", "order", "prescribe")
#: What the visit page lists as written into the visit's Encounter: type, search parameter.
_WRITTEN = (
    ("DocumentReference", "encounter", N_("Note")),
    ("ServiceRequest", "encounter", N_("Lab order")),
    ("MedicationRequest", "encounter", N_("Prescription")),
)
FRAGMENT_HEADER = "x-carebase-fragment"
NOT_STARTED = N_(
    "The visit has not started: its encounter begins when you and the patient are both in."
)


def appointment_row(appointment: Resource) -> dict[str, Any]:
    """What the appointment lists show of an Appointment."""
    patient = appointment_patient(appointment)
    name = ""
    for p in appointment.get("participant") or []:
        actor = p.get("actor") or {}
        if actor.get("reference") == f"Patient/{patient}":
            name = str(actor.get("display") or "")
    return {
        "id": appointment.get("id", ""),
        "when": fv.short_date(str(appointment.get("start") or "")),
        "status": appointment.get("status") or "",
        "what": appointment.get("description")
        or fv.concept_text((appointment.get("serviceType") or [{}])[0]),
        "patient": patient,
        "patient_name": name or (f"Patient/{patient}" if patient else ""),
        "joinable": visit_join.is_visit(appointment),
    }


def upcoming(records: Records, params: list[tuple[str, str]], count: int = 20) -> list[Any]:
    """Appointments from the start of today (UTC), soonest first, that are not over."""
    if not records.may("Appointment", "s"):
        return []
    today = datetime.now(UTC).date().isoformat()
    search = [*params, ("date", f"ge{today}"), ("status", "booked,arrived"), ("_sort", "date")]
    return [appointment_row(a) for a in records.search("Appointment", search, count)]


def _service(web: WebPage) -> Telehealth:
    service: Telehealth = web.request.app.state.telehealth
    return service


def _appointment(web: WebPage, patient_id: str, appointment_id: str) -> Resource:
    """The Appointment (read as the user may), which must be this patient's."""
    appointment = web.records.read("Appointment", appointment_id)
    if appointment_patient(appointment) != patient_id:
        raise NotFound(f"Appointment/{appointment_id} is not an appointment of this patient")
    return appointment


def _join(web: WebPage, appointment_id: str) -> dict[str, Any]:
    """A join grant for the signed-in user (audited as the page's interaction)."""
    web.writes("telehealth-token", "E")
    return visit_join.grant(_service(web), Caller(principal_of(web.user)), appointment_id)


def _written(web: WebPage, encounter: str | None) -> list[dict[str, str]]:
    if encounter is None:
        return []
    out = []
    for type_, param, label in _WRITTEN:
        if not web.records.may(type_, "s"):
            continue
        for resource in web.records.search(type_, [(param, f"Encounter/{encounter}")], 20):
            what = resource.get("description") or fv.concept_text(
                resource.get("type")
                or resource.get("code")
                or resource.get("medicationCodeableConcept")
            )
            out.append({"when": fv.short_date(fv.when(resource)), "kind": label, "what": what})
    return sorted(out, key=lambda row: row["when"], reverse=True)


def _visit_values(web: WebPage, patient_id: str, appointment_id: str) -> dict[str, Any]:
    appointment = _appointment(web, patient_id, appointment_id)
    encounter = encounter_id(web.records.ctx.store, appointment_id)
    return {
        "patient": summary(web.records.read("Patient", patient_id)),
        "appointment": appointment_row(appointment),
        "encounter": encounter,
        "written": _written(web, encounter),
    }


def _form_values(pid: str, aid: str) -> dict[str, Any]:
    return {
        "pid": pid,
        "aid": aid,
        "kinds": VISIT_FORMS,
        "titles": {kind: FORMS[kind][2] for kind in VISIT_FORMS},
        "lab_tests": doc.LAB_TESTS,
    }


def _panel(web: WebPage) -> dict[str, str]:
    """The template values of the video panel, in the page's language."""
    return {
        "panel": visit_panel(web._),
        "panel_stylesheet": PANEL_STYLESHEET,
        "panel_script": PANEL_SCRIPT,
    }


async def visit_page(web: WebPage) -> Response:
    """The chart visit page: the video panel and the note and order forms."""
    pid, aid = web.request.path_params["id"], web.request.path_params["aid"]
    values = await run_in_threadpool(_visit_values, web, pid, aid)
    values.update(_form_values(pid, aid))
    values.update(
        {
            "form": {},
            "errors": {},
            "failed": "",
            "saved": web.request.query_params.get("saved", ""),
            **_panel(web),
        }
    )
    return web.render("chart_visit.html", values)


async def join(web: WebPage) -> Response:
    """POST: a join token for the clinician; on to the visit page with it in the fragment."""
    pid, aid = web.request.path_params["id"], web.request.path_params["aid"]
    form = await read_form(web.request)
    http.check_csrf(web.request, form)

    def run() -> dict[str, Any]:
        _appointment(web, pid, aid)
        return _join(web, aid)

    grant = await run_in_threadpool(run)
    target = f"{APP}/patients/{pid}/visits/{aid}#room={aid}&token={grant['token']}"
    return RedirectResponse(target, 303)


def visit_form(kind: str) -> Any:
    """POST a note or order of the visit into its Encounter. With the fragment header (the
    page's script) the answer is the form's section; else back to the visit page."""
    type_ = FORMS[kind][1]

    async def handler(web: WebPage) -> Response:
        pid, aid = web.request.path_params["id"], web.request.path_params["aid"]
        require(web.records.may(type_, "c"), web._("Your role may not do this."))
        form = await read_form(web.request)
        http.check_csrf(web.request, form)
        web.writes("create", "C")

        def run() -> list[Resource]:
            _appointment(web, pid, aid)
            encounter = encounter_id(web.records.ctx.store, aid)
            if encounter is None:
                raise doc.FormErrors({"encounter": NOT_STARTED})
            resources = build_resources(web, kind, pid, {**form, "encounter": encounter})
            write_all(web, type_, resources)
            return resources

        fragment = web.request.headers.get(FRAGMENT_HEADER) == "1"
        values = {**_form_values(pid, aid), "kind": kind, "id_prefix": f"{kind}-"}
        try:
            await run_in_threadpool(run)
        except doc.FormErrors as exc:
            values.update({"form": form, "errors": exc.errors, "saved": "", "failed": kind})
            if fragment:
                return web.render("fragments/visit_form.html", values, 400)
            full = await run_in_threadpool(_visit_values, web, pid, aid)
            values.update(full)
            values.update(_panel(web))
            return web.render("chart_visit.html", values, 400)
        if fragment:
            values.update({"form": {}, "errors": {}, "saved": kind, "failed": ""})
            return web.render("fragments/visit_form.html", values)
        return RedirectResponse(f"{APP}/patients/{pid}/visits/{aid}?saved={kind}", 303)

    handler.__name__ = f"visit_{kind}"
    return handler


async def portal_join(web: WebPage) -> Response:
    """POST (portal): a join token for the patient; on to the visit page with it."""
    aid = web.request.path_params["aid"]
    form = await read_form(web.request)
    http.check_csrf(web.request, form)

    def run() -> dict[str, Any]:
        web.records.read("Appointment", aid)  # 404 unless in the patient's own compartment
        return _join(web, aid)

    grant = await run_in_threadpool(run)
    return RedirectResponse(f"{PORTAL}/visit#room={aid}&token={grant['token']}", 303)


async def portal_visit_page(web: WebPage) -> Response:
    """The patient's video visit page: the panel in the portal's frame and language (the room
    and join token come in the URL fragment from *Join*)."""
    return web.render("portal_visit.html", _panel(web))


def visit_routes() -> list[Route]:
    """The routes of this module."""
    clinician, portal = page("clinician"), page("portal")
    base = f"{APP}/patients/{{id}}/visits/{{aid}}"
    routes = [
        Route(base, clinician(visit_page), methods=["GET"]),
        Route(f"{base}/join", clinician(join), methods=["POST"]),
        Route(f"{PORTAL}/appointments/{{aid}}/join", portal(portal_join), methods=["POST"]),
        Route(f"{PORTAL}/visit", portal(portal_visit_page), methods=["GET"]),
    ]
    routes += [
        Route(f"{base}/{kind}", clinician(visit_form(kind)), methods=["POST"])
        for kind in VISIT_FORMS
    ]
    return routes
