"""Security headers on every response, as a pure ASGI middleware.

A pure ASGI wrapper (not Starlette's BaseHTTPMiddleware, which runs the app in a task and
buffers streamed bodies) adds a fixed list of pre-encoded header tuples to each
`http.response.start` message, so the cost per response is one list extend.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The Content-Security-Policy: only this origin's scripts, styles and images (plus data:
#: images), no plugins, no <base> rewriting, never framed, forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def policy_allowing_styles(*sources: str) -> str:
    """The Content-Security-Policy with `sources` (e.g. the `'sha256-...'` of one inline
    style) added to `style-src` only: scripts stay `'self'`."""
    return CONTENT_SECURITY_POLICY.replace(
        "style-src 'self'", "style-src 'self' " + " ".join(sources), 1
    )


#: Two years, subdomains included; sent only on responses to requests that came over TLS
#: (a browser ignores HSTS over plain HTTP, and a plain-HTTP development server must not pin).
STRICT_TRANSPORT_SECURITY = "max-age=63072000; includeSubDomains"

_ALWAYS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_OVER_TLS = (*_ALWAYS, (b"strict-transport-security", STRICT_TRANSPORT_SECURITY.encode()))
_NAMES = frozenset(name for name, _ in _OVER_TLS)


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response (HSTS only when the scheme is https).

    A header the application already set (e.g. a page with its own CSP) is left as it is.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _OVER_TLS if scope.get("scheme") == "https" else _ALWAYS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers if name.lower() in _NAMES}
                if present:
                    headers.extend(h for h in extra if h[0] not in present)
                else:
                    headers.extend(extra)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
