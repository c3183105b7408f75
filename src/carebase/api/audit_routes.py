"""The FHIR API of the audit log: `AuditEvent` search and read, served from the audit tables.

The log is append-only: writes to AuditEvent are refused with 405. Who may see what is
decided by `auth.audit_access`; reading the log is itself recorded in the log. These routes
are mounted before the generic FHIR routes, which would otherwise serve AuditEvent from the
resource table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from carebase.api import listing
from carebase.api.negotiation import render
from carebase.api.request_body import read_body
from carebase.api.responses import fhir_response, guarded
from carebase.auth.audit_access import AUDIT_TYPE, AuditView, audit_view
from carebase.auth.audit_detail import event_bytes
from carebase.auth.audit_entry import AuditEntry, AuditTrail
from carebase.auth.principal import Principal
from carebase.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    Unsupported,
    UnsupportedMediaType,
)
from carebase.store import audit_records
from carebase.store.audit_records import AuditQuery, AuditRecord
from carebase.store.search_values import split_values, unescape
from carebase.store.sql_store import SqlStore

if TYPE_CHECKING:
    from carebase.api.routes import FhirApi

#: Search parameters of the audit log; each takes comma-separated alternatives.
SEARCH_PARAMS = ("patient", "agent", "date", "action", "outcome", "subtype", "entity")
_RESULT_PARAMS = frozenset({"_count", "_cursor", "_format", "_pretty"})
_ACTIONS = frozenset("CRUDE")
_OUTCOMES = frozenset({"0", "4", "8", "12"})


def _principal(request: Request) -> Principal | None:
    principal = request.scope.get("carebase.principal")
    return principal if isinstance(principal, Principal) else None


def _relative(value: str, expected_type: str | None = None) -> str:
    """A reference search value as `Type/id` (or a bare id when `expected_type` is given)."""
    parts = value.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2][:1].isupper():
        type_, id_ = parts[-2], parts[-1]
        if expected_type is not None:
            return id_ if type_ == expected_type else f"{type_}/{id_}"
        return f"{type_}/{id_}"
    return parts[-1] if expected_type is not None else value


def parse_query(params: list[tuple[str, str]], view: AuditView) -> tuple[AuditQuery, str | None]:
    """The store query and the paging cursor of AuditEvent search parameters; 400 for an
    unknown parameter or a malformed value. A patient's view adds their patient filter."""
    found: dict[str, list[str]] = {name: [] for name in SEARCH_PARAMS}
    dates: list[str] = []
    cursor: str | None = None
    for name, raw in params:
        if name in _RESULT_PARAMS:
            if name == "_cursor":
                cursor = raw
            continue
        if name not in found:
            raise BadRequest(
                f"Unknown search parameter {name!r} for AuditEvent; supported: "
                f"{', '.join(SEARCH_PARAMS)}, _count",
                location=name,
            )
        values = [unescape(v) for v in split_values(raw) if v != ""]
        if not values:
            raise BadRequest(f"Search parameter {name!r} has no value", location=name)
        if name == "date":
            if len(values) > 1:
                raise BadRequest(
                    "date takes one value per parameter (repeat it: date=ge...&date=le...)",
                    location="date",
                )
            dates.append(values[0])
        else:
            found[name].extend(values)
    for name, allowed in (("action", _ACTIONS), ("outcome", _OUTCOMES)):
        for value in found[name]:
            if value not in allowed:
                raise BadRequest(
                    f"{name}={value!r} is not valid; use one of {', '.join(sorted(allowed))}",
                    location=name,
                )
    if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) < 19):
        raise BadRequest(
            f"Paging cursor {cursor!r} is not valid; follow the links the server returned",
            location="_cursor",
        )
    query = AuditQuery(
        patients=tuple(_relative(v, "Patient") for v in found["patient"]),
        agents=tuple(_relative(v) for v in found["agent"]),
        dates=tuple(dates),
        actions=tuple(found["action"]),
        outcomes=tuple(found["outcome"]),
        subtypes=tuple(v.rsplit("|", 1)[-1] for v in found["subtype"]),
        entities=tuple(_relative(v) for v in found["entity"]),
        required_patient=view.patient,
    )
    return query, cursor


class AuditApi:
    """The AuditEvent endpoints over the store the FHIR API serves."""

    def __init__(self, fhir: FhirApi) -> None:
        self.fhir = fhir

    def routes(self, prefix: str = "/fhir") -> list[Route]:
        """Routes for Starlette; mount them before the generic FHIR routes."""
        writes = ["POST", "PUT", "DELETE", "PATCH"]
        base = f"{prefix}/{AUDIT_TYPE}"
        return [
            Route(base, self._dispatch(self.search), methods=["GET", *writes]),
            Route(f"{base}/_search", guarded(self.search_post), methods=["POST"]),
            Route(f"{base}/_history", guarded(self.history), methods=["GET"]),
            Route(f"{base}/{{id}}/_history", guarded(self.history), methods=["GET"]),
            Route(f"{base}/{{id}}/_history/{{vid}}", guarded(self.read), methods=["GET"]),
            Route(f"{base}/{{id}}", self._dispatch(self.read), methods=["GET", *writes]),
        ]

    def _dispatch(
        self, get: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if request.method in ("GET", "HEAD"):
                return await get(request)
            raise MethodNotAllowed(
                f"{request.method} is not allowed on {request.url.path}: the audit log is "
                "append-only; carebase writes AuditEvents itself",
                headers={"Allow": "GET"},
            )

        return guarded(endpoint)

    @property
    def store(self) -> SqlStore:
        store = self.fhir.store
        assert isinstance(store, SqlStore), "the audit log needs a SQL store"
        return store

    def _audit(self, request: Request, entry_of: Callable[..., AuditEntry]) -> None:
        trail: AuditTrail | None = getattr(request.app.state, "audit_trail", None)
        if trail is not None:
            trail.record(entry_of(
                principal=_principal(request),
                source_ip=request.client.host if request.client else None,
                user_agent=request.headers.get("user-agent"),
            ))  # fmt: skip

    async def search(self, request: Request) -> Response:
        """GET [base]/AuditEvent?params: newest first, paged by cursor."""
        return await self._search(request, list(request.query_params.multi_items()))

    async def search_post(self, request: Request) -> Response:
        """POST [base]/AuditEvent/_search with a form body."""
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise UnsupportedMediaType(
                "POST _search takes an application/x-www-form-urlencoded body"
            )
        raw = await read_body(request, self.fhir.settings.max_body_bytes)
        try:
            form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError as exc:
            raise BadRequest("The form body is not UTF-8") from exc
        return await self._search(request, list(request.query_params.multi_items()) + form)

    async def _search(self, request: Request, params: list[tuple[str, str]]) -> Response:
        pretty = self.fhir._negotiate(request)
        view = audit_view(_principal(request), "s")
        query, cursor = parse_query(params, view)
        ctx = self.fhir.context(request)
        count = listing.page_size(ctx, dict(params).get("_count"))
        before = int(cursor) if cursor is not None else None
        records = await run_in_threadpool(
            audit_records.search, self.store, query, before=before, limit=count + 1
        )
        next_cursor = str(records[count - 1].seq) if len(records) > count and count else None
        shown = records[:count]
        self._audit(request, lambda **who: AuditEntry(
            "search-type", "R", patients=(view.patient,) if view.patient else (),
            query=urlencode(params), description="audit log search", **who,
        ))  # fmt: skip
        url = f"{ctx.base}/{AUDIT_TYPE}"
        visible = [(k, v) for k, v in params if k not in ("_format", "_pretty")]
        links = listing.paging_links(url, visible, cursor, next_cursor, None)
        entries: list[dict[str, object]] = [_entry(ctx.base, r) for r in shown]
        bundle = listing.result_bundle("searchset", None, links, entries)
        return fhir_response(render(bundle, pretty=pretty))

    async def read(self, request: Request) -> Response:
        """GET [base]/AuditEvent/id (and its one version, `/_history/1`)."""
        self.fhir._negotiate(request)
        view = audit_view(_principal(request), "r")
        id_ = request.path_params["id"]
        vid = request.path_params.get("vid")
        record = await run_in_threadpool(audit_records.by_id, self.store, id_)
        if record is None or (view.patient and view.patient not in record.patients):
            # the same answer for "not yours" as for "not there"
            raise NotFound(f"AuditEvent/{id_} is not known", location=f"AuditEvent/{id_}")
        if vid is not None and vid != "1":
            raise NotFound(f"AuditEvent/{id_} has one version, 1, not {vid!r}")
        self._audit(request, lambda **who: AuditEntry(
            "read" if vid is None else "vread", "R", entities=(f"AuditEvent/{id_}",),
            patients=(view.patient,) if view.patient else (), description="audit log read",
            **who,
        ))  # fmt: skip
        return fhir_response(event_bytes(record), 200, {"ETag": 'W/"1"'})

    async def history(self, request: Request) -> Response:
        """AuditEvent has no history: every event has exactly one version."""
        raise Unsupported(
            "AuditEvent history is not supported: an audit event never changes (one version); "
            "search [base]/AuditEvent instead"
        )


def _entry(base: str, record: AuditRecord) -> dict[str, object]:
    return {
        "fullUrl": f"{base}/{AUDIT_TYPE}/{record.id}",
        "resource": orjson.Fragment(event_bytes(record)),
        "search": {"mode": "match"},
    }
