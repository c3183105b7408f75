"""Browser sessions over HTTP: the session cookie, the signed-in user and CSRF protection.

Cookies are HttpOnly, Path=/, SameSite=Lax for the session (so a user following a link or an
OAuth redirect from another site arrives signed in) and Strict for the login-only cookies;
Secure with the `__Host-` prefix when the request came over https or
`Settings.cookie_secure` (CAREBASE_COOKIE_SECURE) says so.

CSRF: a signed-in page's forms carry the session's own CSRF secret; forms shown before login
(the login form itself) use a double-submit token: a random value in a Strict cookie that the
form must repeat. `check_csrf` compares in constant time and answers 403 on any mismatch.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from carebase.auth.sessions import PENDING_SECONDS, BrowserSessions, Session
from carebase.auth.users import User, UserDirectory
from carebase.config import Settings
from carebase.errors import Forbidden
from carebase.store.base import Store

SESSION_COOKIE = "carebase_session"
CSRF_COOKIE = "carebase_csrf"
#: The half-finished login waiting for its second factor.
PENDING_COOKIE = "carebase_login"
CSRF_FIELD = "csrf_token"

_STATE_SESSION = "carebase_session"
_STATE_NEW_CSRF = "carebase_new_csrf"


# --- the app's parts -----------------------------------------------------------------------------
def app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def app_store(request: Request) -> Store:
    """The store the app serves."""
    store: Store = request.app.state.fhir.store
    return store


def user_directory(request: Request) -> UserDirectory:
    """The app's UserDirectory (one per app: it keeps the unknown-username lockouts)."""
    state = request.app.state
    directory: UserDirectory | None = getattr(state, "user_directory", None)
    if directory is None:
        directory = state.user_directory = UserDirectory(app_store(request))
    return directory


def browser_sessions(request: Request) -> BrowserSessions:
    """The app's BrowserSessions, with the configured timeouts."""
    state = request.app.state
    sessions: BrowserSessions | None = getattr(state, "browser_sessions", None)
    if sessions is None:
        settings = app_settings(request)
        sessions = state.browser_sessions = BrowserSessions(
            app_store(request),
            idle_seconds=settings.session_idle_seconds,
            absolute_seconds=settings.session_absolute_seconds,
        )
    return sessions


# --- cookies -----------------------------------------------------------------------------------
def is_secure(request: Request) -> bool:
    """Whether cookies must be Secure: https, or forced by the settings."""
    return request.url.scheme == "https" or app_settings(request).cookie_secure


def cookie_name(request: Request, base: str) -> str:
    """`base`, with the `__Host-` prefix (no Domain, Path=/, Secure) when Secure."""
    return f"__Host-{base}" if is_secure(request) else base


def read_cookie(request: Request, base: str) -> str | None:
    """The value of one of our cookies, or None."""
    return request.cookies.get(cookie_name(request, base)) or None


def set_cookie(
    request: Request,
    response: Response,
    base: str,
    value: str,
    *,
    samesite: str = "lax",
    max_age: int | None = None,
) -> None:
    """Set one of our cookies with the attributes above (Path=/, HttpOnly, no Domain)."""
    response.set_cookie(
        cookie_name(request, base),
        value,
        max_age=max_age,
        path="/",
        secure=is_secure(request),
        httponly=True,
        samesite=samesite,  # type: ignore[arg-type]
    )


def clear_cookie(request: Request, response: Response, base: str) -> None:
    """Tell the browser to drop one of our cookies."""
    response.delete_cookie(
        cookie_name(request, base), path="/", secure=is_secure(request), httponly=True
    )


def set_session_cookie(request: Request, response: Response, session: Session) -> None:
    """Put a full session's token in the session cookie (a browser-session cookie: the
    server ends the session at its idle or absolute expiry whatever the browser keeps)."""
    set_cookie(request, response, SESSION_COOKIE, session.token, samesite="lax")


def set_pending_cookie(request: Request, response: Response, session: Session) -> None:
    """Put a half-finished login's token in its own short-lived, Strict cookie."""
    set_cookie(
        request, response, PENDING_COOKIE, session.token, samesite="strict", max_age=PENDING_SECONDS
    )


def apply_cookies(request: Request, response: Response) -> None:
    """Set the cookies this request decided on (a new pre-login CSRF token)."""
    new_csrf = getattr(request.state, _STATE_NEW_CSRF, None)
    if new_csrf:
        set_cookie(request, response, CSRF_COOKIE, new_csrf, samesite="strict")


# --- who is signed in ------------------------------------------------------------------------
async def current_session(request: Request) -> Session | None:
    """The request's full (not half-finished) live session, or None; remembered on the
    request so later calls and `csrf_token` reuse it."""
    if hasattr(request.state, _STATE_SESSION):
        cached: Session | None = getattr(request.state, _STATE_SESSION)
        return cached
    token = read_cookie(request, SESSION_COOKIE)
    session = None
    if token:
        found = await run_in_threadpool(browser_sessions(request).lookup, token)
        if found is not None and not found.second_factor_pending:
            session = found
    setattr(request.state, _STATE_SESSION, session)
    return session


async def current_user(request: Request) -> User | None:
    """The signed-in user of this request, or None (no, expired or revoked session, or a
    disabled user)."""
    session = await current_session(request)
    if session is None:
        return None
    user = await run_in_threadpool(user_directory(request).by_id, session.user_id)
    if user is None or user.disabled:
        setattr(request.state, _STATE_SESSION, None)
        return None
    return user


async def pending_login(request: Request) -> Session | None:
    """The half-finished login (password right, second factor to come), or None."""
    token = read_cookie(request, PENDING_COOKIE)
    if not token:
        return None
    found = await run_in_threadpool(browser_sessions(request).lookup, token)
    return found if found is not None and found.second_factor_pending else None


# --- CSRF --------------------------------------------------------------------------------------
def _session_loaded(request: Request) -> Session | None:
    loaded: Session | None = getattr(request.state, _STATE_SESSION, None)
    return loaded


def csrf_token(request: Request) -> str:
    """The value forms on this page must carry in the hidden field `csrf_token`.

    For a signed-in request (after `current_user` was awaited) it is the session's CSRF
    secret; otherwise the pre-login double-submit token, minted (and set as a cookie by
    `render`) when the browser has none yet.
    """
    session = _session_loaded(request)
    if session is not None:
        return session.csrf_secret
    existing = getattr(request.state, _STATE_NEW_CSRF, None) or read_cookie(request, CSRF_COOKIE)
    if existing:
        return str(existing)
    token = secrets.token_urlsafe(32)
    setattr(request.state, _STATE_NEW_CSRF, token)
    return token


def check_csrf(request: Request, form: Mapping[str, Any]) -> None:
    """Raise Forbidden unless the form's `csrf_token` is the one `csrf_token` handed out
    (the session's secret when signed in, else the pre-login cookie's value)."""
    sent = form.get(CSRF_FIELD)
    session = _session_loaded(request)
    expected = session.csrf_secret if session is not None else read_cookie(request, CSRF_COOKIE)
    if (
        not isinstance(sent, str)
        or not sent
        or not expected
        or not hmac.compare_digest(sent.encode(), expected.encode())
    ):
        raise Forbidden(
            "The form's security token is missing or out of date; reload the page and "
            "submit it again"
        )
