"""Locating FHIRPath Patch targets in resource JSON: path parsing and the walk to JSON places.

A `Node` is a place in the document (the object holding it, its key, its list position), so
patch operations can set, insert and remove there — something fhirpathpy, which returns copies
of values, cannot give. Supported path steps: element names (choice names resolve to their
typed key), `[n]`, `first()`, `last()`, `where(criteria)`, `ofType(Type)`, `extension('url')`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import fhirpathpy

from carebase.errors import BadRequest, CarebaseError, Unprocessable
from carebase.fhir.element_nav import (
    Context,
    Resolved,
    child_context,
    choice_keys,
    resolve_key,
    root_context,
)

__all__ = ["ELEMENT_CTX", "Node", "Step", "parse_path", "set_primitive_ext", "walk"]

# Primitive extensions live in a `_name` sibling shaped like FHIR's Element type.
ELEMENT_CTX = Context("Element", "Element")
_SUPPORTED = "names, [n], first(), last(), where(...), ofType(T), extension('url')"


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a patch path: kind is name|index|first|last|where|oftype|extension."""

    kind: str
    arg: str = ""
    number: int = 0
    criterion: Callable[..., list[Any]] | None = field(default=None, compare=False)


@lru_cache(maxsize=512)
def _compile_where(criteria: str) -> Callable[..., list[Any]]:
    return fhirpathpy.compile(f"where({criteria})")


def _fail(where: str, path: str, why: str, location: str = "") -> BadRequest:
    return BadRequest(f"{where}: path '{path}' {why}", location=location or None)


def parse_path(path: str, resource_type: str, where: str, location: str = "") -> list[Step]:
    """Parse a patch path into steps; a leading resource type name is dropped.

    Syntax errors are `BadRequest`; a path for another type or with functions outside the
    supported set is `Unprocessable`. `where`/`location` name the operation in messages.
    """
    try:
        return _parse(path, resource_type, where)
    except CarebaseError as exc:
        if location:
            for issue in exc.issues:
                issue.expression = [location]
        raise


def _parse(path: str, resource_type: str, where: str) -> list[Step]:
    steps: list[Step] = []
    pos, end, first = 0, len(path), True
    while pos < end:
        while pos < end and path[pos].isspace():
            pos += 1
        if pos >= end:
            break
        char = path[pos]
        if char == "[":
            close = path.find("]", pos)
            digits = path[pos + 1 : close].strip() if close > 0 else ""
            if not (digits.isascii() and digits.isdigit()):  # isdigit() alone accepts '²'
                raise _fail(where, path, "has an indexer that is not [number]")
            # int() refuses over 4,300 digits; an index over 18 digits selects nothing anyway
            steps.append(Step("index", number=int(digits) if len(digits) <= 18 else 10**18))
            pos = close + 1
            continue
        if char == "." and not first:
            pos += 1
        elif not first:
            raise _fail(where, path, f"has an unexpected {char!r} at position {pos}")
        name, pos = _identifier(path, pos, where)
        if pos < end and path[pos] == "(":
            args, pos = _arguments(path, pos, where)
            steps.append(_function(name, args, path, where))
        elif first and name[:1].isupper():
            if name not in (resource_type, "Resource", "DomainResource"):
                raise Unprocessable(f"{where}: path '{path}' is for {name}, not {resource_type}")
        else:
            steps.append(Step("name", name))
        first = False
    return steps


def _identifier(path: str, pos: int, where: str) -> tuple[str, int]:
    if pos < len(path) and path[pos] == "`":
        close = path.find("`", pos + 1)
        if close < 0:
            raise _fail(where, path, "has an unclosed `")
        return path[pos + 1 : close], close + 1
    start = pos
    while pos < len(path) and (path[pos].isalnum() or path[pos] == "_"):
        pos += 1
    if pos == start:
        raise _fail(where, path, f"needs an element name at position {start}")
    return path[start:pos], pos


def _arguments(path: str, pos: int, where: str) -> tuple[str, int]:
    """The text between the '(' at `pos` and its matching ')', skipping quoted strings."""
    depth, i, quote = 0, pos, ""
    while i < len(path):
        char = path[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "'`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return path[pos + 1 : i].strip(), i + 1
        i += 1
    raise _fail(where, path, "has an unbalanced '('")


def _function(name: str, args: str, path: str, where: str) -> Step:
    if name in ("first", "last") and not args:
        return Step(name)
    if name == "where" and args:
        try:
            return Step("where", args, criterion=_compile_where(args))
        except Exception as exc:  # fhirpathpy raises assorted parser errors
            raise _fail(where, path, f"has a where() criterion that does not parse: {exc}") from exc
    if name == "ofType" and args:
        return Step("oftype", args.rsplit(".", 1)[-1])
    if name == "extension" and len(args) >= 2 and args[0] == args[-1] == "'":
        return Step("extension", args[1:-1].replace("\\'", "'"))
    raise Unprocessable(
        f"{where}: path '{path}' uses {name}({args}); patch paths support {_SUPPORTED}"
    )


@dataclass(slots=True, eq=False)
class Node:
    """A place in the document: `owner[key]`, or `owner[key][index]` for list items."""

    owner: dict[str, Any]
    key: str
    index: int | None
    resolved: Resolved | None  # the element definition, when known
    ctx: Context | None  # the context for this node's own children
    parent: Node | None

    @property
    def is_root(self) -> bool:
        return self.parent is None

    @property
    def value(self) -> Any:
        held = self.owner[self.key]
        return held if self.index is None else held[self.index]

    def set(self, value: Any, ext: dict[str, Any] | None) -> None:
        """Replace the value (and its primitive extension) in place."""
        if self.index is None:
            self.owner[self.key] = value
        else:
            self.owner[self.key][self.index] = value
        set_primitive_ext(self.owner, self.key, self.index, ext)

    def remove(self, *, prune: bool = True) -> None:
        """Remove this element; with `prune`, also remove parents left empty by it."""
        side_key = "_" + self.key
        if self.index is None:
            del self.owner[self.key]
            self.owner.pop(side_key, None)
        else:
            items = self.owner[self.key]
            side = self.owner.get(side_key)
            if isinstance(side, list) and len(side) == len(items):
                side.pop(self.index)
            items.pop(self.index)
            if not items:
                del self.owner[self.key]
                self.owner.pop(side_key, None)
            _drop_empty_side(self.owner, self.key)
        parent = self.parent
        # An empty object is not valid FHIR, so take out what the removal emptied.
        if prune and not self.owner and parent is not None and not parent.is_root:
            if parent.value is self.owner:
                parent.remove()
            else:  # the owner was the parent primitive's `_name` extension holder
                set_primitive_ext(parent.owner, parent.key, parent.index, None)

    def primitive_ext(self, *, create: bool) -> dict[str, Any]:
        """The `_name` object holding this primitive's id/extension (created on demand)."""
        side_key = "_" + self.key
        side = self.owner.get(side_key)
        if self.index is None:
            if not isinstance(side, dict):
                side = {}
                if create:
                    self.owner[side_key] = side
            return side
        if not isinstance(side, list):
            side = []
            if create:
                self.owner[side_key] = side
        side.extend([None] * (len(self.owner[self.key]) - len(side)))
        if not isinstance(side[self.index], dict):
            side[self.index] = {}
        held: dict[str, Any] = side[self.index]
        return held


def _drop_empty_side(owner: dict[str, Any], key: str) -> None:
    side = owner.get("_" + key)
    if isinstance(side, list) and all(item is None for item in side):
        del owner["_" + key]


def set_primitive_ext(
    owner: dict[str, Any], key: str, index: int | None, ext: Any, *, inserted: bool = False
) -> None:
    """Keep the `_key` sibling in step with `owner[key]` after a set or (if `inserted`) insert."""
    side_key = "_" + key
    if index is None:
        if ext:
            owner[side_key] = ext
        else:
            owner.pop(side_key, None)
        return
    side = owner.get(side_key)
    if isinstance(side, list):
        if inserted:
            side.insert(index, ext or None)
        elif index < len(side):
            side[index] = ext or None
    elif ext:
        side = [None] * len(owner[key])
        side[index] = ext
        owner[side_key] = side
    _drop_empty_side(owner, key)


def walk(doc: dict[str, Any], steps: list[Step], where: str) -> list[Node]:
    """All places in `doc` that the path steps select, in document order."""
    holder = {"": doc}
    resource_type = doc.get("resourceType")
    ctx = root_context(resource_type) if isinstance(resource_type, str) else None
    nodes = [Node(holder, "", None, None, ctx, None)]
    for step in steps:
        if step.kind == "name":
            nodes = [child for node in nodes for child in _children(node, step.arg)]
        elif step.kind == "index":
            nodes = nodes[step.number : step.number + 1]
        elif step.kind == "first":
            nodes = nodes[:1]
        elif step.kind == "last":
            nodes = nodes[-1:]
        elif step.kind == "where":
            assert step.criterion is not None
            nodes = [node for node in nodes if _matches(step, node.value, where)]
        elif step.kind == "oftype":
            nodes = [node for node in nodes if _is_type(node, step.arg)]
        else:  # extension('url')
            nodes = [
                child
                for node in nodes
                for child in _children(node, "extension")
                if isinstance(child.value, dict) and child.value.get("url") == step.arg
            ]
    return nodes


def _matches(step: Step, value: Any, where: str) -> bool:
    assert step.criterion is not None
    try:
        # fhirpathpy annotates what it is given, so it gets a copy, never the document.
        return bool(step.criterion(fhirpathpy_copy(value), {}))
    except Exception as exc:  # evaluation errors are the client's expression's fault
        raise Unprocessable(f"{where}: where({step.arg}) could not be evaluated: {exc}") from exc


def fhirpathpy_copy(value: Any) -> Any:
    """A copy safe to hand to fhirpathpy (dicts and lists are rebuilt, leaves shared)."""
    if isinstance(value, dict):
        return {k: fhirpathpy_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fhirpathpy_copy(v) for v in value]
    return value


def _is_type(node: Node, type_name: str) -> bool:
    if node.resolved is not None:
        code = node.resolved.type_code
        return code == type_name or code[:1].upper() + code[1:] == type_name
    return node.key.endswith(type_name[:1].upper() + type_name[1:])


def _children(node: Node, name: str) -> list[Node]:
    value = node.value
    ctx = node.ctx
    if not isinstance(value, dict):
        if node.is_root or name not in ("extension", "id"):
            return []
        # `birthDate.extension` reaches into the primitive's `_birthDate` object.
        side = node.primitive_ext(create=False)
        if not side:
            return []
        value, ctx = side, ELEMENT_CTX
    if name in value:
        keys = [name]
    elif ctx is not None:
        keys = [key for key in choice_keys(ctx, name) if key in value]
    else:  # no definitions for this object: a typed suffix is the best evidence of a choice
        keys = [k for k in value if k.startswith(name) and k[len(name) : len(name) + 1].isupper()]
    found: list[Node] = []
    for key in keys:
        resolved = resolve_key(ctx, key) if ctx is not None else None
        held = value[key]
        items = enumerate(held) if isinstance(held, list) else [(None, held)]
        for index, item in items:
            if item is None:
                continue  # a list slot that only carries a primitive extension
            child_ctx = child_context(ctx, resolved, item) if ctx and resolved else None
            found.append(Node(value, key, index, resolved, child_ctx, node))
    return found
