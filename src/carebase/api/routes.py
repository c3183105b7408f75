"""The FHIR REST endpoints: one handler per route of `route_table.ROUTES`.

Handlers translate HTTP (path, query, headers, body) into calls of `interactions`, `listing`
and `bundles`, and their `Result`s back into responses. Reads on SQLite run inline (a primary
key lookup is faster than a thread hop); writes and PostgreSQL calls go to the thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from carebase.api import bundles, interactions, listing, view_run
from carebase.api.access import Guard
from carebase.api.app_state import state_value
from carebase.api.audited import GUARD_KEY, audited
from carebase.api.authentication import PRINCIPAL_KEY, missing_token
from carebase.api.negotiation import body_kind, check_response_format, is_true, reindent, render
from carebase.api.request_body import as_resource, parse_json, read_body
from carebase.api.responses import (
    Shaper,
    fhir_response,
    guarded,
    prefer_return,
    result_response,
)
from carebase.api.results import Context, Result, not_modified, version_headers
from carebase.api.route_table import ROUTES, capability_bytes
from carebase.api.shaping import shaper_for
from carebase.api.view_params import run_parameters
from carebase.auth.audit_entry import AuditTrail
from carebase.config import Settings
from carebase.errors import BadRequest, Gone, NotFound, Unavailable, UnsupportedMediaType
from carebase.fhir.bundle import ID_RE
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.base import Store, Transaction

T = TypeVar("T")


class FhirApi:
    """The FHIR endpoints over one store; `routes(prefix)` lists them for Starlette."""

    def __init__(self, store: Store | None, settings: Settings) -> None:
        self.settings = settings
        self.types = get_definitions().resource_types
        self._store: Store | None = None
        self.inline_reads = False
        self._capability: dict[str, bytes] = {}
        if store is not None:
            self.attach(store)

    def attach(self, store: Store) -> None:
        """Serve from `store` (the app opens it at startup when none was given)."""
        self._store = store
        self.inline_reads = store.dialect == "sqlite"

    @property
    def attached(self) -> bool:
        """Whether a store is attached."""
        return self._store is not None

    @property
    def store(self) -> Store:
        """The store being served."""
        if self._store is None:
            raise RuntimeError("FhirApi has no store yet; the app lifespan attaches it")
        return self._store

    def routes(self, prefix: str = "/fhir") -> list[Route]:
        """Starlette routes for the route table: one route per path, dispatching on method.

        One route per path (not per method) so that a 405 names every method the path
        allows: Starlette reports only the first route whose path matched.
        """
        by_path: dict[str, dict[str, Any]] = {}
        for spec in ROUTES:
            handler = audited(guarded(getattr(self, spec.handler)), spec.handler, self._trail)
            for method in spec.methods:
                by_path.setdefault(spec.path, {})[method] = handler
        return [
            Route(prefix + path, by_method(handlers), methods=list(handlers))
            for path, handlers in by_path.items()
        ]

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _trail(request: Request) -> AuditTrail:
        """The app's audit trail (`app.state.audit_trail`, read per request so it may be
        swapped); none at all is 503: patient data is never served unaudited."""
        trail: AuditTrail | None = state_value(request.scope["app"].state, "audit_trail")
        if trail is None:
            raise Unavailable("The audit trail is not running; try again shortly")
        return trail

    def context(self, request: Request) -> Context:
        """The interaction context with this request's FHIR base URL and access guard."""
        return Context(self.store, self.settings, self.base_url(request), _guard(request))

    def base_url(self, request: Request) -> str:
        """The configured base URL, else the one the client used."""
        if self.settings.base_url:
            return self.settings.base_url.rstrip("/")
        host = request.headers.get("host") or f"{self.settings.host}:{self.settings.port}"
        scheme, root = request.scope.get("scheme", "http"), request.scope.get("root_path", "")
        return f"{scheme}://{host}{root}/fhir"

    async def _reading(self, fn: Callable[..., T], *args: Any) -> T:
        if self.inline_reads:
            return fn(*args)
        return await run_in_threadpool(fn, *args)

    async def _writing(
        self, fn: Callable[[Transaction], T], check: tuple[dict[str, Any], str] | None = None
    ) -> T:
        """Run `fn` in a store transaction on the thread pool, validating `check` first.

        Validation runs in the worker thread (it is CPU work) but before the transaction
        opens, so an invalid resource never holds a database lock.
        """

        def run() -> T:
            if check is not None:
                interactions.check(*check)
            with self.store.transaction() as tx:
                return fn(tx)

        return await run_in_threadpool(run)

    @staticmethod
    def _query(request: Request) -> list[tuple[str, str]]:
        return list(request.query_params.multi_items())

    def _negotiate(self, request: Request) -> bool:
        """Check the response format is JSON; returns `_pretty`."""
        params = request.query_params
        check_response_format(request.headers.get("accept"), params.get("_format"))
        return is_true(params.get("_pretty"))

    def _type(self, request: Request) -> str:
        type_: str = request.path_params["type"]
        if type_ not in self.types:
            interactions.require_type(type_)
        return type_

    async def _body(self, request: Request, *, patch: bool = False) -> tuple[object, str]:
        kind = body_kind(request.headers.get("content-type"), patch=patch)
        raw = await read_body(request, self.settings.max_body_bytes)
        return parse_json(raw, self.settings.max_json_depth), kind

    async def _resource(self, request: Request) -> dict[str, Any]:
        value, _ = await self._body(request)
        return as_resource(value)

    def _respond(self, request: Request, result: Result, shaper: Shaper = None) -> Response:
        return result_response(
            result,
            prefer=prefer_return(request),
            pretty=is_true(request.query_params.get("_pretty")),
            shaper=shaper,
        )

    # --- read (the hot path) ------------------------------------------------------------------

    async def read(self, request: Request) -> Response:
        """GET [base]/Type/id, with conditional read (If-None-Match, If-Modified-Since)."""
        scope = request.scope
        params = scope["path_params"]
        type_: str = params["type"]
        id_: str = params["id"]
        accept = inm = ims = None
        for name, value in scope["headers"]:  # one pass instead of a Headers object
            if name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"if-none-match":
                inm = value.decode("latin-1")
            elif name == b"if-modified-since":
                ims = value.decode("latin-1")
        query = scope["query_string"]
        if query:
            pretty = self._negotiate(request)
        else:
            pretty = False
            if accept:
                check_response_format(accept, None)
        if type_ not in self.types:
            interactions.require_type(type_)
        if ID_RE.fullmatch(id_) is None:
            interactions.require_id(id_)
        guard = _guard(request)
        if self.inline_reads:
            guard.read(self.store, type_, id_)
        else:
            await run_in_threadpool(guard.read, self.store, type_, id_)
        stored = await self.store.read_async(type_, id_)
        if stored is None:
            raise NotFound(f"{type_}/{id_} is not known", location=f"{type_}/{id_}")
        guard.saw(stored)
        if stored.body is None or stored.deleted:
            raise Gone(f"{type_}/{id_} was deleted", headers={"ETag": stored.etag})
        if (inm or ims) and not_modified(stored, inm, ims):
            return Response(status_code=304, headers=version_headers(stored))
        if query:
            shaper = shaper_for(request.query_params)
            if shaper is not None or pretty:
                return result_response(Result(200, stored), pretty=pretty, shaper=shaper)
        return fhir_response(stored.body, 200, version_headers(stored))

    async def vread(self, request: Request) -> Response:
        """GET [base]/Type/id/_history/vid."""
        self._negotiate(request)
        p = request.path_params
        ctx = self.context(request)
        result = await self._reading(
            interactions.vread, ctx, self._type(request), p["id"], p["vid"]
        )
        return self._respond(request, result, shaper_for(request.query_params))

    async def metadata(self, request: Request) -> Response:
        """GET [base]/metadata: the CapabilityStatement (built once per base URL)."""
        pretty = self._negotiate(request)
        base = self.base_url(request)
        body = self._capability.get(base)
        if body is None:
            body = self._capability[base] = capability_bytes(base)
        return fhir_response(reindent(body) if pretty else body)

    # --- search and history -------------------------------------------------------------------

    async def search(self, request: Request) -> Response:
        """GET [base]/Type?params."""
        self._negotiate(request)
        type_ = self._type(request)
        return await self._search(request, type_, self._query(request))

    async def search_system(self, request: Request) -> Response:
        """GET [base]?params: search across all types (`_type` narrows them)."""
        self._negotiate(request)
        return await self._search(request, None, self._query(request))

    async def search_post(self, request: Request) -> Response:
        """POST [base]/Type/_search with a form body (merged with the URL parameters)."""
        self._negotiate(request)
        type_ = self._type(request)
        return await self._search(request, type_, await self._form_query(request))

    async def search_system_post(self, request: Request) -> Response:
        """POST [base]/_search with a form body: search across all types."""
        self._negotiate(request)
        return await self._search(request, None, await self._form_query(request))

    async def search_compartment(self, request: Request) -> Response:
        """GET [base]/Patient/id/Type (or `*`): search inside one patient's compartment."""
        self._negotiate(request)
        type_, compartment = self._compartment(request)
        return await self._search(request, type_, self._query(request), compartment)

    async def search_compartment_post(self, request: Request) -> Response:
        """POST [base]/Patient/id/Type/_search with a form body."""
        self._negotiate(request)
        type_, compartment = self._compartment(request)
        query = await self._form_query(request)
        return await self._search(request, type_, query, compartment)

    def _compartment(self, request: Request) -> tuple[str | None, tuple[str, str]]:
        """(searched type or None for `*`, (compartment type, id)) of a compartment route."""
        p = request.path_params
        kind, id_, type_ = p["compartment"], p["cid"], p["type"]
        if kind != "Patient":
            if kind in self.types:
                raise NotFound(
                    f"Compartment search is supported for Patient only, not {kind}",
                    location="compartment",
                )
            interactions.require_type(kind)
        interactions.require_id(id_)
        if type_ == "*":
            return None, (kind, id_)
        interactions.require_type(type_)
        if type_ != kind and type_ not in get_definitions().patient_compartment:
            raise BadRequest(
                f"{type_} resources are not in the Patient compartment", location="type"
            )
        return type_, (kind, id_)

    async def _form_query(self, request: Request) -> list[tuple[str, str]]:
        """The URL parameters followed by those of an x-www-form-urlencoded body."""
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise UnsupportedMediaType(
                "POST _search takes an application/x-www-form-urlencoded body"
            )
        raw = await read_body(request, self.settings.max_body_bytes)
        try:
            form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError as exc:
            raise BadRequest("The form body is not UTF-8") from exc
        return self._query(request) + form

    async def _search(
        self,
        request: Request,
        type_: str | None,
        params: list[tuple[str, str]],
        compartment: tuple[str, str] | None = None,
    ) -> Response:
        ctx = self.context(request)
        ctx.guard.query = urlencode(params)
        path = "/".join([*compartment, type_ or "*"]) if compartment else type_
        url = f"{ctx.base}/{path}" if path else ctx.base
        shaper = shaper_for(dict(params)) or listing.fragment
        lenient = prefer_lenient(request)
        result = await self._reading(
            lambda: listing.search(
                ctx, type_, params, url, shaper, lenient=lenient, compartment=compartment
            )
        )
        return self._respond(request, result)

    async def history(self, request: Request) -> Response:
        """GET [base]/_history, [base]/Type/_history, [base]/Type/id/_history."""
        self._negotiate(request)
        p = request.path_params
        type_ = self._type(request) if "type" in p else None
        id_ = p.get("id")
        ctx = self.context(request)
        path = "/".join(x for x in (type_, id_) if x)
        url = f"{ctx.base}/{path + '/' if path else ''}_history"
        params = self._query(request)
        result = await self._reading(listing.history, ctx, type_, id_, params, url)
        return self._respond(request, result)

    # --- writes -------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        """POST [base]/Type, conditional with If-None-Exist."""
        self._negotiate(request)
        type_ = self._type(request)
        resource = await self._resource(request)
        ctx = self.context(request)
        inx = request.headers.get("if-none-exist")
        result = await self._writing(
            lambda tx: interactions.create(
                ctx, tx, type_, resource, if_none_exist=inx, validate=False
            ),
            (resource, type_),
        )
        return self._respond(request, result)

    async def update(self, request: Request) -> Response:
        """PUT [base]/Type/id (update, or create with the client's id)."""
        self._negotiate(request)
        type_ = self._type(request)
        id_ = interactions.require_id(request.path_params["id"])
        resource = await self._resource(request)
        ctx = self.context(request)
        h = request.headers
        if_match, if_none_match = h.get("if-match"), h.get("if-none-match")
        interactions.check_body_id(type_, id_, resource)
        result = await self._writing(
            lambda tx: interactions.update(
                ctx, tx, type_, id_, resource, if_match=if_match,
                if_none_match=if_none_match, validate=False,
            ),
            (resource, type_),
        )  # fmt: skip
        return self._respond(request, result)

    async def conditional_update(self, request: Request) -> Response:
        """PUT [base]/Type?criteria."""
        self._negotiate(request)
        type_ = self._type(request)
        resource = await self._resource(request)
        ctx = self.context(request)
        query, if_match = self._query(request), request.headers.get("if-match")
        result = await self._writing(
            lambda tx: interactions.conditional_update(
                ctx, tx, type_, query, resource, if_match=if_match, validate=False
            ),
            (resource, type_),
        )
        return self._respond(request, result)

    async def delete(self, request: Request) -> Response:
        """DELETE [base]/Type/id."""
        self._negotiate(request)
        type_ = self._type(request)
        id_ = interactions.require_id(request.path_params["id"])
        ctx, if_match = self.context(request), request.headers.get("if-match")
        result = await self._writing(
            lambda tx: interactions.delete(ctx, tx, type_, id_, if_match=if_match)
        )
        return self._respond(request, result)

    async def conditional_delete(self, request: Request) -> Response:
        """DELETE [base]/Type?criteria."""
        self._negotiate(request)
        type_ = self._type(request)
        ctx, query = self.context(request), self._query(request)
        result = await self._writing(
            lambda tx: interactions.conditional_delete(ctx, tx, type_, query)
        )
        return self._respond(request, result)

    async def patch(self, request: Request) -> Response:
        """PATCH [base]/Type/id with JSON Patch or FHIRPath Patch."""
        self._negotiate(request)
        type_ = self._type(request)
        id_ = interactions.require_id(request.path_params["id"])
        body, kind = await self._body(request, patch=True)
        ctx, if_match = self.context(request), request.headers.get("if-match")
        result = await self._writing(
            lambda tx: interactions.patch(ctx, tx, type_, id_, body, kind, if_match=if_match)
        )
        return self._respond(request, result)

    async def conditional_patch(self, request: Request) -> Response:
        """PATCH [base]/Type?criteria."""
        self._negotiate(request)
        type_ = self._type(request)
        body, kind = await self._body(request, patch=True)
        ctx, query = self.context(request), self._query(request)
        if_match = request.headers.get("if-match")
        result = await self._writing(
            lambda tx: interactions.conditional_patch(
                ctx, tx, type_, query, body, kind, if_match=if_match
            )
        )
        return self._respond(request, result)

    # --- operations and bundles ---------------------------------------------------------------

    async def validate(self, request: Request) -> Response:
        """POST [base]/Type/$validate and [base]/Type/id/$validate."""
        self._negotiate(request)
        type_ = self._type(request)
        resource = await self._resource(request)
        ctx, id_ = self.context(request), request.path_params.get("id")
        params = self._query(request)
        result = await run_in_threadpool(interactions.validate, ctx, type_, id_, resource, params)
        return self._respond(request, result)

    async def view_run(self, request: Request) -> Response:
        """GET/POST [base]/$viewdefinition-run, [base]/ViewDefinition/$viewdefinition-run and
        [base]/ViewDefinition/id/$viewdefinition-run: a view's rows as csv, ndjson, json or
        parquet, streamed (see `api.view_run`)."""
        body = None
        if request.method == "POST":
            body, _ = await self._body(request)
        params = run_parameters(self._query(request), body, request.headers.get("accept"))
        id_ = request.path_params.get("id")
        if id_ is not None:
            interactions.require_id(id_)
        ctx = self.context(request)
        run = await run_in_threadpool(view_run.start_run, ctx, params, id_)
        return StreamingResponse(run.chunks, media_type=run.media_type)

    async def bundle(self, request: Request) -> Response:
        """POST [base]: process a transaction or batch Bundle."""
        pretty = self._negotiate(request)
        body_kind(request.headers.get("content-type"))
        raw = await read_body(request, self.settings.max_body_bytes)
        ctx, prefer = self.context(request), prefer_return(request)
        max_depth = self.settings.max_json_depth

        def run() -> bytes:
            # Parsing and rendering happen on the worker thread too: Bundles are megabytes,
            # and CPU work on the event loop would contend for the GIL with the transaction.
            resource = as_resource(parse_json(raw, max_depth))
            if resource.get("resourceType") != "Bundle":
                kind = resource.get("resourceType")
                raise BadRequest(
                    f"POST to [base] takes a transaction or batch Bundle; POST a {kind} to "
                    f"[base]/{kind}"
                )
            return render(bundles.process(ctx, resource, prefer), pretty=pretty)

        return fhir_response(await run_in_threadpool(run))


def _guard(request: Request) -> Guard:
    """The request's access guard: the one `audited` put there, else one for the
    authenticated principal (routes of other modules, such as the audit log's, use
    `FhirApi.context` too); no principal at all is 401 (deny by default)."""
    scope = request.scope
    guard: Guard | None = scope.get(GUARD_KEY)
    if guard is None:
        principal = scope.get(PRINCIPAL_KEY)
        if principal is None:
            raise missing_token()
        guard = scope[GUARD_KEY] = Guard(principal)
    return guard


def prefer_lenient(request: Request) -> bool:
    """Whether `Prefer: handling=lenient` asks to ignore unknown search parameters (the
    default, and `handling=strict`, refuses them with 400)."""
    prefer = request.headers.get("prefer")
    if not prefer:
        return False
    for part in prefer.replace(";", ",").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "handling":
            return value.strip().strip('"').lower() == "lenient"
    return False


def by_method(handlers: dict[str, Any]) -> Any:
    """An endpoint calling the handler for the request's method (HEAD is served as GET)."""
    if "GET" in handlers:
        handlers.setdefault("HEAD", handlers["GET"])

    async def endpoint(request: Request) -> Response:
        response: Response = await handlers[request.method](request)
        return response

    return endpoint
