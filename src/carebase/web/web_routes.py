"""All the browser routes: the login pages, the clinician app (`/app`), the patient portal
(`/portal`), the start page (`/`) and the language switch (`/language`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from carebase.web import sessions_http as http
from carebase.web.admin_routes import admin_routes
from carebase.web.clinician_routes import clinician_routes
from carebase.web.document_routes import document_routes
from carebase.web.documenting_routes import documenting_routes
from carebase.web.forms import read_form
from carebase.web.i18n import LANG_COOKIE, LANGUAGES
from carebase.web.login_routes import html_guarded, safe_next
from carebase.web.pages import home_of
from carebase.web.portal_routes import portal_routes
from carebase.web.risk_routes import risk_routes
from carebase.web.visit_routes import visit_routes

#: A year: the language choice outlives sessions.
_LANG_MAX_AGE = 365 * 24 * 3600


async def start(request: Request) -> Response:
    """`/`: the user's home (portal or clinician app), else the login page."""
    user = await http.current_user(request)
    return RedirectResponse(home_of(user) if user else "/login", 303)


async def language(request: Request) -> Response:
    """POST: switch the pages' language (a cookie), then back to the page the form was on."""
    await http.current_user(request)  # the signed-in session's CSRF secret applies
    form = await read_form(request)
    http.check_csrf(request, form)
    choice = form.get("lang", "")
    response = RedirectResponse(safe_next(form.get("back")), 303)
    if choice in LANGUAGES:
        http.set_cookie(
            request, response, LANG_COOKIE, choice, samesite="lax", max_age=_LANG_MAX_AGE
        )
    return response


def web_routes() -> list[Route]:
    """The app's browser routes besides the login pages."""
    return [
        Route("/", html_guarded(start), methods=["GET"]),
        Route("/language", html_guarded(language), methods=["POST"]),
        *clinician_routes(),
        *documenting_routes(),
        *document_routes(),
        *risk_routes(),
        *admin_routes(),
        *portal_routes(),
        *visit_routes(),
    ]
