"""CORS for an allow-list of browser origins, as a pure ASGI middleware.

Only listed origins get CORS headers; any other origin gets none (its browser then refuses
the response). Credentials (cookies) are never allowed cross-origin: SMART apps send their
access token in the Authorization header, which needs no credentials mode, so
`Access-Control-Allow-Credentials` is never sent and `*` is never combined with it.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carebase.api.responses import error_response
from carebase.errors import Forbidden

ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
#: Request headers a cross-origin caller may send (FHIR's conditional and Prefer headers).
ALLOWED_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "prefer",
    "if-match",
    "if-none-match",
    "if-none-exist",
    "if-modified-since",
    "x-requested-with",
)
#: Response headers a cross-origin caller may read (FHIR puts results in these).
EXPOSED_HEADERS = ("Location", "ETag", "Content-Location", "Last-Modified")
_PREFLIGHT_MAX_AGE = b"600"
_SAFELISTED = frozenset({"accept", "accept-language", "content-language", "content-type"})


class CorsMiddleware:
    """Answers preflights and labels responses for origins in `origins` ("*": any origin)."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        self.app = app
        self.any_origin = "*" in origins
        self.origins = frozenset(o.rstrip("/") for o in origins if o != "*")
        self._exposed = (b"access-control-expose-headers", ", ".join(EXPOSED_HEADERS).encode())

    def allows(self, origin: str) -> bool:
        """Whether a request from `origin` may read responses."""
        return self.any_origin or origin in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (self.any_origin or self.origins):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if preflight:
            await self._preflight(scope, receive, send, headers, origin)
            return
        if not self.allows(origin):
            await self.app(scope, receive, send)  # no CORS headers: the browser hides it
            return
        labels = [self._allow_origin(origin), self._exposed]
        if not self.any_origin:
            labels.append((b"vary", b"Origin"))  # caches must not serve it to another origin

        async def send_labelled(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *labels]
            await send(message)

        await self.app(scope, receive, send_labelled)

    def _allow_origin(self, origin: str) -> tuple[bytes, bytes]:
        return (b"access-control-allow-origin", b"*" if self.any_origin else origin.encode())

    async def _preflight(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers, origin: str
    ) -> None:
        method = headers["access-control-request-method"].upper()
        asked = [
            h.strip().lower()
            for h in headers.get("access-control-request-headers", "").split(",")
            if h.strip()
        ]
        refused = [h for h in asked if h not in ALLOWED_HEADERS and h not in _SAFELISTED]
        if not self.allows(origin) or method not in ALLOWED_METHODS or refused:
            why = (
                f"origin {origin} is not allowed (CAREBASE_CORS_ORIGINS)"
                if not self.allows(origin)
                else f"method {method} is not allowed"
                if method not in ALLOWED_METHODS
                else f"request header(s) {', '.join(refused)} are not allowed"
            )
            await error_response(Forbidden(f"CORS preflight refused: {why}"))(scope, receive, send)
            return
        response_headers = [
            self._allow_origin(origin),
            (b"access-control-allow-methods", ", ".join(ALLOWED_METHODS).encode()),
            (b"access-control-allow-headers", ", ".join(ALLOWED_HEADERS).encode()),
            (b"access-control-max-age", _PREFLIGHT_MAX_AGE),
            (b"content-length", b"0"),
        ]
        if not self.any_origin:
            response_headers.append((b"vary", b"Origin"))
        await send({"type": "http.response.start", "status": 204, "headers": response_headers})
        await send({"type": "http.response.body", "body": b""})
