"""The ASGI application factory: FHIR routes under `/fhir`, liveness at `/healthz`, the
login pages, the clinician app (`/app`), the patient portal (`/portal`) and the static
files of the browser UI."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from carebase.api.audit_routes import AuditApi
from carebase.api.authentication import Authentication
from carebase.api.bulk_routes import BulkApi
from carebase.api.bulk_runner import BulkRunner
from carebase.api.everything import EverythingApi
from carebase.api.hardening import hardening_middleware
from carebase.api.ml_routes import MlApi
from carebase.api.oauth_routes import OAuthApi
from carebase.api.responses import http_exception, unhandled_exception
from carebase.api.routes import FhirApi
from carebase.auth.audit_entry import AuditTrail
from carebase.auth.audit_log import DatabaseAuditTrail
from carebase.auth.audit_process import ProcessAuditTrail
from carebase.auth.oauth_server import OAuthConfig, OAuthServer
from carebase.auth.revocation_list import RevokedTokens
from carebase.auth.tokens import TokenService
from carebase.auth.users import User, UserDirectory
from carebase.config import Settings, usable_cpus
from carebase.data.loader import tune_for_ingest
from carebase.errors import CarebaseError
from carebase.store.base import Store
from carebase.store.oauth_records import OAuthRecords
from carebase.store.sql_store import SqlStore
from carebase.telehealth.routes import TelehealthRoutes
from carebase.telehealth.service import Telehealth
from carebase.telehealth.settings import TelehealthSettings
from carebase.web import STATIC_DIR
from carebase.web.i18n import page_language
from carebase.web.login_routes import login_routes
from carebase.web.oauth_pages import oauth_page_routes
from carebase.web.pages import browser_refusal
from carebase.web.web_routes import web_routes

FHIR_PREFIX = "/fhir"
log = logging.getLogger("carebase.api")


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return Response(b'{"status":"ok"}', media_type="application/json")


def audit_writer_kind(settings: Settings) -> str:
    """`process` or `thread`: where this server's audit entries are written
    (`settings.audit_writer`; `auto` decides by the CPUs the server may use).

    A writer process pays off where a CPU is left over for it, running beside the server: a
    writer thread there runs at the same time as the request handlers, and the two hand
    the interpreter lock back and forth between CPUs (measured on 2 CPUs, secured/open:
    SQLite 0.85 with the process against 0.75 with the thread; PostgreSQL 0.80-0.88
    against 0.80-0.85 in three runs, and a thread that only chains and packs, writing
    nothing, costs as much as the whole thread trail there). Where the server's workers
    have every usable CPU (a server pinned to one, a container with a one-CPU quota), the
    process can only take turns with them, and its hand-over and second interpreter cost
    more than a thread (pinned to one CPU: SQLite 0.70-0.73 with the thread against
    0.67-0.70, PostgreSQL 0.89-0.91 against 0.79-0.81; `bench/bench_auth_stages.py`). Both
    databases alike since appends on PostgreSQL take one round trip
    (`audit_records.append_onto`).
    """
    kind = settings.audit_writer
    if kind == "auto":
        return "process" if usable_cpus() > max(settings.workers, 1) else "thread"
    if kind in ("process", "thread"):
        return kind
    raise CarebaseError(f"CAREBASE_AUDIT_WRITER is {kind!r}: use 'auto', 'process' or 'thread'")


def durable_trail(store: Store, settings: Settings) -> AuditTrail:
    """The database audit trail of `store`, configured from `settings`: written by a
    process of its own (`audit_process`) or by a thread (`audit_log`), see
    `audit_writer_kind`."""
    if not isinstance(store, SqlStore):
        raise TypeError(f"the audit trail needs a SQL store, not {type(store).__name__}")
    if audit_writer_kind(settings) == "process":
        return ProcessAuditTrail(store.url, flush_ms=settings.audit_flush_ms,
                                 site=settings.fhir_base)  # fmt: skip
    return DatabaseAuditTrail(store, flush_ms=settings.audit_flush_ms, site=settings.fhir_base)


def create_app(
    settings: Settings,
    store: Store | None = None,
    *,
    audit: AuditTrail | None = None,
    telehealth: TelehealthSettings | None = None,
) -> Starlette:
    """The carebase ASGI app.

    With no `store`, one is opened from `settings.resolved_database_url` at startup (and
    closed at shutdown); either way the schema is migrated at startup. With no `audit`, the
    durable database trail of the store is `app.state.audit_trail`: started at startup (it
    notes an unclean previous shutdown) and flushed and closed at shutdown. Every `/fhir`
    request is authenticated (access tokens verified with `app.state.tokens`) unless
    `settings.auth_disabled`, which logs a warning.
    """
    owned = store is None
    api = FhirApi(store, settings)
    owned_trail = audit is None
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
        if getattr(app.state, "audit_trail", None) is None:
            app.state.audit_trail = durable_trail(api.store, settings)
        trail = app.state.audit_trail
        if owned_trail and isinstance(trail, DatabaseAuditTrail | ProcessAuditTrail):
            trail.start()
        runner.start()  # queued and interrupted bulk jobs resume now
        try:  # a telehealth refusal (its bus) stops what started before it too
            await visits.start(api.store)  # signalling bus, visit rooms, reminders
            yield
        finally:
            await visits.stop()
            runner.stop()
            if owned_trail:
                _close_trail(trail)
            if api.attached:
                await api.store.aclose()
            if owned and api.attached:
                api.store.close()

    oauth = oauth_server(settings, lambda: api.store)
    runner = BulkRunner(lambda: api.store, settings)
    # Starlette tries routes in order and FHIR reads are the hot path, so the FHIR routes
    # come first; their type and id segments never match `.well-known`, AuditEvent or
    # `$operation` segments, whose routes (discovery, the audit log, bulk data) follow
    # (see `route_table._TypeSegment`).
    oauth_routes = OAuthApi(oauth, lambda: api.store).routes()
    routes: list[BaseRoute] = [*api.routes(FHIR_PREFIX), *AuditApi(api).routes(FHIR_PREFIX)]
    routes.extend(BulkApi(api, runner).routes(FHIR_PREFIX))
    routes.extend(MlApi(api).routes())  # $predict, CDS Hooks, model cards
    routes.extend(EverythingApi(api).routes())  # Patient/$everything
    routes.extend(oauth_routes)
    visits = Telehealth(
        telehealth or TelehealthSettings.from_env(),
        issuer=settings.token_issuer,
        store=lambda: api.store,
        ring=lambda: oauth.tokens.ring,
        trail=lambda: getattr(app.state, "audit_trail", None),
        workers=settings.workers,
    )
    routes.extend(
        TelehealthRoutes(
            visits, lambda: getattr(app.state, "audit_trail", None), language=page_language
        ).routes()
    )
    routes.append(Route("/healthz", healthz, methods=["GET"]))
    routes.extend(login_routes())
    routes.extend(oauth_page_routes())
    routes.extend(web_routes())  # the clinician app (/app) and the patient portal (/portal)
    routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        # headers, CORS, rate limit, body limit (refused in a page for browsers)
        middleware=hardening_middleware(settings, browser_refusal),
        exception_handlers={HTTPException: http_exception, Exception: unhandled_exception},
    )
    app.state.fhir = api
    app.state.settings = settings
    app.state.oauth = oauth
    #: the Bulk Data job runner (the lifespan runs it; without one, call `run_pending()`)
    app.state.bulk = runner
    #: telemedicine: scheduling, visit rooms and signalling (`carebase.telehealth`)
    app.state.telehealth = visits
    oauth.users = _AppUsers(app)
    #: the one TokenService of the app (bearer checks use it; revocations apply to it)
    app.state.tokens = oauth.tokens
    # Known now when the store or trail was given; else the lifespan builds it at startup.
    app.state.audit_trail = (
        audit
        if audit is not None
        else (durable_trail(store, settings) if store is not None else None)
    )
    # innermost: headers, CORS preflight, rate and body limits apply to refusals too
    app.user_middleware.append(
        Middleware(Authentication, state=app.state, disabled=settings.auth_disabled)
    )
    return app


class _AppUsers:
    """The app's user directory (`app.state.user_directory`, made on first use like the
    login pages do), for the token endpoint's lookups of a grant's user."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def by_id(self, user_id: str) -> User | None:
        state = self.app.state
        directory: UserDirectory | None = getattr(state, "user_directory", None)
        if directory is None:
            directory = state.user_directory = UserDirectory(state.fhir.store)
        return directory.by_id(user_id)


def oauth_server(settings: Settings, store: Callable[[], Store]) -> OAuthServer:
    """The authorization server: key ring from `settings.keys_dir`, records in `store`."""
    records = OAuthRecords(store)
    revoked = RevokedTokens(records)
    tokens = TokenService.from_settings(settings, is_revoked=revoked.is_revoked)
    config = OAuthConfig(issuer=settings.token_issuer, fhir_base=settings.fhir_base)
    return OAuthServer(records, tokens, revoked, config)


def _close_trail(trail: AuditTrail) -> None:
    """Close the trail at shutdown; a failure is logged (the store must still be closed)."""
    try:
        trail.close()
    except CarebaseError as exc:
        log.error("The audit trail did not close cleanly: %s", exc.message)


def tune_server_process() -> None:
    """Load the definitions now and make the garbage collector suit a server's allocations
    (`data.loader.tune_for_ingest`: ingest builds and drops large JSON trees)."""
    tune_for_ingest()


#: The app factory a server worker process runs (`uvicorn --factory`).
WORKER_FACTORY = "carebase.api.app:app_from_env"


def worker_command(port: int, *options: str, host: str = "127.0.0.1") -> list[str]:
    """The command line of one server worker process on `host`:`port`, configured from
    CAREBASE_* variables, with more uvicorn `options` (`carebase serve` runs the same
    factory in process; tests and benchmarks start workers of their own with this)."""
    return [sys.executable, "-m", "uvicorn", WORKER_FACTORY, "--factory", "--host", host,
            "--port", str(port), "--log-level", "warning", *options]  # fmt: skip


def app_from_env() -> Starlette:
    """The app configured from CAREBASE_* environment variables (for `uvicorn --factory`)."""
    tune_server_process()
    return create_app(Settings.from_env())
