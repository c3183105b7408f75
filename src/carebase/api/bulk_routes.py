"""The Bulk Data HTTP endpoints: `$export` (system, Patient, Group), `$import`, job status,
cancel and file download, with the asynchronous request pattern of FHIR.

A kick-off (which needs `Prefer: respond-async`) checks the parameters and the caller's
scopes, queues a job and answers 202 with the status URL in `Content-Location`. The status
URL answers 202 with `X-Progress` while the job runs, 200 with the manifest when done, the
job's OperationOutcome when it failed; DELETE cancels it. Status, cancel and the files are
the requester's alone (same subject and client; anyone else gets 404). Every call is
guarded and audited like any FHIR interaction (`api.audited`, subtype export or import).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from carebase.api import bulk_export
from carebase.api.access import Guard
from carebase.api.audited import audited
from carebase.api.bulk_import import parse_import
from carebase.api.bulk_params import (
    ExportParameters,
    Level,
    parameters_body,
    parameters_record,
    parse_export,
    principal_record,
)
from carebase.api.bulk_runner import BulkRunner
from carebase.api.negotiation import body_kind, check_response_format, render
from carebase.api.request_body import parse_json, read_body
from carebase.api.responses import fhir_response, guarded
from carebase.api.routes import FhirApi, by_method
from carebase.auth.principal import Principal
from carebase.errors import BadRequest, Forbidden, Gone, NotFound, UnsupportedMediaType
from carebase.fhir import json_io
from carebase.store import bulk_jobs
from carebase.store.bulk_jobs import BulkJob

NDJSON = "application/fhir+ndjson"
_NDJSON_BODIES = ("application/fhir+ndjson", "application/ndjson", "application/x-ndjson")
_FILE_NAME = re.compile(r"[A-Za-z]+\.ndjson")
#: Seconds a client should wait before polling a running job again.
RETRY_AFTER = "2"


class BulkApi:
    """The bulk endpoints of one FhirApi, running jobs with `runner`."""

    def __init__(self, api: FhirApi, runner: BulkRunner) -> None:
        self.api = api
        self.runner = runner

    def routes(self, prefix: str = "/fhir") -> list[Route]:
        """Starlette routes, each guarded and audited."""
        table: list[tuple[str, dict[str, str]]] = [
            ("/$export", {"GET": "export_system", "POST": "export_system"}),
            ("/Patient/$export", {"GET": "export_patient", "POST": "export_patient"}),
            ("/Group/{id}/$export", {"GET": "export_group", "POST": "export_group"}),
            ("/$import", {"POST": "import_kickoff"}),
            ("/$bulk-status/{job}", {"GET": "status", "DELETE": "cancel"}),
            ("/$bulk-file/{job}/{name}", {"GET": "download"}),
        ]
        routes = []
        for path, methods in table:
            handlers = {
                method: audited(guarded(getattr(self, name)), f"bulk_{name}", FhirApi._trail)
                for method, name in methods.items()
            }
            routes.append(Route(prefix + path, by_method(handlers), methods=list(handlers)))
        return routes

    def _guard(self, request: Request) -> Guard:
        """The request's access guard (the one `audited` made for its principal)."""
        return self.api.context(request).guard

    # --- kick-off -----------------------------------------------------------------------------

    async def export_system(self, request: Request) -> Response:
        """[base]/$export: every resource the caller's system scopes allow."""
        return await self._export(request, "system")

    async def export_patient(self, request: Request) -> Response:
        """[base]/Patient/$export: the compartments of every patient (or those named)."""
        return await self._export(request, "patient")

    async def export_group(self, request: Request) -> Response:
        """[base]/Group/[id]/$export: the compartments of the Group's member patients."""
        return await self._export(request, "group")

    async def _export(self, request: Request, level: Level) -> Response:
        _require_async(request)
        pairs = list(request.query_params.multi_items())
        posted = request.method == "POST"
        if posted:
            body_kind(request.headers.get("content-type"))
            raw = await read_body(request, self.api.settings.max_body_bytes)
            pairs += parameters_body(parse_json(raw, self.api.settings.max_json_depth))
        params = parse_export(level, pairs, posted=posted)
        guard = self._guard(request)
        guard.query = request.url.query or None
        group = request.path_params.get("id")
        types, patients = await run_in_threadpool(self._scope, guard, params, group)
        record = {
            "parameters": parameters_record(params),
            "types": types,
            "patients": patients,
        }
        return await self._queue(request, "export", guard.principal, record)

    def _scope(
        self, guard: Guard, params: ExportParameters, group: str | None
    ) -> tuple[list[str], list[str] | None]:
        """(the types to export, the patients or None for all) the caller may export; 403
        for a `_type` it may not, or when it may export nothing at all."""
        policy, explicit = guard.policy, params.types is not None
        allowed: list[str] = []
        for type_ in bulk_export.export_types(params):
            if explicit:
                policy.require(type_, "r")
                policy.require(type_, "s")
            elif policy.visibility(type_, "r") is None or policy.visibility(type_, "s") is None:
                continue
            if params.level == "system" and not _system_grant(guard, type_):
                if explicit:
                    raise Forbidden(
                        f"A system-level export needs system/ scopes; the access token has"
                        f" none for {type_} (e.g. system/{type_}.rs)",
                        location="_type",
                    )
                continue
            allowed.append(type_)
        if not allowed:
            raise Forbidden(
                "The access token allows exporting no resource type; a system-level export"
                " needs system/ scopes such as system/*.rs, a Patient or Group export read"
                " and search scopes for patient compartment types"
            )
        store = self.api.store
        patients = params.patients
        for id_ in patients or []:
            guard.read(store, "Patient", id_)  # 404 for a patient the caller cannot see
            stored = store.read("Patient", id_)
            if stored is None or stored.body is None:
                raise NotFound(f"Patient/{id_} is not known", location="patient")
            guard.saw(stored)
        if group is not None:
            guard.read(store, "Group", group)
            stored = store.read("Group", group)
            if stored is None or stored.body is None:
                raise NotFound(f"Group/{group} is not known", location=f"Group/{group}")
            guard.saw(stored)
            members = bulk_export.group_members(json_io.loads(stored.body))
            chosen = set(patients) if patients is not None else None
            patients = [m for m in members if chosen is None or m in chosen]
        return allowed, patients

    async def import_kickoff(self, request: Request) -> Response:
        """[base]/$import: load NDJSON (files named in Parameters, or the body itself)."""
        _require_async(request)
        settings = self.api.settings
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        raw = await read_body(request, settings.max_body_bytes)
        job_id = uuid.uuid4().hex
        if content_type in _NDJSON_BODIES:
            if not raw.strip():
                raise BadRequest("The NDJSON body is empty", location="body")
            inputs: list[dict[str, Any]] = [
                {
                    "type": None,
                    "url": "request body",
                    "path": await run_in_threadpool(self._saved, job_id, raw),
                }
            ]
        elif content_type in ("application/fhir+json", "application/json"):
            inputs = parse_import(parse_json(raw, settings.max_json_depth), settings)
        else:
            raise UnsupportedMediaType(
                "POST $import takes a Parameters resource (application/fhir+json) or NDJSON"
                " (application/fhir+ndjson)"
            )
        guard = self._guard(request)
        for spec in inputs:
            if spec["type"] is not None:
                _require_import(guard, spec["type"])
        if not any(_may_import(guard, t) for t in self.api.types):
            raise Forbidden("$import needs write scopes such as system/*.cu (or system/*.write)")
        record = {"inputs": inputs}
        return await self._queue(request, "import", guard.principal, record, job_id)

    def _saved(self, job_id: str, raw: bytes) -> str:
        path = self.runner.upload(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)
        return str(path)

    async def _queue(
        self,
        request: Request,
        kind: str,
        principal: Principal,
        record: dict[str, Any],
        job_id: str | None = None,
    ) -> Response:
        base = self.api.base_url(request)
        job_id = job_id or uuid.uuid4().hex
        record = {
            **record,
            "principal": principal_record(principal),
            "base": base,
            "url": str(request.url),
            "transaction_time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        record["transaction_time"] = record["transaction_time"].replace("+00:00", "Z")
        store = self.runner.store
        await run_in_threadpool(
            bulk_jobs.create, store, job_id, kind, principal.subject, principal.client_id, record
        )
        self.runner.wake()
        status_url = f"{base}/$bulk-status/{job_id}"
        return Response(status_code=202, headers={"Content-Location": status_url})

    # --- status, cancel, files ----------------------------------------------------------------

    async def _job(self, request: Request) -> BulkJob:
        """The job of the URL, if it is the caller's (else 404, as for no job at all)."""
        job_id = request.path_params["job"]
        job = await run_in_threadpool(bulk_jobs.get, self.runner.store, job_id)
        principal = self._guard(request).principal
        if (
            job is None
            or job.owner_subject != principal.subject
            or job.owner_client != principal.client_id
        ):
            raise NotFound(f"There is no bulk job {job_id}", location="job")
        self._guard(request).interaction = job.kind  # audited as export or import
        return job

    async def status(self, request: Request) -> Response:
        """GET the status URL: 202 + X-Progress, 200 + manifest, or the job's error."""
        job = await self._job(request)
        if job.status in (bulk_jobs.PENDING, bulk_jobs.RUNNING):
            progress = job.progress or ("queued" if job.status == bulk_jobs.PENDING else "started")
            return Response(
                status_code=202, headers={"X-Progress": progress, "Retry-After": RETRY_AFTER}
            )
        _check_live(job)
        headers = {"Expires": _http_date(job.expires)} if job.expires else {}
        if job.status == bulk_jobs.FAILED:
            assert job.error is not None
            return fhir_response(render(job.error), 500, headers)
        body = render(job.manifest or {})
        return Response(body, 200, headers, media_type="application/json")

    async def cancel(self, request: Request) -> Response:
        """DELETE the status URL: cancel the job and delete its files (202)."""
        job = await self._job(request)
        _check_live(job)
        await run_in_threadpool(self.runner.cancel, job)
        return Response(status_code=202)

    async def download(self, request: Request) -> Response:
        """GET one output or error file of a completed job, streamed from disk."""
        job = await self._job(request)
        name = request.path_params["name"]
        _check_live(job)
        listed = [
            entry["url"].rsplit("/", 1)[-1]
            for key in ("output", "error")
            for entry in (job.manifest or {}).get(key, [])
            if "url" in entry
        ]
        path = self.runner.directory(job.id) / name
        if not _FILE_NAME.fullmatch(name) or name not in listed or not path.is_file():
            raise NotFound(f"Bulk job {job.id} has no file {name}", location="name")
        return FileResponse(path, media_type=NDJSON, filename=None)


def _require_async(request: Request) -> None:
    prefer = request.headers.get("prefer") or ""
    if "respond-async" not in [p.strip().lower() for p in prefer.replace(";", ",").split(",")]:
        raise BadRequest(
            "Bulk Data requests are asynchronous: send the header Prefer: respond-async",
            location="Prefer",
        )
    accept = request.headers.get("accept")
    if not accept:
        raise BadRequest(
            "A Bulk Data kick-off needs the header Accept: application/fhir+json",
            location="Accept",
        )
    check_response_format(accept, None)


def _system_grant(guard: Guard, type_: str) -> bool:
    policy = guard.policy
    if policy.all_powerful:
        return True
    grant = policy.scopes.grant(type_, "s")
    return grant is not None and grant.context == "system"


def _may_import(guard: Guard, type_: str) -> bool:
    for letter in ("c", "u"):
        try:
            visibility = guard.policy.visibility(type_, letter)
        except Forbidden:
            return False
        if visibility is None or not visibility.unrestricted:
            return False
    return True


def _require_import(guard: Guard, type_: str) -> None:
    if not _may_import(guard, type_):
        raise Forbidden(
            f"Importing {type_} needs system/{type_}.cu (or system/*.write): create and"
            " update without restriction",
            location="input.type",
        )


def _check_live(job: BulkJob) -> None:
    """404 for a cancelled job, 410 for one whose files expired."""
    if job.status == bulk_jobs.CANCELLED:
        raise NotFound(f"Bulk job {job.id} was cancelled", location="job")
    if job.status == bulk_jobs.EXPIRED or (job.expires and job.expires < bulk_jobs.now_ms()):
        raise Gone(f"Bulk job {job.id} has expired and its files were deleted", location="job")


def _http_date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
