"""Documenting in the chart: start an encounter, record vital signs, add a problem (with the
ICD-10-CM search fragment), resolve a problem (a new version), write a SOAP note, prescribe,
order a lab test. Each form is a page of its own (it works without script); a valid post
writes through the API's interactions and goes back to the chart, an invalid one shows the
form again with every error beside its field and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from carebase.errors import NotFound
from carebase.web import documenting as doc
from carebase.web import fhir_view as fv
from carebase.web import sessions_http as http
from carebase.web.chart import encounter_row
from carebase.web.forms import read_form
from carebase.web.icd10cm import Icd10Cm
from carebase.web.pages import CLINICIAN_PREFIX as APP
from carebase.web.pages import WebPage, page, require
from carebase.web.patient_search import summary
from carebase.web.records import Resource
from carebase.web.vitals import VITALS

#: form name -> (template, resource type written, title)
FORMS: dict[str, tuple[str, str, str]] = {
    "encounter": ("form_encounter.html", "Encounter", "Start an encounter"),
    "vitals": ("form_vitals.html", "Observation", "Record vital signs"),
    "problem": ("form_problem.html", "Condition", "Add a problem"),
    "note": ("form_note.html", "DocumentReference", "Write a SOAP note"),
    "prescribe": ("form_prescribe.html", "MedicationRequest", "Prescribe a medication"),
    "order": ("form_order.html", "ServiceRequest", "Order a lab test"),
}


def _author(web: WebPage) -> doc.Author:
    return doc.Author(web.user.fhir_user, web.user.name or web.user.username)


def _context(web: WebPage, patient_id: str) -> dict[str, Any]:
    """The patient line and open encounters every form shows."""
    patient = web.records.read("Patient", patient_id)
    open_encounters: list[Any] = []
    if web.records.may("Encounter", "s"):
        params = [("patient", patient_id), ("status", "in-progress"), ("_sort", "-date")]
        open_encounters = [encounter_row(e) for e in web.records.search("Encounter", params, 5)]
    return {
        "patient": summary(patient),
        "open_encounters": open_encounters,
        "vitals": VITALS,
        "lab_tests": doc.LAB_TESTS,
        "classes": doc.ENCOUNTER_CLASSES,
    }


def build_resources(
    web: WebPage, kind: str, patient_id: str, form: dict[str, str]
) -> list[Resource]:
    author = _author(web)
    if kind == "encounter":
        return [doc.encounter(patient_id, form, author)]
    if kind == "vitals":
        return doc.vital_signs(patient_id, form, author)
    if kind == "problem":
        title = Icd10Cm(web.records.ctx.store).title(form.get("code", ""))
        return [doc.problem(patient_id, form, author, title)]
    if kind == "note":
        return [doc.soap_note(patient_id, form, author)]
    if kind == "prescribe":
        return [doc.prescription(patient_id, form, author)]
    return [doc.lab_order(patient_id, form, author, doc.LAB_TESTS)]


def write_all(web: WebPage, type_: str, resources: list[Resource]) -> None:
    """Create the resources in one transaction (all or nothing)."""
    from carebase.api import interactions

    ctx = web.records.ctx
    for resource in resources:
        interactions.check(resource, type_)
    with ctx.store.transaction() as tx:
        for resource in resources:
            interactions.create(ctx, tx, type_, resource, validate=False)


def form_page(kind: str) -> Callable[[WebPage], Any]:
    template, type_, title = FORMS[kind]

    async def handler(web: WebPage) -> Response:
        patient_id = web.request.path_params["id"]
        require(web.records.may(type_, "c"), web._("Your role may not do this."))
        values = await run_in_threadpool(_context, web, patient_id)
        values.update({"pid": patient_id, "title": title, "kind": kind})
        if web.request.method == "GET":
            return web.render(template, {**values, "form": {}, "errors": {}})
        form = await read_form(web.request)
        http.check_csrf(web.request, form)
        web.writes("create", "C")
        try:
            resources = await run_in_threadpool(build_resources, web, kind, patient_id, form)
        except doc.FormErrors as exc:
            return web.render(template, {**values, "form": form, "errors": exc.errors}, 400)
        await run_in_threadpool(write_all, web, type_, resources)
        return RedirectResponse(f"{APP}/patients/{patient_id}#{kind}", 303)

    handler.__name__ = f"form_{kind}"
    return handler


async def resolve_problem(web: WebPage) -> Response:
    """Mark a problem resolved: an update, so the problem keeps its earlier version."""
    patient_id, condition_id = web.request.path_params["id"], web.request.path_params["cid"]
    form = await read_form(web.request)
    http.check_csrf(web.request, form)
    web.writes("update", "U")

    def run() -> None:
        condition = web.records.read("Condition", condition_id)
        if fv.reference_id(condition.get("subject"), "Patient") != patient_id:
            raise NotFound(f"Condition/{condition_id} is not a problem of Patient/{patient_id}")
        version = int(form.get("version") or 0)
        web.records.update("Condition", condition_id, doc.resolved(condition), version)

    await run_in_threadpool(run)
    return RedirectResponse(f"{APP}/patients/{patient_id}#problems", 303)


async def icd10_fragment(web: WebPage) -> Response:
    """ICD-10-CM codes matching `q`, as an HTML list for the problem form's script."""
    web.writes("search-type", "R")
    query = web.request.query_params.get("q", "")

    def run() -> list[tuple[str, str]]:
        return Icd10Cm(web.records.ctx.store).search(query)

    return web.render(
        "fragments/icd10_results.html", {"results": await run_in_threadpool(run), "query": query}
    )


def documenting_routes() -> list[Route]:
    """The routes of this module."""
    area = page("clinician")
    routes = [
        Route(f"{APP}/patients/{{id}}/{kind}", area(form_page(kind)), methods=["GET", "POST"])
        for kind in FORMS
    ]
    routes.append(
        Route(
            f"{APP}/patients/{{id}}/problems/{{cid}}/resolve",
            area(resolve_problem),
            methods=["POST"],
        )
    )
    routes.append(Route(f"{APP}/icd10", area(icd10_fragment), methods=["GET"]))
    return routes
