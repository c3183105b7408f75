"""`GET/POST /oauth/authorize`: the browser side of SMART App Launch - sign-in, patient
picker and consent - ending in a redirect to the application with a code (or an error).

The request is checked on every step (the consent form posts the original parameters back,
and they are checked again, so a tampered hidden field gains nothing). Problems with the
client or its redirect URI are shown on an error page and never redirected (no open
redirect); other problems go back to the application as `?error=...&state=...`. Consent and
patient choices are POSTs protected by the session's CSRF token.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from carebase.api.oauth_routes import read_form
from carebase.auth.oauth_authorize import (
    AUTHORIZE_PARAMETERS,
    AuthorizationRequest,
    Grant,
    code_redirect,
    error_redirect,
    grant_for,
    issue_code,
    parse_authorization,
    with_patient,
)
from carebase.auth.oauth_errors import OAuthError
from carebase.auth.oauth_server import OAuthServer
from carebase.auth.scope_text import describe_scope
from carebase.auth.users import User
from carebase.errors import Forbidden
from carebase.fhir.json_io import loads
from carebase.store.base import Store
from carebase.web import sessions_http as http
from carebase.web.i18n import N_, Text, language_of, translate
from carebase.web.login_routes import html_guarded
from carebase.web.templates import render

AUTHORIZE_PATH = "/oauth/authorize"
#: The most patients the picker lists for one search.
PICKER_LIMIT = 20


def _server(request: Request) -> OAuthServer:
    server: OAuthServer = request.app.state.oauth
    return server


async def _parameters(request: Request) -> tuple[dict[str, str], dict[str, str] | None]:
    """(the authorization parameters, the posted form or None for a GET)."""
    if request.method == "GET":
        params: dict[str, str] = {}
        for name, value in parse_qsl(request.url.query, keep_blank_values=True):
            if name in params:
                raise OAuthError(
                    "invalid_request", f"Parameter {name!r} appears twice", redirectable=False
                )
            params[name] = value
        return params, None
    try:
        form = await read_form(request)
    except OAuthError as exc:
        exc.redirectable = False  # nothing is checked yet: show it, do not redirect
        raise
    return form, form


#: What the error page says for each OAuth error code, in the page's language; the
#: authorization server's own (English, technical) description is shown beside it.
_OAUTH_MESSAGES: dict[str, Text] = {
    "invalid_request": N_("The application's request is incomplete or not valid."),
    "invalid_client": N_("This application is not registered here."),
    "unauthorized_client": N_("This application may not sign in here, or not in this way."),
    "unsupported_response_type": N_("This application asked for an unsupported answer."),
    "invalid_scope": N_("This application asked for access this server does not grant."),
    "access_denied": N_("Access was not granted."),
}
_OAUTH_OTHER = N_("The application's request could not be carried out.")


def _error_page(request: Request, exc: OAuthError, status: int = 400) -> Response:
    message = translate(language_of(request), _OAUTH_MESSAGES.get(exc.error, _OAUTH_OTHER))
    values = {"error": exc.error, "message": message, "detail": exc.description}
    return render(request, "oauth_error.html", values, status)


def _send_back(request: Request, url: str) -> Response:
    # 303 after a POST so the browser follows with a GET
    return RedirectResponse(url, 303 if request.method == "POST" else 302)


def _refuse(
    request: Request, server: OAuthServer, exc: OAuthError, auth: AuthorizationRequest | None
) -> Response:
    """An error of a checked request goes back to the app; anything else is a page."""
    if exc.redirectable and auth is not None:
        url = error_redirect(auth.redirect_uri, exc, auth.state, server.config.issuer)
        return _send_back(request, url)
    return _error_page(request, exc)


async def authorize(request: Request) -> Response:
    """The authorization endpoint (GET, or POST for authorize-post and the page forms)."""
    server = _server(request)
    try:
        params, form = await _parameters(request)
        auth = await run_in_threadpool(
            parse_authorization, server, {k: params[k] for k in AUTHORIZE_PARAMETERS if k in params}
        )
    except OAuthError as exc:
        if not exc.redirectable:
            return _error_page(request, exc)
        # the client and redirect URI were checked before this error: send it back
        client_params = {
            k: params[k] for k in ("client_id", "redirect_uri", "state") if k in params
        }
        url = error_redirect(
            client_params["redirect_uri"], exc, client_params.get("state"), server.config.issuer
        )
        return _send_back(request, url)
    user = await http.current_user(request)
    if user is None:
        next_ = f"{AUTHORIZE_PATH}?{urlencode(auth.params)}"
        return RedirectResponse(f"/login?next={quote(next_, safe='')}", 303)
    try:
        return await _signed_in(request, server, auth, user, form)
    except OAuthError as exc:
        return _refuse(request, server, exc, auth)
    except Forbidden as exc:
        return _error_page(request, OAuthError("access_denied", exc.message), 403)


async def _signed_in(
    request: Request,
    server: OAuthServer,
    auth: AuthorizationRequest,
    user: User,
    form: dict[str, str] | None,
) -> Response:
    grant = grant_for(auth, user)
    store: Store = request.app.state.fhir.store
    decision = form.get("decision") if form is not None else None
    if decision is not None:
        assert form is not None
        http.check_csrf(request, form)
        if decision == "deny":
            raise OAuthError("access_denied", "The user did not allow access")
        if grant.needs_patient and form.get("patient"):
            label = await _patient_label(store, form["patient"])
            if label is None:
                return await _picker(request, auth, user, store, "", "That patient was not found")
            grant = with_patient(grant, form["patient"])
        if decision == "approve" and not grant.needs_patient:
            code = await run_in_threadpool(issue_code, server, auth, user, grant)
            return _send_back(
                request, code_redirect(auth.redirect_uri, code, auth.state, server.config.issuer)
            )
    if grant.needs_patient:
        return await _picker(request, auth, user, store, request.query_params.get("q", ""))
    return await _consent(request, auth, user, store, grant)


async def _consent(
    request: Request, auth: AuthorizationRequest, user: User, store: Store, grant: Grant
) -> Response:
    label = await _patient_label(store, grant.patient) if grant.patient else None
    context: dict[str, Any] = {
        "user": user,
        "client_name": auth.client.name,
        "redirect_uri": auth.redirect_uri,
        "scope_lines": [describe_scope(s) for s in grant.scopes],
        "params": auth.params,
        # only a picked patient travels in the form; launch and patient users get theirs again
        "patient_id": grant.patient if auth.launch is None and user.role != "patient" else None,
        "patient_label": label or grant.patient,
    }
    return render(request, "consent.html", context)


async def _picker(
    request: Request,
    auth: AuthorizationRequest,
    user: User,
    store: Store,
    query: str,
    error: str | None = None,
) -> Response:
    choices = await run_in_threadpool(_find_patients, store, query) if query.strip() else []
    context = {
        "user": user,
        "client_name": auth.client.name,
        "params": auth.params,
        "query": query,
        "choices": choices,
        "error": error,
    }
    return render(request, "patient_picker.html", context)


def _display_name(body: dict[str, Any]) -> str:
    names = body.get("name") or []
    name = names[0] if names and isinstance(names[0], dict) else {}
    text = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip()
    birth = body.get("birthDate")
    return f"{text or 'Unnamed'} (born {birth})" if birth else (text or "Unnamed")


def _find_patients(store: Store, query: str) -> list[dict[str, str]]:
    """Patients whose name starts with `query` (FHIR `name` search), with a display label."""
    page = store.search("Patient", [("name", query.strip())], count=PICKER_LIMIT, total="none")
    out = []
    for entry in page.entries:
        if entry.body is not None:
            out.append({"id": entry.id, "label": _display_name(loads(entry.body))})
    return out


async def _patient_label(store: Store, patient_id: str) -> str | None:
    """The display label of an existing Patient, or None."""
    found = await store.read_async("Patient", patient_id)
    if found is None or found.deleted or found.body is None:
        return None
    return _display_name(loads(found.body))


def oauth_page_routes() -> list[Route]:
    """The routes of this module."""
    return [Route(AUTHORIZE_PATH, html_guarded(authorize), methods=["GET", "POST"])]
