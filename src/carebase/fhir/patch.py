"""Patch interactions: RFC 6902 JSON Patch here, FHIRPath Patch in `fhirpath_patch`.

Both are pure functions over a resource dict: the input is never mutated, a patched deep copy
is returned. A malformed patch document is the client's syntax error (`BadRequest`); a patch
that is well-formed but cannot be applied to *this* resource (missing path, failed `test`,
changing `resourceType` or `id`) is `Unprocessable` (422), as the FHIR patch page asks.
Operation numbers in messages are the operation's 0-based index in the patch array.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from carebase.errors import BadRequest, Unprocessable
from carebase.fhir import json_io

__all__ = [
    "apply_fhirpath_patch",
    "apply_json_patch",
    "check_identity_kept",
    "json_copy",
    "json_equal",
]

_OPS = ("add", "remove", "replace", "move", "copy", "test")
_NEEDS_VALUE = ("add", "replace", "test")
_NEEDS_FROM = ("move", "copy")


def json_copy(value: Any) -> Any:
    """A deep copy of a JSON value; orjson round-trips are several times faster than deepcopy."""
    try:
        return json_io.loads(json_io.dumps(value))
    except (TypeError, orjson.JSONEncodeError, ValueError):
        # Integers beyond 64 bits or non-JSON leaves: fall back to the general copy.
        return copy.deepcopy(value)


def check_identity_kept(before: dict[str, Any], after: Any, what: str) -> None:
    """Refuse patches that turn the resource into something else (type or id changed)."""
    if not isinstance(after, dict):
        raise Unprocessable(f"{what}: the patched document is no longer a JSON object")
    for key in ("resourceType", "id"):
        if before.get(key) != after.get(key):
            raise Unprocessable(
                f"{what}: patching '{key}' is not allowed "
                f"(was {before.get(key)!r}, patch made it {after.get(key)!r})",
                location=key,
            )


def apply_json_patch(resource: dict[str, Any], ops: object) -> dict[str, Any]:
    """Apply an RFC 6902 JSON Patch document (`ops`, a JSON array) to a copy of `resource`."""
    if not isinstance(ops, list):
        raise BadRequest("A JSON Patch document must be a JSON array of operations")
    # Check the whole document first: a malformed patch is a 400 even if an earlier
    # operation would have failed to apply.
    checked = [_check_operation(index, op) for index, op in enumerate(ops)]
    doc: Any = json_copy(resource)
    for index, (name, path, value, source) in enumerate(checked):
        doc = _apply_one(doc, index, name, path, value, source)
    check_identity_kept(resource, doc, "JSON Patch")
    result: dict[str, Any] = doc
    return result


def apply_fhirpath_patch(resource: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Apply a FHIRPath Patch (a Parameters resource); see `carebase.fhir.fhirpath_patch`."""
    # Imported late: the FHIRPath patch pulls in fhirpathpy and the definitions, which plain
    # JSON Patch users should not pay for.
    from carebase.fhir.fhirpath_patch import apply_fhirpath_patch as apply

    return apply(resource, parameters)


# --- validation of the patch document -------------------------------------------------------


def _check_operation(index: int, op: object) -> tuple[str, list[str], Any, list[str] | None]:
    """Validate one operation object; return (op, parsed path, value, parsed from)."""
    where = f"JSON Patch operation {index}"
    if not isinstance(op, dict):
        raise BadRequest(f"{where}: must be a JSON object")
    name = op.get("op")
    if name is None:
        raise BadRequest(f"{where}: 'op' is required")
    if name not in _OPS:
        raise BadRequest(f"{where}: 'op' must be one of {', '.join(_OPS)}, not {name!r}")
    if "path" not in op:
        raise BadRequest(f"{where}: 'path' is required")
    path = _parse_pointer(op["path"], f"{where}: 'path'")
    if name in _NEEDS_VALUE and "value" not in op:
        raise BadRequest(f"{where}: 'value' is required for '{name}'")
    source = None
    if name in _NEEDS_FROM:
        if "from" not in op:
            raise BadRequest(f"{where}: 'from' is required for '{name}'")
        source = _parse_pointer(op["from"], f"{where}: 'from'")
        if name == "move" and len(source) < len(path) and path[: len(source)] == source:
            raise BadRequest(
                f"{where}: cannot move {op['from']!r} into its own child {op['path']!r}"
            )
    return name, path, op.get("value"), source


def _parse_pointer(pointer: object, where: str) -> list[str]:
    """Split an RFC 6901 JSON Pointer into unescaped reference tokens."""
    if not isinstance(pointer, str):
        raise BadRequest(f"{where} must be a string (a JSON Pointer)")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise BadRequest(f"{where} {pointer!r} must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    for token in tokens:
        # '~' may only introduce the escapes ~0 and ~1.
        stripped = token.replace("~0", "").replace("~1", "")
        if "~" in stripped:
            raise BadRequest(f"{where} {pointer!r} has an invalid '~' escape (use ~0 or ~1)")
    # ~1 first, then ~0, so that "~01" becomes "~1" and not "/".
    return [t.replace("~1", "/").replace("~0", "~") for t in tokens]


def _show(path: list[str]) -> str:
    """A pointer re-escaped for messages."""
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in path)


# --- application ------------------------------------------------------------------------------


def _apply_one(
    doc: Any, index: int, name: str, path: list[str], value: Any, source: list[str] | None
) -> Any:
    where = f"JSON Patch operation {index} ({name})"
    if name == "add":
        return _add(doc, path, json_copy(value), where)
    if name == "remove":
        _remove(doc, path, where)
        return doc
    if name == "replace":
        if not path:
            return json_copy(value)
        _remove(doc, path, where)
        return _add(doc, path, json_copy(value), where)
    if name == "test":
        current = _get(doc, path, where)
        if not json_equal(current, value):
            raise Unprocessable(f"{where}: test failed, the value at '{_show(path)}' differs")
        return doc
    assert source is not None
    if name == "copy":
        return _add(doc, path, json_copy(_get(doc, source, where)), where)
    # move: taking the value out first gives the RFC's "remove then add" semantics.
    moved = _get(doc, source, where)
    if path == source:
        return doc
    _remove(doc, source, where)
    return _add(doc, path, moved, where)


def _array_index(array: list[Any], token: str, path: list[str], where: str, *, end: bool) -> int:
    """Parse an array index token; `end` allows len(array) (add) and '-'."""
    if token == "-" and end:
        return len(array)
    if not token.isdigit() or not token.isascii() or (len(token) > 1 and token[0] == "0"):
        raise Unprocessable(f"{where}: '{token}' in '{_show(path)}' is not an array index")
    # int() refuses over 4,300 digits; any index over 18 digits is out of bounds anyway
    position = int(token) if len(token) <= 18 else 10**18
    if position > len(array) or (position == len(array) and not end):
        raise Unprocessable(
            f"{where}: index {position} in '{_show(path)}' is out of bounds "
            f"(the array has {len(array)} items)"
        )
    return position


def _parent(doc: Any, path: list[str], where: str) -> Any:
    """The container holding the last token of `path` (which must exist)."""
    node = doc
    for depth, token in enumerate(path[:-1]):
        here = path[: depth + 1]
        if isinstance(node, dict):
            if token not in node:
                raise Unprocessable(f"{where}: path '{_show(here)}' does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_array_index(node, token, here, where, end=False)]
        else:
            raise Unprocessable(f"{where}: path '{_show(here)}' does not exist")
    return node


def _get(doc: Any, path: list[str], where: str) -> Any:
    if not path:
        return doc
    parent = _parent(doc, path, where)
    token = path[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise Unprocessable(f"{where}: path '{_show(path)}' does not exist")
        return parent[token]
    if isinstance(parent, list):
        return parent[_array_index(parent, token, path, where, end=False)]
    raise Unprocessable(f"{where}: path '{_show(path)}' does not exist")


def _add(doc: Any, path: list[str], value: Any, where: str) -> Any:
    if not path:
        return value
    parent = _parent(doc, path, where)
    token = path[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_array_index(parent, token, path, where, end=True), value)
    else:
        raise Unprocessable(f"{where}: path '{_show(path[:-1])}' is not an object or array")
    return doc


def _remove(doc: Any, path: list[str], where: str) -> None:
    if not path:
        raise Unprocessable(f"{where}: cannot remove the whole document")
    parent = _parent(doc, path, where)
    token = path[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise Unprocessable(f"{where}: path '{_show(path)}' does not exist")
        del parent[token]
    elif isinstance(parent, list):
        del parent[_array_index(parent, token, path, where, end=False)]
    else:
        raise Unprocessable(f"{where}: path '{_show(path)}' does not exist")


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality per RFC 6902 `test`: numbers by value, but booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
