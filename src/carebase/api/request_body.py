"""Reading request bodies safely: size limit, orjson parsing, nesting depth, resource shape."""

from __future__ import annotations

import json

import orjson
from starlette.requests import Request

from carebase.errors import BadRequest, TooLarge
from carebase.fhir import json_io


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refusing (413) anything over `max_bytes` without reading past the limit."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError as exc:
            raise BadRequest(f"Content-Length {declared!r} is not a number") from exc
        if length > max_bytes:
            raise TooLarge(_too_large(max_bytes))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(_too_large(max_bytes))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> str:
    return (
        f"Request body is larger than the limit of {max_bytes} bytes "
        "(CAREBASE_MAX_BODY_BYTES); split the upload into smaller Bundles"
    )


def parse_json(raw: bytes, max_depth: int, *, exact_decimals: bool = True) -> object:
    """Parse JSON bytes (decimals keep their precision, unless `exact_decimals` is False:
    for bodies only read, never stored or echoed, such as a CDS Hooks request's prefetch,
    where floats serve and parsing is several times faster); 400 naming where it is
    malformed."""
    if not raw.strip():
        raise BadRequest("The request body is empty; send a FHIR JSON resource")
    try:
        value = json_io.loads(raw) if exact_decimals else orjson.loads(raw)
    except json.JSONDecodeError as exc:  # orjson's error is a subclass
        if "depth" in exc.msg or "recursion" in exc.msg:  # the parser's own ceiling (1024)
            raise _too_deep(max_depth) from exc
        raise BadRequest(
            f"Malformed JSON at line {exc.lineno}, column {exc.colno} "
            f"(byte offset {exc.pos}): {exc.msg}"
        ) from exc
    check_depth(value, max_depth)
    return value


def check_depth(value: object, max_depth: int) -> None:
    """Raise BadRequest when arrays/objects nest deeper than `max_depth`."""
    if not _within_depth(value, max_depth):
        raise _too_deep(max_depth)


def _too_deep(max_depth: int) -> BadRequest:
    return BadRequest(
        f"JSON nests deeper than the limit of {max_depth} levels (CAREBASE_MAX_JSON_DEPTH)"
    )


def _within_depth(node: object, remaining: int) -> bool:
    # Recursion is bounded by `remaining` (the configured limit), and is about three times
    # faster than an explicit stack of (node, depth) tuples; every ingested byte passes here.
    if type(node) is not dict and type(node) is not list:
        return True
    if remaining <= 0:
        return False
    children = node.values() if type(node) is dict else node
    for child in children:
        kind = type(child)
        if (kind is dict or kind is list) and not _within_depth(child, remaining - 1):
            return False
    return True


def as_resource(value: object) -> dict[str, object]:
    """The parsed body as a resource object, or 400 if it has no `resourceType`."""
    if not isinstance(value, dict):
        raise BadRequest("The request body must be a JSON object (a FHIR resource)")
    kind = value.get("resourceType")
    if not isinstance(kind, str) or not kind:
        raise BadRequest(
            "The request body has no resourceType; send a FHIR resource",
            location="resourceType",
        )
    return value


async def read_resource(request: Request, max_bytes: int, max_depth: int) -> dict[str, object]:
    """Read, parse and shape-check a resource body."""
    return as_resource(parse_json(await read_body(request, max_bytes), max_depth))
