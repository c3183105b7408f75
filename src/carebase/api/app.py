"""The ASGI application factory: FHIR routes under `/fhir`, liveness at `/healthz`, the
login pages and static files of the browser UI."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from carebase.api.responses import http_exception, unhandled_exception
from carebase.api.routes import FhirApi
from carebase.config import Settings
from carebase.store.base import Store
from carebase.web import STATIC_DIR
from carebase.web.login_routes import login_routes

FHIR_PREFIX = "/fhir"


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return Response(b'{"status":"ok"}', media_type="application/json")


def create_app(settings: Settings, store: Store | None = None) -> Starlette:
    """The carebase ASGI app.

    With no `store`, one is opened from `settings.resolved_database_url` at startup (and
    closed at shutdown); either way the schema is migrated at startup.
    """
    owned = store is None
    api = FhirApi(store, settings)

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

    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET"])]
    routes.extend(api.routes(FHIR_PREFIX))
    routes.extend(login_routes())
    routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_exception, Exception: unhandled_exception},
    )
    app.state.fhir = api
    app.state.settings = settings
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
