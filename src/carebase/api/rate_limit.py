"""Rate limiting of the login and OAuth endpoints per client IP, as a pure ASGI middleware.

Password guessing and token-endpoint abuse are throttled before any handler runs: a POST to
one of `LIMITED_PATHS` takes a token from the client IP's bucket (`auth/rate_limiter.py`);
with none left the answer is 429 with `Retry-After` and an OperationOutcome (a browser's
sign-in form gets the web app's error page: `refusal`). Buckets live in
the worker process's memory (see docs/security/hardening.md for what that means with
several workers or behind a reverse proxy).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from carebase.api.responses import Refusal, refusal_response
from carebase.auth.rate_limiter import RateLimit, TokenBucketLimiter
from carebase.errors import TooManyRequests

#: The endpoints that take credentials or mint tokens.
LIMITED_PATHS = frozenset(
    {"/login", "/oauth/token", "/oauth/authorize", "/oauth/introspect", "/oauth/revoke"}
)


class RateLimitMiddleware:
    """Throttles POSTs to `paths` per client IP with one shared TokenBucketLimiter."""

    def __init__(
        self,
        app: ASGIApp,
        limit: RateLimit,
        paths: frozenset[str] = LIMITED_PATHS,
        limiter: TokenBucketLimiter | None = None,
        refusal: Refusal | None = None,
    ) -> None:
        self.app = app
        self.paths = paths
        self.limiter = limiter if limiter is not None else TokenBucketLimiter(limit)
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"].rstrip("/") not in self.paths
        ):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        key = f"{client[0] if client else 'unknown'} {scope['path'].rstrip('/')}"
        wait = self.limiter.acquire(key)
        if wait <= 0.0:
            await self.app(scope, receive, send)
            return
        seconds = self.limiter.retry_after(wait)
        limit = self.limiter.limit
        error = TooManyRequests(
            f"Too many requests to {scope['path']} from this address: the limit is "
            f"{limit.count} per {limit.period:g} s (bursts of {limit.burst}); "
            f"retry after {seconds} s",
            headers={"Retry-After": str(seconds)},
        )
        await refusal_response(error, scope, self.refusal)(scope, receive, send)
