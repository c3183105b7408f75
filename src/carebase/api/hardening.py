"""The hardening middleware stack of the app: security headers, CORS, rate limits, body limit.

Order matters (outermost first): security headers label every response, including the
CORS, 429 and 413 answers of the layers inside; CORS comes before the rate limit so a
browser can read a 429 meant for it; the body limit sits closest to the application.
"""

from __future__ import annotations

from starlette.middleware import Middleware

from carebase.api.body_limit import BodyLimitMiddleware
from carebase.api.cors import CorsMiddleware
from carebase.api.rate_limit import RateLimitMiddleware
from carebase.api.responses import Refusal
from carebase.api.security_headers import SecurityHeadersMiddleware
from carebase.auth.rate_limiter import parse_rate_limit
from carebase.config import Settings


def hardening_middleware(settings: Settings, refusal: Refusal | None = None) -> list[Middleware]:
    """The middleware list for `Starlette(middleware=...)` under `settings`; `refusal` answers
    a refused body or a throttled sign-in instead of the OperationOutcome where it gives a
    response (browsers).

    Raises SystemExit with a one-line message when CAREBASE_AUTH_RATE_LIMIT is malformed
    (a configuration error found at start, like a malformed integer setting).
    """
    try:
        limit = parse_rate_limit(settings.auth_rate_limit)
    except ValueError as exc:
        raise SystemExit(f"CAREBASE_AUTH_RATE_LIMIT: {exc}") from exc
    stack = [Middleware(SecurityHeadersMiddleware)]
    if settings.cors_origins:
        stack.append(Middleware(CorsMiddleware, origins=settings.cors_origins))
    if limit is not None:
        stack.append(Middleware(RateLimitMiddleware, limit=limit, refusal=refusal))
    stack.append(
        Middleware(
            BodyLimitMiddleware,
            max_bytes=settings.max_body_bytes,
            max_form_bytes=settings.max_form_bytes,
            max_upload_bytes=settings.max_upload_bytes,
            refusal=refusal,
        )
    )
    return stack
