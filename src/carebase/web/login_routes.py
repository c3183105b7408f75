"""`/login` (password, then the TOTP step when enrolled) and `/logout`, with their audit.

After a successful login the browser goes to `next`, which must be a path on this server
(`/...`); anything else (`//host`, `https://host`, backslashes, control characters) is
replaced by `/`, so the login page cannot be used to send users to another site.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from carebase.auth.audit_entry import AuditEntry, AuditOutcome
from carebase.auth.principal import Principal
from carebase.auth.users import SecondFactorRequired, User
from carebase.errors import CarebaseError, Forbidden, TooManyRequests, Unauthorized
from carebase.web import sessions_http as http
from carebase.web.error_text import shown_error
from carebase.web.forms import read_form
from carebase.web.i18n import language_of, translate
from carebase.web.templates import render

log = logging.getLogger("carebase.web")

LOGIN_PATH = "/login"
SECOND_FACTOR_PATH = "/login/second-factor"
LOGOUT_PATH = "/logout"
_MAX_NEXT = 2048


def safe_next(value: str | None, default: str = "/") -> str:
    """`value` when it is a path on this server, else `default`."""
    if not value or len(value) > _MAX_NEXT:
        return default
    if "\\" in value or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return default
    if not value.startswith("/") or value.startswith("//"):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def _login_url(next_: str) -> str:
    return LOGIN_PATH if next_ == "/" else f"{LOGIN_PATH}?next={quote(next_, safe='')}"


# --- audit -------------------------------------------------------------------------------------
def audit(
    request: Request,
    interaction: str,
    outcome: AuditOutcome,
    principal: Principal | None,
    description: str,
) -> None:
    """Record a security event on the app's audit trail (when the app has one)."""
    trail = getattr(request.app.state, "audit_trail", None)
    if trail is None:
        return
    trail.record(
        AuditEntry(
            interaction=interaction,
            action="E",
            outcome=outcome,
            principal=principal,
            source_ip=request.client.host if request.client else None,
            user_agent=request.headers.get("user-agent"),
            description=description,
        )
    )


def _failed(request: Request, exc: CarebaseError, who: str, user: User | None = None) -> None:
    what = "locked out" if isinstance(exc, TooManyRequests) else "refused"
    principal = user.principal() if user else None
    audit(request, "failed-auth", "4", principal, f"sign-in as {who!r} {what}: {exc.message}")


# --- pages -------------------------------------------------------------------------------------
def _login_page(
    request: Request,
    next_: str,
    *,
    error: str | None = None,
    username: str = "",
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    context = {"next": next_, "error": error, "username": username}
    return render(request, "login.html", context, status, headers)


def _second_factor_page(
    request: Request, next_: str, *, error: str | None = None, status: int = 200
) -> Response:
    return render(request, "second_factor.html", {"next": next_, "error": error}, status)


async def _signed_in(request: Request, user: User, next_: str) -> Response:
    """Start a full session for `user` (a new token: never reuse one from before login)."""
    sessions = http.browser_sessions(request)
    old = http.read_cookie(request, http.SESSION_COOKIE)
    if old:
        await run_in_threadpool(sessions.revoke, old)
    session = await run_in_threadpool(
        sessions.create,
        user.id,
        source_ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    audit(request, "login", "0", user.principal(), f"{user.username} signed in")
    response = RedirectResponse(next_, status_code=303)
    http.set_session_cookie(request, response, session)
    if http.read_cookie(request, http.PENDING_COOKIE):
        http.clear_cookie(request, response, http.PENDING_COOKIE)
    return response


async def login(request: Request) -> Response:
    """GET: the login form. POST: check the username and password."""
    if request.method == "GET":
        next_ = safe_next(request.query_params.get("next"))
        if await http.current_user(request) is not None:
            return RedirectResponse(next_, status_code=303)
        return _login_page(request, next_)
    form = await read_form(request)
    http.check_csrf(request, form)
    next_ = safe_next(form.get("next"))
    username, password = form.get("username", "").strip(), form.get("password", "")
    if not username or not password:
        return _login_page(
            request,
            next_,
            error=translate(language_of(request), "Enter your username and password"),
            username=username,
            status=400,
        )
    directory = http.user_directory(request)
    try:
        user = await run_in_threadpool(directory.authenticate, username, password, None)
    except SecondFactorRequired as exc:
        pending = await run_in_threadpool(
            http.browser_sessions(request).create,
            exc.user.id,
            second_factor_pending=True,
            source_ip=request.client.host if request.client else None,
            user_agent=request.headers.get("user-agent"),
        )
        target = SECOND_FACTOR_PATH + ("" if next_ == "/" else f"?next={quote(next_, safe='')}")
        response = RedirectResponse(target, status_code=303)
        http.set_pending_cookie(request, response, pending)
        return response
    except (Unauthorized, Forbidden, TooManyRequests) as exc:
        _failed(request, exc, username)
        return _login_page(
            request,
            next_,
            error=shown_error(language_of(request), exc).message,
            username=username,
            status=exc.status,
            headers=_retry_after(exc),
        )
    return await _signed_in(request, user, next_)


async def second_factor(request: Request) -> Response:
    """GET: the code form. POST: check a TOTP or recovery code and finish the login."""
    next_ = safe_next(request.query_params.get("next"))
    pending = await http.pending_login(request)
    if pending is None:
        # No password step in the last few minutes: start again.
        return RedirectResponse(_login_url(next_), status_code=303)
    if request.method == "GET":
        return _second_factor_page(request, next_)
    form = await read_form(request)
    http.check_csrf(request, form)
    next_ = safe_next(form.get("next"))
    code = form.get("code", "").strip()
    directory = http.user_directory(request)
    user = await run_in_threadpool(directory.by_id, pending.user_id)
    if not code:
        return _second_factor_page(
            request, next_, error=translate(language_of(request), "Enter the code"), status=400
        )
    try:
        signed_in = await run_in_threadpool(directory.verify_second_factor, pending.user_id, code)
    except TooManyRequests as exc:
        await run_in_threadpool(http.browser_sessions(request).revoke, pending.token)
        _failed(request, exc, user.username if user else "?", user)
        response = _login_page(
            request,
            next_,
            error=shown_error(language_of(request), exc).message,
            status=exc.status,
            headers=_retry_after(exc),
        )
        http.clear_cookie(request, response, http.PENDING_COOKIE)
        return response
    except (Unauthorized, Forbidden) as exc:
        _failed(request, exc, user.username if user else "?", user)
        return _second_factor_page(
            request, next_, error=shown_error(language_of(request), exc).message, status=exc.status
        )
    await run_in_threadpool(http.browser_sessions(request).revoke, pending.token)
    return await _signed_in(request, signed_in, next_)


async def logout(request: Request) -> Response:
    """GET: a page with the sign-out button. POST: end the session (the form carries the
    session's CSRF token)."""
    user = await http.current_user(request)
    session = await http.current_session(request)
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    if session is None or user is None:
        http.clear_cookie(request, response, http.SESSION_COOKIE)
        return response
    if request.method == "GET":
        return render(request, "logout.html", {"user": user})
    form = await read_form(request)
    http.check_csrf(request, form)
    await run_in_threadpool(http.browser_sessions(request).revoke, session.token)
    audit(request, "logout", "0", user.principal(), f"{user.username} signed out")
    http.clear_cookie(request, response, http.SESSION_COOKIE)
    return response


def _retry_after(exc: CarebaseError) -> dict[str, str]:
    return {k: v for k, v in exc.headers.items() if k.lower() == "retry-after"}


# --- routing -----------------------------------------------------------------------------------
def html_guarded(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[..., object]:
    """Wrap a page endpoint so errors become an HTML error page, never a traceback."""

    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except CarebaseError as exc:
            shown = shown_error(language_of(request), exc)
            return render(
                request,
                "error.html",
                {"status": exc.status, "message": shown.message, "detail": shown.detail},
                exc.status,
                _retry_after(exc),
            )
        except Exception:
            log.exception("Unhandled error in %s %s", request.method, request.url.path)
            return render(
                request,
                "error.html",
                {
                    "status": 500,
                    "message": translate(
                        language_of(request), "Something went wrong; the server log has details"
                    ),
                    "detail": None,
                },
                500,
            )

    run.__name__ = endpoint.__name__
    run.__doc__ = endpoint.__doc__
    return run


def login_routes() -> list[Route]:
    """The routes of this module (mounted at the app's root)."""
    return [
        Route(LOGIN_PATH, html_guarded(login), methods=["GET", "POST"]),
        Route(SECOND_FACTOR_PATH, html_guarded(second_factor), methods=["GET", "POST"]),
        Route(LOGOUT_PATH, html_guarded(logout), methods=["GET", "POST"]),
    ]
