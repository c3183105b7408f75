"""FHIRPath Patch (FHIR R4 `fhirpatch.html`): a Parameters resource of add/insert/delete/
replace/move operations, applied to a copy of a resource.

Each `operation` parameter has parts `type`, `path` and, by type, `name`, `value`, `index`,
`source`, `destination`. A value is a `value[x]` (its type suffix picks the JSON name of a
choice element) or nested `part`s, one per child element, converted to JSON with the element
definitions deciding which children are lists. Paths are located by `fhirpath_walk`.
Errors name the operation by its 0-based index in `Parameters.parameter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from carebase.errors import BadRequest, Unprocessable
from carebase.fhir.element_nav import (
    Context,
    Resolved,
    child_context,
    choice_keys,
    element_for_name,
    resolve_key,
)
from carebase.fhir.fhirpath_walk import ELEMENT_CTX, Node, Step, parse_path, set_primitive_ext, walk
from carebase.fhir.patch import check_identity_kept, json_copy

__all__ = ["apply_fhirpath_patch"]

_TYPES = ("add", "insert", "delete", "replace", "move")
# Which parts each operation type needs, besides type and path.
_REQUIRED = {
    "add": ("name", "value"),
    "insert": ("value", "index"),
    "delete": (),
    "replace": ("value",),
    "move": ("source", "destination"),
}


@dataclass(slots=True)
class Operation:
    """One parsed `operation` parameter."""

    type: str
    path: str
    name: str
    value: dict[str, Any] | None  # the `value` part itself
    index: int
    source: int
    destination: int
    where: str  # "FHIRPath Patch operation 2 (add)", for messages
    location: str  # "Parameters.parameter[2]", for OperationOutcome.issue.expression

    @property
    def value_type(self) -> str | None:
        """The type suffix of a `value[x]` value (`Quantity`, `String`), None for parts."""
        key = _value_key(self.value) if self.value else None
        return key[len("value") :] if key else None


def apply_fhirpath_patch(resource: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Apply a FHIRPath Patch Parameters resource to a copy of `resource`; return the copy."""
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise BadRequest("A FHIRPath Patch body must be a Parameters resource")
    operations = parameters.get("parameter", [])
    if not isinstance(operations, list):
        raise BadRequest("Parameters.parameter must be an array", location="Parameters.parameter")
    doc: dict[str, Any] = json_copy(resource)
    resource_type = str(doc.get("resourceType", ""))
    # Parse everything first, so a malformed patch is a 400 whatever the resource holds.
    parsed = []
    for index, parameter in enumerate(operations):
        op = _parse_operation(index, parameter)
        parsed.append((op, parse_path(op.path, resource_type, op.where, op.location)))
    for op, steps in parsed:
        _APPLY[op.type](doc, steps, op)
    check_identity_kept(resource, doc, "FHIRPath Patch")
    return doc


# --- reading the Parameters resource ---------------------------------------------------------


def _value_key(part: dict[str, Any]) -> str | None:
    keys = [k for k in part if k.startswith("value") and len(k) > 5]
    return keys[0] if len(keys) == 1 else None


def _parse_operation(index: int, parameter: object) -> Operation:
    where, location = f"FHIRPath Patch operation {index}", f"Parameters.parameter[{index}]"
    if not isinstance(parameter, dict) or parameter.get("name") != "operation":
        raise BadRequest(f"{where}: each parameter must be named 'operation'", location=location)
    parts: dict[str, dict[str, Any]] = {}
    for part in parameter.get("part") or []:
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str):
            raise BadRequest(f"{where}: every part needs a 'name'", location=location)
        if name in parts:
            raise BadRequest(f"{where}: part '{name}' appears twice", location=location)
        parts[name] = part
    kind = _part_value(parts["type"]) if "type" in parts else None
    if kind not in _TYPES:
        raise BadRequest(f"{where}: 'type' must be one of {', '.join(_TYPES)}", location=location)
    where = f"{where} ({kind})"
    for needed in ("path", *_REQUIRED[kind]):
        if needed not in parts:
            raise BadRequest(f"{where}: part '{needed}' is required", location=location)
    value = parts.get("value")
    if value is not None and not (_value_key(value) or value.get("part") or "resource" in value):
        raise BadRequest(f"{where}: 'value' needs a value[x] or parts", location=location)
    numbers = {
        key: _integer(parts[key], where, location) if key in parts else 0
        for key in ("index", "source", "destination")
    }
    return Operation(
        type=kind,
        path=_string(parts["path"], where, location),
        name=_string(parts["name"], where, location) if "name" in parts else "",
        value=value,
        where=where,
        location=location,
        **numbers,
    )


def _part_value(part: dict[str, Any]) -> Any:
    key = _value_key(part)
    return part[key] if key else None


def _string(part: dict[str, Any], where: str, location: str) -> str:
    value = _part_value(part)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{where}: part '{part['name']}' needs a string value", location=location)
    return value


def _integer(part: dict[str, Any], where: str, location: str) -> int:
    value = _part_value(part)
    # bool is an int in Python, but never a valid position.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(
            f"{where}: part '{part['name']}' needs a non-negative valueInteger", location=location
        )
    return value


def _to_json(part: dict[str, Any], ctx: Context | None, op: Operation) -> tuple[Any, Any]:
    """A value part as (JSON value, primitive extension object or None)."""
    where, location = op.where, op.location
    key = _value_key(part)
    if key is not None:
        return json_copy(part[key]), json_copy(part.get("_" + key))
    if "resource" in part:
        return json_copy(part["resource"]), None
    children = part.get("part")
    if not isinstance(children, list) or not children:
        raise BadRequest(
            f"{where}: a value needs a value[x], a resource or parts", location=location
        )
    out: dict[str, Any] = {}
    for child in children:
        name = child.get("name") if isinstance(child, dict) else None
        if not isinstance(name, str):
            raise BadRequest(f"{where}: every nested value part needs a 'name'", location=location)
        child_key, resolved = name, element_for_name(ctx, name) if ctx else None
        if resolved is not None and resolved.is_choice:
            suffix = _value_key(child)
            if suffix is None:
                raise BadRequest(
                    f"{where}: choice element '{name}' needs a value[x] part", location=location
                )
            child_key = name + suffix[len("value") :]
            resolved = resolve_key(ctx, child_key) if ctx else None
        sub_ctx = child_context(ctx, resolved) if ctx and resolved else None
        value, ext = _to_json(child, sub_ctx, op)
        repeats = resolved.repeats if resolved else isinstance(out.get(child_key), list)
        if repeats or child_key in out:
            held = out.get(child_key)
            items = held if isinstance(held, list) else ([] if held is None else [held])
            items.append(value)
            out[child_key] = items
            set_primitive_ext(out, child_key, len(items) - 1, ext, inserted=True)
        else:
            out[child_key] = value
            set_primitive_ext(out, child_key, None, ext)
    return out, None


# --- the operations ---------------------------------------------------------------------------


def _single(doc: dict[str, Any], steps: list[Step], op: Operation) -> Node:
    """The one node a path must select (add/replace/...); a 422 naming the operation if not."""
    nodes = walk(doc, steps, op.where)
    if not nodes:
        raise Unprocessable(f"{op.where}: path '{op.path}' matches nothing", location=op.location)
    if len(nodes) > 1:
        raise Unprocessable(
            f"{op.where}: path '{op.path}' matches {len(nodes)} elements but must match one; "
            "narrow it with [n] or where(...)",
            location=op.location,
        )
    return nodes[0]


def _fail(op: Operation, why: str) -> Unprocessable:
    return Unprocessable(f"{op.where}: {why}", location=op.location)


def _holder(node: Node, op: Operation) -> dict[str, Any]:
    """The JSON object taking children of `node`: itself, or a primitive's `_name` object."""
    if isinstance(node.value, dict):
        return node.value
    if node.is_root:
        raise _fail(op, "the resource is not a JSON object")
    return node.primitive_ext(create=True)


def _holder_ctx(node: Node) -> Context | None:
    """The definitions context of `_holder(node)`."""
    if isinstance(node.value, dict):
        return node.ctx
    return None if node.is_root else ELEMENT_CTX


def _typed_key(node: Node, name: str, op: Operation) -> tuple[str, Resolved | None]:
    """The JSON key for child `name` of `node`: choice elements take the value's type suffix."""
    ctx = _holder_ctx(node)
    found = element_for_name(ctx, name) if ctx else None
    if ctx is None or found is None or not found.is_choice:
        return name, found
    suffix = op.value_type
    if suffix is None:
        raise _fail(op, f"'{name}' is a choice element; give the value as value[x]")
    resolved = resolve_key(ctx, name + suffix)
    if resolved is None:
        raise _fail(op, f"'{name}' cannot hold a value of type {suffix}")
    return name + suffix, resolved


def _value_for(node: Node, resolved: Resolved | None, op: Operation) -> tuple[Any, Any]:
    ctx = _holder_ctx(node)
    sub_ctx = child_context(ctx, resolved) if ctx and resolved else None
    assert op.value is not None
    return _to_json(op.value, sub_ctx, op)


def _list_of(doc: dict[str, Any], steps: list[Step], op: Operation) -> tuple[Node, str, list[Any]]:
    """For insert/move: the parent node, the JSON key and the list the path names."""
    if not steps or steps[-1].kind != "name":
        raise _fail(op, f"path '{op.path}' must end in a list element's name")
    parent = _single(doc, steps[:-1], op)
    holder = _holder(parent, op)
    key, _ = _typed_key(parent, steps[-1].arg, op)
    items = holder.setdefault(key, []) if op.type == "insert" else holder.get(key)
    if not isinstance(items, list):
        raise _fail(op, f"path '{op.path}' is not a list")
    return parent, key, items


def _add(doc: dict[str, Any], steps: list[Step], op: Operation) -> None:
    parent = _single(doc, steps, op)
    holder = _holder(parent, op)
    key, resolved = _typed_key(parent, op.name, op)
    value, ext = _value_for(parent, resolved, op)
    existing = holder.get(key)
    ctx = _holder_ctx(parent)
    rivals = [k for k in choice_keys(ctx, op.name) if k in holder] if ctx else []
    if rivals or (existing is not None and not isinstance(existing, list)):
        raise _fail(op, f"'{op.name}' already has a value and takes only one; use replace")
    if isinstance(existing, list) or (resolved is not None and resolved.repeats):
        items = holder.setdefault(key, [])
        items.append(value)
        set_primitive_ext(holder, key, len(items) - 1, ext, inserted=True)
    else:
        holder[key] = value
        set_primitive_ext(holder, key, None, ext)


def _insert(doc: dict[str, Any], steps: list[Step], op: Operation) -> None:
    parent, key, items = _list_of(doc, steps, op)
    if op.index > len(items):
        if not items:
            del _holder(parent, op)[key]
        raise _fail(op, f"index {op.index} is past the end of '{op.path}' ({len(items)} items)")
    ctx = _holder_ctx(parent)
    value, ext = _value_for(parent, resolve_key(ctx, key) if ctx else None, op)
    items.insert(op.index, value)
    set_primitive_ext(_holder(parent, op), key, op.index, ext, inserted=True)


def _delete(doc: dict[str, Any], steps: list[Step], op: Operation) -> None:
    nodes = walk(doc, steps, op.where)
    if not nodes:
        return  # deleting something absent is not an error, per the spec
    node = _single(doc, steps, op)
    if node.is_root:
        raise _fail(op, "cannot delete the whole resource")
    node.remove()


def _replace(doc: dict[str, Any], steps: list[Step], op: Operation) -> None:
    node = _single(doc, steps, op)
    if node.is_root or node.parent is None:
        raise _fail(op, "cannot replace the whole resource")
    resolved = node.resolved
    if resolved is not None and resolved.is_choice:
        # valueQuantity -> valueString: the JSON key itself changes.
        key, resolved = _typed_key(node.parent, resolved.name, op)
        value, ext = _value_for(node.parent, resolved, op)
        node.remove(prune=False)
        node.owner[key] = value
        set_primitive_ext(node.owner, key, None, ext)
        return
    value, ext = _value_for(node.parent, resolved, op)
    node.set(value, ext)


def _move(doc: dict[str, Any], steps: list[Step], op: Operation) -> None:
    parent, key, items = _list_of(doc, steps, op)
    for label, position in (("source", op.source), ("destination", op.destination)):
        if position >= len(items):
            raise _fail(op, f"{label} {position} is outside '{op.path}' ({len(items)} items)")
    items.insert(op.destination, items.pop(op.source))
    side = _holder(parent, op).get("_" + key)
    if isinstance(side, list) and len(side) == len(items):
        side.insert(op.destination, side.pop(op.source))


_APPLY = {"add": _add, "insert": _insert, "delete": _delete, "replace": _replace, "move": _move}
