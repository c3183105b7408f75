"""Transaction and batch processing (POST of a transaction/batch Bundle to [base]).

A transaction runs all its writes inside ONE store transaction: ids are assigned up front,
`urn:uuid:`/fullUrl and conditional references are rewritten, entries run in the order the
spec prescribes (DELETE, POST, PUT/PATCH, GET), and any error rolls everything back with an
OperationOutcome naming `Bundle.entry[i]`. GET entries run after the commit so they see the
transaction's writes. A batch runs each entry in its own store transaction and reports
errors per entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from carebase.api import interactions
from carebase.api.rest_urls import run_read_url
from carebase.api.results import Context, Result, instant
from carebase.auth.audit_access import AUDIT_TYPE
from carebase.errors import (
    BadRequest,
    CarebaseError,
    InvalidResource,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
)
from carebase.fhir import json_io, operation_outcome
from carebase.fhir.bundle import (
    CONDITIONAL_REF_RE,
    BundleEntry,
    full_url_aliases,
    parse_bundle,
    processing_order,
    rewrite_references,
)
from carebase.store.base import Transaction
from carebase.store.ids import new_id

Resource = dict[str, Any]
log = logging.getLogger("carebase.api")


def process(ctx: Context, bundle: object, prefer: str | None = None) -> dict[str, object]:
    """Process a transaction or batch Bundle; returns the response Bundle."""
    kind, entries = parse_bundle(bundle, ctx.base)
    ctx.guard.interaction = kind
    if kind == "transaction":
        results = run_transaction(ctx, entries)
        return response_bundle(ctx, "transaction-response", entries, results, prefer)
    return response_bundle(ctx, "batch-response", entries, run_batch(ctx, entries), prefer)


def entry_error(exc: CarebaseError, entry: BundleEntry) -> CarebaseError:
    """The same kind of error, its issue locations re-rooted at `Bundle.entry[i]`."""
    issues = operation_outcome.prefix_locations(exc.issues, entry.location)
    for issue in issues:
        if not issue.diagnostics.startswith("Bundle.entry["):
            issue.diagnostics = (
                f"{entry.location} ({entry.method} {entry.url}): {issue.diagnostics}"
            )
    return type(exc)(issues=issues, headers=exc.headers)


# --- transaction ------------------------------------------------------------------------------


def run_transaction(ctx: Context, entries: list[BundleEntry]) -> dict[int, Result]:
    """Run a transaction's entries all-or-nothing; results keyed by entry index."""
    _prevalidate(entries)
    ordered = processing_order(entries)
    results: dict[int, Result] = {}
    with ctx.store.transaction() as tx:
        plan = _Plan(ctx, tx)
        for entry in ordered:
            plan.resolve_identity(entry)
        for entry in ordered:
            if entry.resource is not None:
                plan.rewrite(entry)
        for entry in ordered:
            if entry.method in ("GET", "HEAD"):
                continue
            try:
                results[entry.index] = plan.execute(entry)
            except CarebaseError as exc:
                raise entry_error(exc, entry) from exc
    for entry in ordered:
        if entry.method in ("GET", "HEAD"):
            results[entry.index] = _safe(partial(run_read_url, ctx, entry), entry)
    return results


def _prevalidate(entries: list[BundleEntry]) -> None:
    """Check types, ids and resources of all write entries before touching the store."""
    issues = []
    for entry in entries:
        try:
            if entry.method in ("GET", "HEAD"):
                continue
            type_ = entry.target.type
            if type_ is None or entry.target.operation or entry.target.history:
                raise BadRequest(f"{entry.method} {entry.url} is not supported in a transaction")
            interactions.require_type(type_)
            if entry.target.id is not None:
                interactions.require_id(entry.target.id)
            if entry.method in ("POST", "PUT") and entry.resource is not None:
                interactions.check(entry.resource, type_)
        except InvalidResource as exc:
            issues.extend(entry_error(exc, entry).issues)
        except CarebaseError as exc:
            raise entry_error(exc, entry) from exc
    if issues:
        raise InvalidResource(issues=issues)


class _Plan:
    """Identity resolution and reference rewriting for one transaction."""

    def __init__(self, ctx: Context, tx: Transaction) -> None:
        self.ctx = ctx
        self.tx = tx
        self.mapping: dict[str, str] = {}  # fullUrl / conditional reference -> Type/id
        self.ids: dict[int, str | None] = {}  # entry index -> resolved id (None: no match)
        self.existing: set[int] = set()  # POST entries whose If-None-Exist matched
        self.seen_targets: dict[tuple[str, str], int] = {}
        self.seen_full_urls: dict[str, int] = {}

    def resolve_identity(self, entry: BundleEntry) -> None:
        """Decide which Type/id each write entry touches; refuse duplicates."""
        if entry.method in ("GET", "HEAD"):
            return
        try:
            self._resolve(entry)
        except CarebaseError as exc:
            raise entry_error(exc, entry) from exc

    def _resolve(self, entry: BundleEntry) -> None:
        type_ = entry.target.type
        assert type_ is not None
        tx = self.tx
        id_: str | None = entry.target.id
        if entry.method == "POST":
            found = None
            if entry.if_none_exist:
                params = interactions.criteria(entry.if_none_exist, "ifNoneExist")
                found = interactions.match_one(self.ctx, tx, type_, params, "ifNoneExist")
            if found is not None:
                self.existing.add(entry.index)
            id_ = found or new_id()
        elif id_ is None:
            what = f"Conditional {entry.method.lower()}"
            params = interactions.criteria(entry.target.query, what)
            id_ = interactions.match_one(self.ctx, tx, type_, params, what)
            if id_ is None and entry.method == "PUT":
                body_id = (entry.resource or {}).get("id")
                id_ = body_id if isinstance(body_id, str) else new_id()
        self.ids[entry.index] = id_
        if id_ is not None:
            previous = self.seen_targets.setdefault((type_, id_), entry.index)
            if previous != entry.index:
                raise BadRequest(
                    f"{type_}/{id_} is the target of both Bundle.entry[{previous}] and this "
                    "entry; a transaction may touch each resource only once"
                )
        if entry.full_url and entry.method in ("POST", "PUT"):
            previous = self.seen_full_urls.setdefault(entry.full_url, entry.index)
            if previous != entry.index:
                raise BadRequest(
                    f"fullUrl {entry.full_url} is used by Bundle.entry[{previous}] too; "
                    "fullUrls must be unique"
                )
            if id_ is not None:
                for alias in full_url_aliases(entry.full_url):
                    self.mapping.setdefault(alias, f"{type_}/{id_}")

    def rewrite(self, entry: BundleEntry) -> None:
        """Resolve conditional references, then rewrite every mapped reference."""
        resource = entry.resource
        assert resource is not None
        try:
            rewrite_references(resource, self.mapping, self._resolve_conditional)
        except CarebaseError as exc:
            raise entry_error(exc, entry) from exc

    def _resolve_conditional(self, ref: str) -> str:
        """The `Type/id` a conditional reference stands for (remembered in the mapping)."""
        if ref not in self.mapping:
            self.mapping[ref] = self._search_conditional(ref)
        return self.mapping[ref]

    def _search_conditional(self, ref: str) -> str:
        match = CONDITIONAL_REF_RE.fullmatch(ref)
        assert match is not None
        type_ = interactions.require_type(match.group(1))
        params = interactions.criteria(match.group(2), f"Conditional reference {ref}")
        restriction = self.ctx.guard.conditional(type_)
        ids = self.tx.search_ids(type_, params, limit=2, restriction=restriction)
        if len(ids) != 1:
            raise PreconditionFailed(
                f"Conditional reference {ref} matches "
                f"{'no' if not ids else 'more than one'} {type_}; it must match exactly one",
                location="reference",
            )
        return f"{type_}/{ids[0]}"

    def execute(self, entry: BundleEntry) -> Result:
        """Run one write entry with its resolved identity."""
        ctx, tx, type_ = self.ctx, self.tx, entry.target.type
        assert type_ is not None
        if type_ == AUDIT_TYPE:
            # [base]/AuditEvent is the audit log, which only the server writes (audit_routes)
            raise MethodNotAllowed(
                f"{entry.method} {type_}: the audit log is append-only; carebase writes "
                "AuditEvents itself"
            )
        id_ = self.ids.get(entry.index)
        if entry.method == "POST":
            assert id_ is not None and entry.resource is not None
            if entry.index in self.existing:
                return interactions.create(
                    ctx,
                    tx,
                    type_,
                    entry.resource,
                    if_none_exist=entry.if_none_exist,
                    validate=False,
                )
            return interactions.create(ctx, tx, type_, entry.resource, id_=id_, validate=False)
        if entry.method == "PUT":
            assert id_ is not None and entry.resource is not None
            if entry.target.id is None:
                entry.resource.setdefault("id", id_)
            return interactions.update(
                ctx,
                tx,
                type_,
                id_,
                entry.resource,
                if_match=entry.if_match,
                if_none_match=entry.if_none_match,
                validate=False,
            )
        if entry.method == "DELETE":
            if id_ is None:
                return Result(
                    200, outcome=operation_outcome.information("No match; nothing deleted")
                )
            return interactions.delete(ctx, tx, type_, id_, if_match=entry.if_match)
        if id_ is None:
            raise NotFound(f"Conditional patch: no {type_} matches the criteria")
        body, kind = patch_body(entry)
        return interactions.patch(ctx, tx, type_, id_, body, kind, if_match=entry.if_match)


def patch_body(entry: BundleEntry) -> tuple[object, str]:
    """The patch document of a PATCH entry: FHIRPath Parameters, or JSON Patch in a Binary."""
    resource = entry.resource
    if resource is None:
        raise BadRequest("A PATCH entry needs a Parameters or Binary resource")
    if resource.get("resourceType") == "Binary":
        import base64

        try:
            return json_io.loads(base64.b64decode(str(resource.get("data", "")))), "json-patch"
        except ValueError as exc:  # JSONDecodeError is a ValueError
            raise BadRequest("The Binary.data of a PATCH entry is not a JSON Patch") from exc
    return resource, "json"


# --- batch ------------------------------------------------------------------------------------


def run_batch(ctx: Context, entries: list[BundleEntry]) -> dict[int, Result]:
    """Run each entry on its own; an entry's error becomes its response."""
    results: dict[int, Result] = {}
    for entry in entries:
        if entry.method in ("GET", "HEAD"):
            results[entry.index] = _safe(partial(run_read_url, ctx, entry), entry)
        else:
            results[entry.index] = _safe(partial(_batch_write, ctx, entry), entry)
    return results


def _batch_write(ctx: Context, entry: BundleEntry) -> Result:
    _prevalidate([entry])
    with ctx.store.transaction() as tx:
        plan = _Plan(ctx, tx)
        plan.resolve_identity(entry)
        if entry.resource is not None:
            plan.rewrite(entry)
        return plan.execute(entry)


def _safe(run: Callable[[], Result], entry: BundleEntry) -> Result:
    """Run one independent entry; any failure becomes that entry's error response."""
    try:
        return run()
    except CarebaseError as exc:
        failed = entry_error(exc, entry)
        return Result(failed.status, outcome=failed.operation_outcome())
    except Exception:
        log.exception("Unhandled error in %s (%s %s)", entry.location, entry.method, entry.url)
        message = f"{entry.location}: internal server error; the server log has the details"
        return Result(500, outcome=operation_outcome.error_outcome(message))


# --- response ---------------------------------------------------------------------------------


def response_bundle(
    ctx: Context,
    kind: str,
    entries: list[BundleEntry],
    results: dict[int, Result],
    prefer: str | None,
) -> dict[str, object]:
    """The transaction-/batch-response Bundle, entries in the request's order."""
    out = [response_entry(ctx, results[entry.index], prefer, entry) for entry in entries]
    return {"resourceType": "Bundle", "type": kind, "entry": out}


def response_entry(
    ctx: Context, result: Result, prefer: str | None, entry: BundleEntry
) -> dict[str, object]:
    """One Bundle.entry for a result: response status/location/etag/lastModified/outcome."""
    item: dict[str, object] = {}
    response: dict[str, object] = {"status": result.status_line}
    stored = result.stored
    if result.location:
        response["location"] = result.location
    if stored is not None:
        item["fullUrl"] = ctx.url_of(stored)
        response["etag"] = stored.etag
        response["lastModified"] = instant(stored.last_updated)
    elif "ETag" in result.headers:
        response["etag"] = result.headers["ETag"]
    mode = prefer or "representation"
    if result.outcome is not None and (result.status >= 400 or mode == "OperationOutcome"):
        response["outcome"] = result.outcome
    if entry.method != "HEAD" and result.status != 304:
        if stored is not None and stored.body is not None:
            if not result.preferable or mode == "representation":
                item["resource"] = orjson.Fragment(stored.body)
        elif result.body is not None:
            item["resource"] = result.body
    item["response"] = response
    return item
