"""The chart's documents (`/app/patients/{id}/documents`): every DocumentReference of the
patient with its attachments, the upload form (multipart; checked by `documents`), and the
download of an attachment with its own content type. Every request is a page of the
clinician app, so each list, upload and download has its audit entry naming the documents.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from carebase.config import Settings
from carebase.errors import NotFound
from carebase.web import documents as docs
from carebase.web import fhir_view as fv
from carebase.web import sessions_http as http
from carebase.web.documenting import Author, FormErrors
from carebase.web.forms import read_upload
from carebase.web.pages import CLINICIAN_PREFIX as APP
from carebase.web.pages import WebPage, page, require
from carebase.web.patient_search import summary
from carebase.web.records import Resource

PAGE_SIZE = 50
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


def document_rows(web: WebPage, patient_id: str, count: int) -> tuple[list[Any], int | None]:
    """The newest `count` documents of the patient and how many there are."""
    params = [("patient", patient_id), ("_sort", "-date")]
    found = web.records.find("DocumentReference", params, count=count, counted=True)
    return [docs.document_row(d) for d in found.resources], found.total


def _values(web: WebPage, patient_id: str) -> dict[str, Any]:
    rows, total = document_rows(web, patient_id, PAGE_SIZE)
    return {
        "patient": summary(web.records.read("Patient", patient_id)),
        "documents": rows,
        "total": total,
        "pid": patient_id,
        "kinds": docs.DOCUMENT_KINDS,
        "types": docs.DOCUMENT_TYPES,
        "max_mb": docs.MAX_DOCUMENT_BYTES // (1024 * 1024),
        "can_upload": web.records.may("DocumentReference", "c"),
    }


async def documents(web: WebPage) -> Response:
    """GET: the documents and the upload form. POST: upload a document."""
    patient_id = web.request.path_params["id"]
    require(web.records.may("DocumentReference", "s"), web._("Your role may not do this."))
    if web.request.method == "GET":
        values = await run_in_threadpool(_values, web, patient_id)
        return web.render("documents.html", {**values, "form": {}, "errors": {}})
    require(web.records.may("DocumentReference", "c"), web._("Your role may not do this."))
    settings: Settings = web.request.app.state.settings
    form, files = await read_upload(web.request, settings.max_upload_bytes)
    http.check_csrf(web.request, form)
    web.writes("create", "C")
    author = Author(web.user.fhir_user, web.user.name or web.user.username)

    def run() -> None:
        web.records.read("Patient", patient_id)  # 404 unless the user may see the patient
        resource = docs.uploaded_document(patient_id, form, files.get("file"), author)
        web.records.create("DocumentReference", resource)

    try:
        await run_in_threadpool(run)
    except FormErrors as exc:
        values = await run_in_threadpool(_values, web, patient_id)
        return web.render("documents.html", {**values, "form": form, "errors": exc.errors}, 400)
    return RedirectResponse(f"{APP}/patients/{patient_id}/documents", 303)


async def download(web: WebPage) -> Response:
    """One attachment of a document, with its content type, as a download."""
    patient_id, document_id = web.request.path_params["id"], web.request.path_params["did"]
    index = web.request.path_params["n"]

    def load() -> tuple[bytes, str, str]:
        document: Resource = web.records.read("DocumentReference", document_id)
        if fv.reference_id(document.get("subject"), "Patient") != patient_id:
            raise NotFound(f"DocumentReference/{document_id} is not a document of this patient")
        return docs.attachment_bytes(document, index)

    raw, content_type, title = await run_in_threadpool(load)
    name = _UNSAFE_NAME.sub("_", title).strip() or "document"
    headers = {
        "Content-Disposition": f'attachment; filename="{name[:100]}"',
        "Cache-Control": "no-store",
    }
    return Response(raw, media_type=content_type, headers=headers)


def document_routes() -> list[Route]:
    """The routes of this module."""
    area = page("clinician")
    base = f"{APP}/patients/{{id}}/documents"
    return [
        Route(base, area(documents), methods=["GET", "POST"]),
        Route(f"{base}/{{did}}/content/{{n:int}}", area(download), methods=["GET"]),
    ]
