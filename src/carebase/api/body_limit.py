"""A ceiling on every request body, as a pure ASGI middleware (413 OperationOutcome).

FHIR handlers already read bodies through `request_body.read_body`; this guard bounds every
other path too (login and OAuth form posts, future endpoints) whatever the handler does: a
declared `Content-Length` over the limit is refused before the app runs, and a body streamed
without one (chunked) is cut off once it passes the limit. Form posts
(`application/x-www-form-urlencoded`) get the much smaller `max_form_bytes`: a login or token
request is a few hundred bytes; file uploads (`multipart/form-data`, the chart's documents)
get `max_upload_bytes`. The refusal is an OperationOutcome unless `refusal` (the web app's
error page for browsers, `web.pages.browser_refusal`) gives another response.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carebase.api.responses import Refusal, refusal_response
from carebase.errors import BadRequest, CarebaseError, TooLarge

_FORM = "application/x-www-form-urlencoded"
_UPLOAD = "multipart/form-data"


class BodyTooLarge(TooLarge):
    """The body passed the guard's limit while the app was reading it."""


class BodyLimitMiddleware:
    """Refuses (413) request bodies over `max_bytes` (`max_form_bytes` for form posts)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_form_bytes: int,
        max_upload_bytes: int,
        refusal: Refusal | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_form_bytes = max_form_bytes
        self.max_upload_bytes = max_upload_bytes
        self.refusal = refusal

    def limit_for(self, headers: Headers) -> tuple[int, str]:
        """The byte limit for a request with these headers, and the setting that sets it."""
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == _FORM:
            return self.max_form_bytes, "CAREBASE_MAX_FORM_BYTES"
        if kind == _UPLOAD:
            return self.max_upload_bytes, "CAREBASE_MAX_UPLOAD_BYTES"
        return self.max_bytes, "CAREBASE_MAX_BODY_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit, setting = self.limit_for(headers)
        too_large = BodyTooLarge(
            f"Request body is larger than the limit of {limit} bytes ({setting})"
        )
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                bad = BadRequest(f"Content-Length {declared!r} is not a number")
                await self._refuse(bad, scope, receive, send)
                return
            if int(declared) > limit:
                await self._refuse(too_large, scope, receive, send)
                return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracking_send)
        except BodyTooLarge as exc:
            if started:  # too late for a 413: let the server drop the connection
                raise
            await self._refuse(exc, scope, receive, send)

    async def _refuse(self, exc: CarebaseError, scope: Scope, receive: Receive, send: Send) -> None:
        await refusal_response(exc, scope, self.refusal)(scope, receive, send)
