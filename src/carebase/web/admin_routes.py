"""Administration under `/app/admin` (administrators only): users and roles (add, disable,
enable, unlock), the audit log viewer with filters, and the registered models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from carebase.auth.audit_access import audit_view
from carebase.auth.principal import ROLES
from carebase.errors import BadRequest, CarebaseError
from carebase.store import audit_records
from carebase.store.sql_store import SqlStore
from carebase.web import sessions_http as http
from carebase.web.error_text import shown_error
from carebase.web.forms import read_form
from carebase.web.pages import CLINICIAN_PREFIX as APP
from carebase.web.pages import WebPage, page

ADMIN = f"{APP}/admin"
AUDIT_PAGE = 50
_FILTERS = ("patient", "agent", "action", "outcome", "entity", "from", "to")


async def users(web: WebPage) -> Response:
    """GET: the users. POST: add one, or disable, enable or unlock one."""
    directory = http.user_directory(web.request)
    error = None
    if web.request.method == "POST":
        form = await read_form(web.request)
        http.check_csrf(web.request, form)
        web.writes("update", "U")
        try:
            await run_in_threadpool(_change_user, directory, form)
            return RedirectResponse(f"{ADMIN}/users", 303)
        except CarebaseError as exc:
            error = shown_error(web.language, exc)
    listed = await run_in_threadpool(directory.list)
    return web.render(
        "admin_users.html", {"users": listed, "roles": ROLES, "error": error}, 400 if error else 200
    )


def _change_user(directory: Any, form: dict[str, str]) -> None:
    action = form.get("action", "")
    username = form.get("username", "").strip()
    if action == "add":
        directory.add(
            username,
            form.get("role", ""),
            form.get("password") or None,
            patient=form.get("patient") or None,
            name=form.get("name") or None,
        )
    elif action in ("disable", "enable", "unlock"):
        getattr(directory, action)(username)
    else:
        raise BadRequest(f"Unknown action {action!r}")


async def audit_log(web: WebPage) -> Response:
    """The audit log, newest first, filtered by patient, user, action, outcome, resource and
    dates; paged by the sequence number."""
    view = audit_view(web.guard.principal, "s")
    params = web.request.query_params
    filters = {name: params.get(name, "").strip() for name in _FILTERS}
    dates = tuple(
        d
        for d in (
            f"ge{filters['from']}" if filters["from"] else "",
            f"le{filters['to']}" if filters["to"] else "",
        )
        if d
    )
    query = audit_records.AuditQuery(
        patients=(filters["patient"],) if filters["patient"] else (),
        agents=(filters["agent"],) if filters["agent"] else (),
        actions=(filters["action"],) if filters["action"] else (),
        outcomes=(filters["outcome"],) if filters["outcome"] else (),
        entities=(filters["entity"],) if filters["entity"] else (),
        dates=dates,
        required_patient=view.patient,
    )
    before_raw = params.get("before", "")
    before = int(before_raw) if before_raw.isdigit() else None

    def load() -> list[Any]:
        store = web.records.ctx.store
        if not isinstance(store, SqlStore) or not audit_records.has_log(store):
            return []
        return audit_records.search(store, query, before=before, limit=AUDIT_PAGE)

    found = await run_in_threadpool(load)
    rows = [
        {
            "seq": r.seq,
            "when": datetime.fromtimestamp(r.recorded / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "who": r.agent_name or r.agent or "",
            "interaction": r.interaction,
            "action": r.action,
            "outcome": r.outcome,
            "patients": r.patients,
            "entities": r.entities[:5],
            "more": max(len(r.entities) - 5, 0),
            "break_glass": r.break_glass,
        }
        for r in found
    ]
    more = found[-1].seq if len(found) == AUDIT_PAGE else None
    return web.render("admin_audit.html", {"rows": rows, "filters": filters, "more": more})


async def models(web: WebPage) -> Response:
    """The registered models and links to their cards."""

    def load() -> list[Any]:
        from carebase.ml import registry

        return registry.list_models(web.records.ctx.store)

    return web.render("admin_models.html", {"models": await run_in_threadpool(load)})


def admin_routes() -> list[Route]:
    """The routes of this module."""
    area = page("admin")
    return [
        Route(f"{ADMIN}/users", area(users), methods=["GET", "POST"]),
        Route(f"{ADMIN}/audit", area(audit_log), methods=["GET"]),
        Route(f"{ADMIN}/models", area(models), methods=["GET"]),
    ]
