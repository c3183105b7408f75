"""The ASGI application factory: FHIR routes under `/fhir`, liveness at `/healthz`."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from carebase.api.authentication import Authentication
from carebase.api.hardening import hardening_middleware
from carebase.api.responses import http_exception, unhandled_exception
from carebase.api.routes import FhirApi
from carebase.auth.audit_entry import AuditTrail, MemoryAuditTrail
from carebase.auth.keys import KeyRing
from carebase.auth.tokens import TokenService
from carebase.config import Settings
from carebase.store.base import Store

FHIR_PREFIX = "/fhir"
log = logging.getLogger("carebase")


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return Response(b'{"status":"ok"}', media_type="application/json")


def create_app(
    settings: Settings, store: Store | None = None, *, audit: AuditTrail | None = None
) -> Starlette:
    """The carebase ASGI app.

    With no `store`, one is opened from `settings.resolved_database_url` at startup (and
    closed at shutdown); either way the schema is migrated at startup. `audit` is the audit
    trail every FHIR interaction is recorded to (default: an in-memory trail until the
    durable one is wired in). Access tokens are verified with `app.state.tokens`.
    """
    owned = store is None
    trail = audit if audit is not None else MemoryAuditTrail()
    api = FhirApi(store, settings, trail)
    if settings.auth_disabled:
        log.warning(
            "AUTHENTICATION AND ACCESS CONTROL ARE DISABLED (CAREBASE_DEV_NO_AUTH): every "
            "request to /fhir runs as an all-powerful development user. Never do this with "
            "real patient data."
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not api.attached:
            from carebase.store.factory import open_store

            api.attach(open_store(settings.resolved_database_url, settings))
        api.store.migrate()
        try:
            yield
        finally:
            if api.attached:
                await api.store.aclose()
            if owned and api.attached:
                api.store.close()
            if audit is None:
                trail.close()

    routes: list[Route] = [Route("/healthz", healthz, methods=["GET"])]
    routes.extend(api.routes(FHIR_PREFIX))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=hardening_middleware(settings),  # headers, CORS, rate limit, body limit
        exception_handlers={HTTPException: http_exception, Exception: unhandled_exception},
    )
    app.state.fhir = api
    app.state.audit_trail = trail
    if getattr(app.state, "tokens", None) is None:
        app.state.tokens = TokenService(
            KeyRing.open(settings.keys_dir),
            issuer=settings.token_issuer,
            audience=settings.fhir_base,
            ttl=settings.access_token_ttl,
        )
    # innermost: headers, CORS preflight, rate and body limits apply to refusals too
    app.user_middleware.append(
        Middleware(Authentication, state=app.state, disabled=settings.auth_disabled)
    )
    return app


def tune_server_process() -> None:
    """Load the definitions now and make the garbage collector suit a server's allocations.

    Ingest builds and drops large JSON trees; with CPython's default thresholds the cyclic
    collector runs every 700 allocations and rescans long-lived objects (the R4 definitions,
    compiled indexing plans), which cost about 30% of Bundle ingest time. Objects alive at
    start are frozen out of collection, and the young generation is collected less often;
    reference counting still frees acyclic garbage at once.
    """
    from carebase.fhir.definitions.loader import get_definitions

    get_definitions()
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def app_from_env() -> Starlette:
    """The app configured from CAREBASE_* environment variables (for `uvicorn --factory`)."""
    tune_server_process()
    return create_app(Settings.from_env())
