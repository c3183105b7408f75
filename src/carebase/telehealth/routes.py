"""The telehealth HTTP and WebSocket routes (mounted by `api.app`).

JSON endpoints under `/telehealth/api/` need a bearer access token (the app's authentication
middleware puts the caller at `scope["carebase.principal"]`); each is audited like a FHIR
interaction, refusals included, and errors are OperationOutcomes naming what and where:

    POST /telehealth/api/schedules                      publish a weekly pattern (Schedule + Slots)
    GET  /telehealth/api/slots?practitioner=&start=&end=&visit-type=&_count=   free slots (Bundle)
    POST /telehealth/api/appointments                   book {slot, patient, visitType, reason}
    POST /telehealth/api/appointments/{id}/cancel       {reason}
    POST /telehealth/api/appointments/{id}/reschedule   {slot, visitType}
    POST /telehealth/api/appointments/{id}/join         a room join token for the caller
    POST /telehealth/api/appointments/{id}/invite       a guest/interpreter join token (clinicians)
    GET  /telehealth/api/appointments/{id}/room         the waiting room as the caller may see it
    POST /telehealth/api/messages                       a message between visits (Communication)
    GET  /telehealth/api/messages?patient=              a patient's messages, newest first
    WS   /telehealth/ws/{appointment id}                signalling (`signalling.Hub`)
    GET  /telehealth/visit                              the browser visit page
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from carebase.auth.audit_entry import AuditAction, AuditTrail
from carebase.auth.principal import Principal
from carebase.errors import (
    BadRequest,
    CarebaseError,
    Forbidden,
    Unauthorized,
    Unavailable,
)
from carebase.fhir.operation_outcome import error_outcome, from_error
from carebase.store.sql_store import SqlStore
from carebase.telehealth import messages, scheduling, visit_join
from carebase.telehealth.access import Caller, record
from carebase.telehealth.availability import parse_instant, parse_pattern
from carebase.telehealth.room_store import RoomStore
from carebase.telehealth.service import Telehealth
from carebase.telehealth.signalling import Hub
from carebase.telehealth.ui import STATIC_DIR, visit_page

#: Where the authentication middleware puts the verified caller (`api.authentication`).
PRINCIPAL_KEY = "carebase.principal"
API = "/telehealth/api"
FHIR_JSON = "application/fhir+json; charset=utf-8"
MAX_BODY = 8 * 1024 * 1024
Handler = Callable[[Request, Caller], Awaitable[tuple[int, Any]]]
#: A page's language for a request: its `lang` attribute and the function translating a text
PageLanguage = Callable[[Request], tuple[str, Callable[[str], str]]]


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type=FHIR_JSON)


def _error(exc: CarebaseError) -> Response:
    return Response(orjson.dumps(from_error(exc)), exc.status, exc.headers, media_type=FHIR_JSON)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadRequest(f"The body holds at most {MAX_BODY} bytes", location="$")
    try:
        value = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The body is not JSON: {exc}", location="$") from exc
    if not isinstance(value, dict):
        raise BadRequest("The body must be a JSON object", location="$")
    return value


class TelehealthRoutes:
    """The routes over one `Telehealth` service."""

    def __init__(
        self,
        service: Telehealth,
        trail: Callable[[], AuditTrail | None],
        language: PageLanguage | None = None,
    ) -> None:
        self.service = service
        self._trail = trail
        #: the visit page's language for a request (None: English)
        self._language = language

    def routes(self) -> list[BaseRoute]:
        table: list[tuple[str, str, Handler, str, AuditAction]] = [
            ("/schedules", "POST", self.publish, "create", "C"),
            ("/slots", "GET", self.slots, "search-type", "R"),
            ("/appointments", "POST", self.book, "create", "C"),
            ("/appointments/{id}/cancel", "POST", self.cancel, "update", "U"),
            ("/appointments/{id}/reschedule", "POST", self.reschedule, "update", "U"),
            ("/appointments/{id}/join", "POST", self.join, "telehealth-token", "E"),
            ("/appointments/{id}/invite", "POST", self.invite, "telehealth-invite", "E"),
            ("/appointments/{id}/room", "GET", self.room, "read", "R"),
            ("/messages", "POST", self.send_message, "create", "C"),
            ("/messages", "GET", self.list_messages, "search-type", "R"),
        ]
        by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
        for path, method, handler, interaction, action in table:
            by_path.setdefault(API + path, {})[method] = self._endpoint(
                handler, interaction, action
            )
        routes: list[BaseRoute] = [
            Route(path, _by_method(handlers), methods=list(handlers))
            for path, handlers in by_path.items()
        ]
        routes.append(WebSocketRoute("/telehealth/ws/{room}", self.websocket))
        routes.append(Route("/telehealth/visit", self.page, methods=["GET"]))
        routes.append(
            Mount("/telehealth/static", StaticFiles(directory=STATIC_DIR), name="telehealth-static")
        )
        return routes

    # --- plumbing ----------------------------------------------------------------------------
    def _endpoint(
        self, handler: Handler, interaction: str, action: AuditAction
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            principal: Principal | None = request.scope.get(PRINCIPAL_KEY)
            if principal is None:
                return _error(Unauthorized("This endpoint needs an access token"))
            caller = Caller(principal)
            try:
                status, body = await handler(request, caller)
                response = _json(body, status)
            except CarebaseError as exc:
                response = _error(exc)
            except Exception:
                import logging

                logging.getLogger("carebase.telehealth").exception(
                    "telehealth %s failed", request.url.path
                )
                response = Response(
                    orjson.dumps(
                        error_outcome("Internal server error; the server log has the details")
                    ),
                    500,
                    media_type=FHIR_JSON,
                )
            trail = self._trail()
            status_code = response.status_code
            try:
                if trail is None:
                    raise Unavailable("The audit trail is not running; try again shortly")
                record(
                    trail,
                    principal,
                    interaction,
                    action,
                    outcome="0" if status_code < 400 else ("4" if status_code < 500 else "8"),
                    entities=caller.entities,
                    patients=caller.patients,
                    description=f"{request.method} {request.url.path} -> {status_code}",
                    source_ip=request.client.host if request.client else None,
                    query=request.url.query or None,
                )
            except Unavailable as exc:
                return _error(exc)
            return response

        return run

    async def page(self, request: Request) -> Response:
        if self._language is None:
            return HTMLResponse(visit_page())
        lang, translate = self._language(request)
        return HTMLResponse(visit_page(lang, translate), headers={"Content-Language": lang})

    async def websocket(self, ws: WebSocket) -> None:
        hub: Hub = self.service.hub
        room = ws.path_params["room"]
        await hub.serve(ws, room)

    # --- scheduling ----------------------------------------------------------------------------
    async def publish(self, request: Request, caller: Caller) -> tuple[int, Any]:
        pattern = parse_pattern(await _body(request))
        done = await run_in_threadpool(scheduling.publish, self.service.store, caller, pattern)
        return 201, {"schedule": done.schedule, "slots": done.slot_count}

    async def slots(self, request: Request, caller: Caller) -> tuple[int, Any]:
        params = request.query_params
        now = datetime.now(UTC)
        start = parse_instant(params["start"], "start") if "start" in params else now
        end = parse_instant(params["end"], "end") if "end" in params else start + timedelta(days=14)
        try:
            count = int(params.get("_count", "50"))
        except ValueError as exc:
            raise BadRequest("_count must be a whole number", location="_count") from exc
        found = await run_in_threadpool(
            lambda: scheduling.free_slots(
                self.service.store,
                caller,
                practitioner=params.get("practitioner"),
                start=max(start, now),
                end=end,
                visit_type=params.get("visit-type"),
                count=count,
            )
        )
        return 200, {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [{"resource": s, "search": {"mode": "match"}} for s in found],
        }

    async def book(self, request: Request, caller: Caller) -> tuple[int, Any]:
        body = await _body(request)
        slot_id = scheduling.reference_id(body.get("slot"), "Slot", "slot")
        patient_id = scheduling.reference_id(body.get("patient"), "Patient", "patient")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise BadRequest("reason must be text", location="reason")
        booked = await run_in_threadpool(
            lambda: scheduling.book(
                self.service.store,
                caller,
                slot_id=slot_id,
                patient_id=patient_id,
                visit_type=body.get("visitType"),
                reason=reason,
            )
        )
        return 201, booked

    async def cancel(self, request: Request, caller: Caller) -> tuple[int, Any]:
        body = await _body(request)
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise BadRequest("reason must be text", location="reason")
        appointment_id = _id(request)
        return 200, await run_in_threadpool(
            scheduling.cancel, self.service.store, caller, appointment_id, reason
        )

    async def reschedule(self, request: Request, caller: Caller) -> tuple[int, Any]:
        body = await _body(request)
        slot_id = scheduling.reference_id(body.get("slot"), "Slot", "slot")
        appointment_id = _id(request)
        moved = await run_in_threadpool(
            scheduling.reschedule,
            self.service.store,
            caller,
            appointment_id,
            slot_id,
            body.get("visitType"),
        )
        return 200, moved

    # --- visits ------------------------------------------------------------------------------
    def _visit(self, caller: Caller, appointment_id: str) -> dict[str, Any]:
        return visit_join.visit(self.service.store, caller, appointment_id)

    async def join(self, request: Request, caller: Caller) -> tuple[int, Any]:
        appointment_id = _id(request)
        return 200, await run_in_threadpool(visit_join.grant, self.service, caller, appointment_id)

    async def invite(self, request: Request, caller: Caller) -> tuple[int, Any]:
        body = await _body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise BadRequest(
                "name (1-100 characters) names the guest for the others", location="name"
            )
        kind = body.get("kind", "guest")
        if kind not in ("guest", "interpreter"):
            raise BadRequest("kind is guest or interpreter", location="kind")
        appointment_id = _id(request)
        appointment = await run_in_threadpool(self._visit, caller, appointment_id)
        role, _ = visit_join.room_role(caller, appointment)
        if role != "clinician":
            raise Forbidden("Only the clinician invites guests", location="Appointment")
        end = parse_instant(str(appointment.get("end")), "Appointment.end")
        ttl = int(min(max((end - datetime.now(UTC)).total_seconds() + 3600, 600), 7 * 86400))
        pid = f"guest-{uuid.uuid4().hex[:12]}"
        token, expires = self.service.tokens.issue(
            room=appointment_id,
            role="guest",
            participant=pid,
            display=f"{name.strip()} ({kind})",
            subject=caller.principal.subject,
            ttl=ttl,
            kind=kind,
            on_behalf_of=caller.principal.fhir_user or caller.principal.subject,
        )
        return 200, visit_join.room_grant(
            self.service, appointment_id, token, expires, "guest", pid
        )

    async def room(self, request: Request, caller: Caller) -> tuple[int, Any]:
        appointment_id = _id(request)
        appointment = await run_in_threadpool(self._visit, caller, appointment_id)
        _, pid = visit_join.room_role(caller, appointment)
        store = self.service.store
        assert isinstance(store, SqlStore)
        state = await run_in_threadpool(RoomStore(store).load, appointment_id)
        if state is None:
            return 200, {
                "id": appointment_id,
                "ended": False,
                "clinicianPresent": False,
                "participants": [],
            }
        return 200, Hub.view(state, pid)

    # --- messages between visits ---------------------------------------------------------------
    async def send_message(self, request: Request, caller: Caller) -> tuple[int, Any]:
        body = await _body(request)
        settings = self.service.settings
        text = body.get("text")
        attachment = None
        if body.get("attachment") is not None:
            attachment = messages.check_attachment(
                body["attachment"],
                max_bytes=settings.max_attachment_bytes,
                types=settings.attachment_types,
            )
            if text is not None:
                messages.check_text(text, "text")
        else:
            messages.check_text(text, "text")
        patient_id = scheduling.reference_id(body.get("patient"), "Patient", "patient")
        recipient = body.get("recipient")
        if not isinstance(recipient, str) or not recipient.startswith(
            ("Practitioner/", "Patient/")
        ):
            raise BadRequest(
                "recipient must reference a Practitioner or the Patient", location="recipient"
            )
        principal = caller.principal
        sender = (
            {"reference": principal.fhir_user}
            if principal.fhir_user
            else {"display": principal.subject}
        )
        resource = messages.communication(
            category="message",
            patient=patient_id,
            sender=sender,
            recipients=[recipient],
            text=text if isinstance(text, str) else None,
            attachment=attachment,
            in_response_to=body.get("inResponseTo")
            if isinstance(body.get("inResponseTo"), str)
            else None,
        )

        def write() -> dict[str, Any]:
            store = self.service.store
            with store.transaction() as tx:
                caller.read(tx, "Patient", patient_id)
                caller.require("Communication", "c")
                stored = tx.create("Communication", resource)
                caller.written(tx, stored, "c")
                return scheduling.body_of(stored)

        return 201, await run_in_threadpool(write)

    async def list_messages(self, request: Request, caller: Caller) -> tuple[int, Any]:
        patient_id = scheduling.reference_id(
            request.query_params.get("patient"), "Patient", "patient"
        )
        from carebase.telehealth.codes import CATEGORY_SYSTEM

        def search() -> list[dict[str, Any]]:
            caller.require("Communication", "s")
            page = self.service.store.search(
                "Communication",
                [
                    ("patient", f"Patient/{patient_id}"),
                    ("category", f"{CATEGORY_SYSTEM}|message,{CATEGORY_SYSTEM}|visit-chat"),
                    ("_sort", "-sent"),
                ],
                count=100,
                total="none",
                restriction=caller.policy.restriction("s"),
            )
            for entry in page.entries:
                caller.saw(entry)
            return [scheduling.body_of(s) for s in page.entries]

        found = await run_in_threadpool(search)
        return 200, {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [{"resource": r} for r in found],
        }


def _id(request: Request) -> str:
    value = str(request.path_params["id"])
    if not value or len(value) > 64 or not all(c.isalnum() or c in "-." for c in value):
        raise BadRequest(f"{value[:70]!r} is not a resource id", location="id")
    return value


def _by_method(
    handlers: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    async def dispatch(request: Request) -> Response:
        return await handlers[request.method](request)

    return dispatch
