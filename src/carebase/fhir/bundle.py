"""Pure helpers for transaction and batch Bundles: parsing, ordering, reference rewriting.

No I/O here: the API layer (`carebase.api.bundles`) resolves ids and conditional references
against the store and then uses these helpers to rewrite the resources.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from carebase.errors import BadRequest

#: FHIR resource ids (R4 `id` datatype).
ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
#: A conditional reference: `Type?criteria`.
CONDITIONAL_REF_RE = re.compile(r"([A-Z][A-Za-z]+)\?(.*)", re.S)
_TYPE_RE = re.compile(r"[A-Z][A-Za-z]+")

#: Order in which transaction entries are processed (FHIR R4 http.html#trules).
METHOD_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
BUNDLE_KINDS = ("transaction", "batch")


@dataclass(slots=True)
class RequestUrl:
    """A FHIR REST URL split into its parts (relative to the server base).

    `Patient/1/_history/2?x=y` gives type "Patient", id "1", history True, version "2",
    query [("x", "y")]; `Patient/$validate` gives operation "$validate"; `Patient/_search`
    gives operation "_search".
    """

    type: str | None = None
    id: str | None = None
    history: bool = False
    version: str | None = None
    operation: str | None = None
    query: list[tuple[str, str]] = field(default_factory=list)
    has_query: bool = False


@dataclass(slots=True)
class BundleEntry:
    """One entry of a transaction or batch Bundle with its request parsed."""

    index: int
    method: str
    url: str
    target: RequestUrl
    full_url: str | None
    resource: dict[str, object] | None
    if_match: str | None = None
    if_none_match: str | None = None
    if_none_exist: str | None = None
    if_modified_since: str | None = None

    @property
    def location(self) -> str:
        """FHIRPath location of this entry in the Bundle, for error messages."""
        return f"Bundle.entry[{self.index}]"


def parse_request_url(url: str, base: str | None = None) -> RequestUrl:
    """Split a FHIR REST URL (relative, or absolute under `base`) into a `RequestUrl`."""
    raw = url.strip()
    if base and raw.startswith(base.rstrip("/") + "/"):
        raw = raw[len(base.rstrip("/")) + 1 :]
    elif "://" in raw and base:
        raise BadRequest(
            f"request.url '{url}' points at another server; use a URL relative to this "
            f"server's base ({base.rstrip('/')})"
        )
    elif "://" in raw:
        parts = urlsplit(raw)
        path = parts.path
        marker = path.find("/fhir/")
        raw = (path[marker + 6 :] if marker >= 0 else path.lstrip("/")) + (
            "?" + parts.query if parts.query else ""
        )
    path, qmark, query = raw.partition("?")
    segments = [s for s in path.strip("/").split("/") if s]
    out = RequestUrl(query=parse_qsl(query, keep_blank_values=True), has_query=bool(qmark))
    if not segments:
        return out
    head = segments[0]
    if head.startswith(("$", "_")) or head == "metadata":
        out.operation = head
        segments = segments[1:]
        if segments:
            raise BadRequest(f"Unsupported request URL '{url}'")
        return out
    out.type = head
    rest = segments[1:]
    if rest and (rest[0] in ("_search", "_history") or rest[0].startswith("$")):
        if rest[0] == "_history":
            out.history = True
        else:
            out.operation = rest[0]
        rest = rest[1:]
    elif rest:
        out.id = rest[0]
        rest = rest[1:]
        if rest and rest[0] == "_history":
            out.history = True
            rest = rest[1:]
            if rest:
                out.version = rest[0]
                rest = rest[1:]
        elif rest and rest[0].startswith("$"):
            out.operation = rest[0]
            rest = rest[1:]
    if rest:
        raise BadRequest(f"Unsupported request URL '{url}'")
    return out


def _as_str(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{where} must be a string", location=where)
    return value


def parse_bundle(bundle: object, base: str | None = None) -> tuple[str, list[BundleEntry]]:
    """Check a transaction/batch Bundle and return its kind and parsed entries.

    Raises BadRequest naming the offending `Bundle.entry[i]` element.
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("Expected a Bundle resource of type transaction or batch")
    kind = bundle.get("type")
    if kind not in BUNDLE_KINDS:
        raise BadRequest(
            f"Bundle.type must be 'transaction' or 'batch' to be processed, not {kind!r}; "
            "POST other bundles to [base]/Bundle to store them",
            location="Bundle.type",
        )
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise BadRequest("Bundle.entry must be an array", location="Bundle.entry")
    entries: list[BundleEntry] = []
    for i, raw in enumerate(raw_entries):
        where = f"Bundle.entry[{i}]"
        if not isinstance(raw, dict):
            raise BadRequest(f"{where} must be an object", location=where)
        request = raw.get("request")
        if not isinstance(request, dict):
            raise BadRequest(f"{where}.request is required", location=f"{where}.request")
        method = request.get("method")
        if not isinstance(method, str) or method not in METHOD_ORDER:
            raise BadRequest(
                f"{where}.request.method must be one of GET, HEAD, POST, PUT, PATCH, DELETE",
                location=f"{where}.request.method",
            )
        url = request.get("url")
        if not isinstance(url, str) or not url.strip():
            raise BadRequest(f"{where}.request.url is required", location=f"{where}.request.url")
        resource = raw.get("resource")
        if resource is not None and not isinstance(resource, dict):
            raise BadRequest(f"{where}.resource must be an object", location=f"{where}.resource")
        if method in ("POST", "PUT") and resource is None:
            raise BadRequest(
                f"{where}.resource is required for {method}", location=f"{where}.resource"
            )
        try:
            target = parse_request_url(url, base)
        except BadRequest as exc:
            raise BadRequest(exc.message, location=f"{where}.request.url") from exc
        entries.append(
            BundleEntry(
                index=i,
                method=method,
                url=url,
                target=target,
                full_url=_as_str(raw.get("fullUrl"), f"{where}.fullUrl"),
                resource=resource,
                if_match=_as_str(request.get("ifMatch"), f"{where}.request.ifMatch"),
                if_none_match=_as_str(request.get("ifNoneMatch"), f"{where}.request.ifNoneMatch"),
                if_none_exist=_as_str(request.get("ifNoneExist"), f"{where}.request.ifNoneExist"),
                if_modified_since=_as_str(
                    request.get("ifModifiedSince"), f"{where}.request.ifModifiedSince"
                ),
            )
        )
    return kind, entries


def processing_order(entries: list[BundleEntry]) -> list[BundleEntry]:
    """Entries in transaction processing order: DELETE, POST, PUT/PATCH, then GET/HEAD.

    The sort is stable, so entries with the same method keep their Bundle order.
    """
    return sorted(entries, key=lambda e: METHOD_ORDER[e.method])


def rewrite_references(
    node: object,
    mapping: dict[str, str],
    resolve_conditional: Callable[[str], str] | None = None,
) -> int:
    """Replace, in place, every string equal to a key of `mapping` by its value.

    This covers `Reference.reference` anywhere (contained resources, extensions), uri and
    canonical elements holding a `urn:uuid:`, and `href`/`src` inside narrative `div`s. A
    conditional reference (`Type?criteria` in a `reference`) is replaced by what
    `resolve_conditional` returns (which should remember it in `mapping`); without a
    resolver they are left alone. One walk does both, because on ingest every walk over
    every resource counts. Returns the number of replacements.
    """
    if not mapping and resolve_conditional is None:
        return 0
    count = 0
    replace_in_div = _div_replacer(mapping)
    stack: list[object] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                if isinstance(value, str):
                    if value in mapping:
                        current[key] = mapping[value]
                        count += 1
                    elif key == "div" and "urn:" in value:
                        new = replace_in_div(value)
                        if new != value:
                            current[key] = new
                            count += 1
                    elif (
                        key == "reference"
                        and resolve_conditional is not None
                        and "?" in value
                        and CONDITIONAL_REF_RE.fullmatch(value)
                    ):
                        current[key] = resolve_conditional(value)
                        count += 1
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(current, list):
            for i, value in enumerate(current):
                if isinstance(value, str) and value in mapping:
                    current[i] = mapping[value]
                    count += 1
                elif isinstance(value, dict | list):
                    stack.append(value)
    return count


_DIV_URN_RE = re.compile(r"""((?:href|src)\s*=\s*["'])(urn:[^"']+)(["'])""")


def _div_replacer(mapping: dict[str, str]) -> Callable[[str], str]:
    """Rewrites `href`/`src` attributes whose value is a key of `mapping`.

    One generic pattern plus a dictionary lookup: compiling a pattern of all the Bundle's
    fullUrls would cost more than the rest of the ingest for a 500-entry Bundle.
    """

    def replace(match: re.Match[str]) -> str:
        target = mapping.get(match.group(2))
        return match.group(0) if target is None else match.group(1) + target + match.group(3)

    return lambda text: _DIV_URN_RE.sub(replace, text)


def full_url_aliases(full_url: str) -> list[str]:
    """The spellings by which other entries may refer to the entry with this fullUrl.

    Always the fullUrl itself; for an absolute RESTful fullUrl (`http://x/fhir/Patient/1`)
    also its relative `Patient/1` form, which references in the same Bundle resolve to.
    """
    aliases = [full_url]
    if full_url.startswith(("http://", "https://")):
        tail = urlsplit(full_url).path.rstrip("/").split("/")
        if len(tail) >= 2 and _TYPE_RE.fullmatch(tail[-2]) and ID_RE.fullmatch(tail[-1]):
            aliases.append(f"{tail[-2]}/{tail[-1]}")
    return aliases


def is_valid_id(value: str) -> bool:
    """True when `value` is a valid FHIR resource id."""
    return ID_RE.fullmatch(value) is not None


def is_type_name(value: str) -> bool:
    """True when `value` looks like a resource type name (the definitions decide if known)."""
    return _TYPE_RE.fullmatch(value) is not None
