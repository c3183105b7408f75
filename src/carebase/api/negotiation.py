"""Content negotiation: `_format`, Accept, body Content-Type, `_pretty` and JSON rendering.

carebase speaks FHIR JSON only; XML and RDF requests get a clear 406/415 saying so.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from carebase.errors import NotAcceptable, UnsupportedMediaType
from carebase.fhir import json_io

FHIR_JSON = "application/fhir+json"
FHIR_JSON_UTF8 = "application/fhir+json; charset=utf-8"
JSON_PATCH = "application/json-patch+json"

#: Media types (and `_format` shorthands) that mean FHIR JSON.
JSON_TYPES = frozenset(
    {FHIR_JSON, "application/json", "application/json+fhir", "text/json", "json"}
)
_WILDCARDS = frozenset({"*/*", "application/*", "text/*"})
XML_TYPES = frozenset(
    {"xml", "text/xml", "application/xml", "application/fhir+xml", "application/xml+fhir"}
)
_RDF_TYPES = frozenset({"ttl", "text/turtle", "application/fhir+turtle"})

BodyKind = Literal["json", "json-patch"]

_JSON_ONLY = (
    "this server produces FHIR JSON only; use _format=json or "
    "Accept: application/fhir+json (or application/json)"
)


def _media_type(value: str) -> tuple[str, dict[str, str]]:
    """A media type lower-cased without parameters, and its parameters."""
    kind, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        name, eq, val = part.partition("=")
        if eq:
            params[name.strip().lower()] = val.strip().strip('"').lower()
    return kind.strip().lower(), params


@lru_cache(maxsize=256)
def check_accept(accept: str) -> None:
    """Raise NotAcceptable unless the Accept header allows a JSON response."""
    ranges = [_media_type(r) for r in accept.split(",") if r.strip()]
    if not ranges:
        return
    wanted = []
    for kind, params in ranges:
        if params.get("q") in ("0", "0.0", "0.00", "0.000"):
            continue
        if kind in JSON_TYPES or kind in _WILDCARDS or kind.endswith("+json"):
            return
        wanted.append(kind)
    if any(kind in XML_TYPES for kind in wanted):
        raise NotAcceptable(f"XML is not supported: {_JSON_ONLY}")
    raise NotAcceptable(f"Cannot produce any of Accept: {accept!r}; {_JSON_ONLY}")


@lru_cache(maxsize=64)
def check_format(value: str) -> None:
    """Raise NotAcceptable unless the `_format` parameter asks for JSON."""
    kind, _ = _media_type(value.replace(" ", "+"))
    if kind in JSON_TYPES:
        return
    if kind in XML_TYPES:
        raise NotAcceptable(f"_format={value} is not supported: {_JSON_ONLY}", location="_format")
    if kind in _RDF_TYPES:
        raise NotAcceptable(f"_format={value} (RDF) is not supported: {_JSON_ONLY}")
    raise NotAcceptable(f"Unknown _format={value!r}: {_JSON_ONLY}", location="_format")


def check_response_format(accept: str | None, format_param: str | None) -> None:
    """Check both `_format` (which wins, per FHIR) and Accept allow a JSON response."""
    if format_param is not None:
        check_format(format_param)
    elif accept:
        check_accept(accept)


@lru_cache(maxsize=64)
def body_kind(content_type: str | None, *, patch: bool = False) -> BodyKind:
    """Classify a request body's Content-Type, or raise UnsupportedMediaType (415)."""
    expected = f"{FHIR_JSON} or application/json"
    if patch:
        expected = f"{JSON_PATCH} (JSON Patch) or {FHIR_JSON} (FHIRPath Patch Parameters)"
    if not content_type:
        raise UnsupportedMediaType(f"Missing Content-Type; send the body as {expected}")
    kind, params = _media_type(content_type)
    charset = params.get("charset")
    if charset and charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"charset={charset} is not supported; send UTF-8 JSON")
    if patch and kind == JSON_PATCH:
        return "json-patch"
    if kind in JSON_TYPES and kind != "json":
        return "json"
    if kind in XML_TYPES or kind.endswith("+xml"):
        raise UnsupportedMediaType(f"XML bodies are not supported; send {expected}")
    raise UnsupportedMediaType(f"Content-Type {kind!r} is not supported; send {expected}")


def is_true(value: str | None) -> bool:
    """A boolean query flag such as `_pretty=true`."""
    return value is not None and value.lower() == "true"


def render(value: object, *, pretty: bool = False) -> bytes:
    """Serialise a JSON value (dicts may hold orjson.Fragment bodies) to bytes."""
    data = json_io.dumps(value)
    # Fragments are copied verbatim, so pretty output goes through a re-parse.
    return reindent(data) if pretty else data


def reindent(body: bytes) -> bytes:
    """Pretty-print compact stored JSON bytes."""
    return json_io.dumps(json_io.loads(body), pretty=True)
