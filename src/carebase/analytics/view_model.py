"""SQL on FHIR v2 ViewDefinition: parsed and validated into immutable dataclasses."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from carebase.analytics.fhirpath_ast import (
    Binary,
    Expr,
    FunctionCall,
    Index,
    Member,
    TypeTest,
    Unary,
    Variable,
)
from carebase.analytics.fhirpath_parser import parse_fhirpath
from carebase.analytics.view_errors import ViewDefinitionError
from carebase.fhir.definitions.loader import get_definitions

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: variables every view has besides its constants
BUILTIN_VARIABLES = frozenset({"rowIndex", "resource", "context", "rootResource"})
#: value[x] suffixes a constant may use, mapped to the FHIR type name
CONSTANT_TYPES: dict[str, str] = {
    t[0].upper() + t[1:]: t
    for t in (
        "base64Binary",
        "canonical",
        "code",
        "date",
        "dateTime",
        "decimal",
        "id",
        "instant",
        "integer",
        "integer64",
        "oid",
        "positiveInt",
        "string",
        "time",
        "unsignedInt",
        "uri",
        "url",
        "uuid",
        "boolean",
    )
}
_SELECT_KEYS = frozenset(
    {"column", "select", "forEach", "forEachOrNull", "repeat", "unionAll", "extension", "id"}
)
_COLUMN_KEYS = frozenset({"name", "path", "description", "collection", "type", "tag", "id"})
_COLUMN_KEYS |= {"extension"}


@dataclass(frozen=True, slots=True)
class PathExpression:
    """A FHIRPath string of the view, its parsed tree and where it sits in the view."""

    text: str
    expr: Expr
    location: str  # e.g. "ViewDefinition.select[0].column[1].path"


@dataclass(frozen=True, slots=True)
class Constant:
    """`constant[]`: `%name` in expressions; `type` is the FHIR type of its value[x]."""

    name: str
    value: object
    type: str


@dataclass(frozen=True, slots=True)
class Column:
    """One output column: `collection` columns yield lists, others one value or None."""

    name: str
    path: PathExpression
    type: str | None = None
    collection: bool = False
    description: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """A column of the view's output, in output order (what a result schema needs)."""

    name: str
    type: str | None
    collection: bool
    description: str | None


@dataclass(frozen=True, slots=True)
class Select:
    """A `select` node. `iteration` is None, 'forEach', 'forEachOrNull' or 'repeat'; it runs
    over `iteration_paths` (one path, or several for repeat). Output columns come in the order
    own columns, nested selects, then the unionAll branches (which all have the same columns)."""

    location: str
    columns: tuple[Column, ...] = ()
    selects: tuple[Select, ...] = ()
    union_all: tuple[Select, ...] = ()
    iteration: str | None = None
    iteration_paths: tuple[PathExpression, ...] = ()

    def output_columns(self) -> tuple[ColumnInfo, ...]:
        """The columns this node contributes, in order."""
        out = [ColumnInfo(c.name, c.type, c.collection, c.description) for c in self.columns]
        for child in self.selects:
            out.extend(child.output_columns())
        if self.union_all:
            out.extend(self.union_all[0].output_columns())
        return tuple(out)


@dataclass(frozen=True, slots=True)
class ViewDefinition:
    """A parsed ViewDefinition: the root is one Select with the view's `select[]` as children."""

    resource: str
    select: tuple[Select, ...]
    where: tuple[PathExpression, ...] = ()
    constants: tuple[Constant, ...] = ()
    name: str | None = None
    status: str | None = None

    @property
    def columns(self) -> tuple[ColumnInfo, ...]:
        """Output columns in order."""
        out: list[ColumnInfo] = []
        for node in self.select:
            out.extend(node.output_columns())
        return tuple(out)

    @property
    def column_names(self) -> tuple[str, ...]:
        """Output column names in order."""
        return tuple(c.name for c in self.columns)

    def constant_map(self) -> Mapping[str, Constant]:
        """Constants by name."""
        return {c.name: c for c in self.constants}


def _fail(location: str, problem: str) -> ViewDefinitionError:
    return ViewDefinitionError(location, problem)


def _object(value: object, location: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise _fail(location, f"must be a JSON object, got {type(value).__name__}")
    return value


def _list(value: object, location: str, *, required: bool = False) -> list[object]:
    if value is None:
        if required:
            raise _fail(location, "is required and must be a non-empty array")
        return []
    if not isinstance(value, list):
        raise _fail(location, f"must be an array, got {type(value).__name__}")
    if required and not value:
        raise _fail(location, "must not be empty")
    return value


def _string(value: object, location: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(location, f"must be a non-empty string, got {value!r}")
    return value


def _variables(expr: Expr) -> Iterator[str]:
    """Names of every %variable the tree uses."""
    if isinstance(expr, Variable):
        yield expr.name
    elif isinstance(expr, Member):
        yield from _variables(expr.base)
    elif isinstance(expr, Index):
        yield from _variables(expr.base)
        yield from _variables(expr.index)
    elif isinstance(expr, FunctionCall):
        yield from _variables(expr.base)
        for arg in expr.args:
            yield from _variables(arg)
    elif isinstance(expr, Binary):
        yield from _variables(expr.left)
        yield from _variables(expr.right)
    elif isinstance(expr, Unary | TypeTest):
        yield from _variables(expr.operand)


class _Builder:
    """Walks the JSON once, collecting errors as ViewDefinitionError with the element path."""

    def __init__(self, constants: Mapping[str, Constant]) -> None:
        self.constants = constants
        self.column_names: dict[str, str] = {}  # name -> location of its first use

    def path(self, value: object, location: str) -> PathExpression:
        text = _string(value, location)
        expr = parse_fhirpath(text, location)
        for name in _variables(expr):
            if name not in self.constants and name not in BUILTIN_VARIABLES:
                known = ", ".join(sorted(self.constants)) or "none"
                raise _fail(location, f"%{name} is not a constant of this view (defined: {known})")
        return PathExpression(text, expr, location)

    def column(self, raw: object, location: str) -> Column:
        body = _object(raw, location)
        _no_unknown(body, _COLUMN_KEYS, location)
        name = _string(body.get("name"), f"{location}.name")
        if not _NAME_RE.fullmatch(name):
            raise _fail(
                f"{location}.name",
                f"{name!r} is not a usable column name (letters, digits and _, starting with "
                "a letter)",
            )
        collection = body.get("collection", False)
        if not isinstance(collection, bool):
            raise _fail(f"{location}.collection", f"must be true or false, got {collection!r}")
        col_type = body.get("type")
        if col_type is not None:
            col_type = _string(col_type, f"{location}.type")
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise _fail(f"{location}.description", "must be a string")
        tags: list[tuple[str, str]] = []
        for i, tag in enumerate(_list(body.get("tag"), f"{location}.tag")):
            tag_obj = _object(tag, f"{location}.tag[{i}]")
            tags.append(
                (
                    _string(tag_obj.get("name"), f"{location}.tag[{i}].name"),
                    _string(tag_obj.get("value"), f"{location}.tag[{i}].value"),
                )
            )
        path = self.path(body.get("path"), f"{location}.path")
        return Column(name, path, col_type, collection, description, tuple(tags))

    def select(self, raw: object, location: str, in_union: bool = False) -> Select:
        body = _object(raw, location)
        _no_unknown(body, _SELECT_KEYS, location)
        iterations = [k for k in ("forEach", "forEachOrNull", "repeat") if k in body]
        if len(iterations) > 1:
            raise _fail(
                location, f"may have only one of forEach, forEachOrNull, repeat; has {iterations}"
            )
        iteration = iterations[0] if iterations else None
        paths: tuple[PathExpression, ...] = ()
        if iteration == "repeat":
            items = _list(body["repeat"], f"{location}.repeat", required=True)
            paths = tuple(self.path(p, f"{location}.repeat[{i}]") for i, p in enumerate(items))
        elif iteration is not None:
            paths = (self.path(body[iteration], f"{location}.{iteration}"),)
        columns = tuple(
            self.column(c, f"{location}.column[{i}]")
            for i, c in enumerate(_list(body.get("column"), f"{location}.column"))
        )
        for col, i in zip(columns, range(len(columns)), strict=True):
            self._claim(col.name, f"{location}.column[{i}].name")
        selects = tuple(
            self.select(s, f"{location}.select[{i}]")
            for i, s in enumerate(_list(body.get("select"), f"{location}.select"))
        )
        union = self.union(body.get("unionAll"), f"{location}.unionAll")
        if not columns and not selects and not union and iteration is None:
            raise _fail(location, "needs at least one of column, select, unionAll")
        return Select(location, columns, selects, union, iteration, paths)

    def union(self, raw: object, location: str) -> tuple[Select, ...]:
        items = _list(raw, location)
        if not items:
            return ()
        # branches repeat the same column names, so each branch gets a fresh name scope
        outer = self.column_names
        branches: list[Select] = []
        for i, item in enumerate(items):
            self.column_names = {}
            branches.append(self.select(item, f"{location}[{i}]"))
        self.column_names = outer
        first = [(c.name, c.collection) for c in branches[0].output_columns()]
        for i, branch in enumerate(branches[1:], start=1):
            here = [(c.name, c.collection) for c in branch.output_columns()]
            if here != first:
                raise _fail(
                    f"{location}[{i}]",
                    f"unionAll branches must have the same columns in the same order: "
                    f"{[n for n, _ in here]} differs from {[n for n, _ in first]} in {location}[0]",
                )
        for info in branches[0].output_columns():
            self._claim(info.name, f"{location}[0]")
        return tuple(branches)

    def _claim(self, name: str, location: str) -> None:
        if name in self.column_names:
            raise _fail(
                location, f"column name {name!r} is already used at {self.column_names[name]}"
            )
        self.column_names[name] = location


def _no_unknown(body: Mapping[str, object], allowed: frozenset[str], location: str) -> None:
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise _fail(
            f"{location}.{unknown[0]}",
            f"is not an element here (allowed: {', '.join(sorted(allowed))})",
        )


def _constant(raw: object, location: str) -> Constant:
    body = _object(raw, location)
    name = _string(body.get("name"), f"{location}.name")
    if not _NAME_RE.fullmatch(name):
        raise _fail(f"{location}.name", f"{name!r} is not a valid constant name")
    values = [k for k in body if k.startswith("value")]
    if len(values) != 1:
        raise _fail(location, f"needs exactly one value[x] (e.g. valueString), found {len(values)}")
    key = values[0]
    fhir_type = CONSTANT_TYPES.get(key[5:])
    if fhir_type is None:
        raise _fail(
            f"{location}.{key}",
            f"is not a supported constant type ({', '.join(sorted(CONSTANT_TYPES))})",
        )
    value = body[key]
    if isinstance(value, dict | list) or value is None:
        raise _fail(f"{location}.{key}", "must be a primitive value")
    return Constant(name, value, fhir_type)


def parse_view_definition(doc: object) -> ViewDefinition:
    """The validated ViewDefinition of a JSON object; ViewDefinitionError names the bad element."""
    body = _object(doc, "ViewDefinition")
    if body.get("resourceType", "ViewDefinition") != "ViewDefinition":
        raise _fail(
            "ViewDefinition.resourceType", f"must be 'ViewDefinition', got {body['resourceType']!r}"
        )
    resource = _string(body.get("resource"), "ViewDefinition.resource")
    if resource not in get_definitions().resource_types:
        raise _fail("ViewDefinition.resource", f"{resource!r} is not an R4 resource type")
    constants: dict[str, Constant] = {}
    for i, raw in enumerate(_list(body.get("constant"), "ViewDefinition.constant")):
        const = _constant(raw, f"ViewDefinition.constant[{i}]")
        if const.name in constants:
            raise _fail(
                f"ViewDefinition.constant[{i}].name", f"constant {const.name!r} is defined twice"
            )
        constants[const.name] = const
    builder = _Builder(constants)
    where: list[PathExpression] = []
    for i, raw in enumerate(_list(body.get("where"), "ViewDefinition.where")):
        clause = _object(raw, f"ViewDefinition.where[{i}]")
        where.append(builder.path(clause.get("path"), f"ViewDefinition.where[{i}].path"))
    selects = _list(body.get("select"), "ViewDefinition.select", required=True)
    select = tuple(builder.select(s, f"ViewDefinition.select[{i}]") for i, s in enumerate(selects))
    name = body.get("name")
    status = body.get("status")
    return ViewDefinition(
        resource,
        select,
        tuple(where),
        tuple(constants.values()),
        name if isinstance(name, str) else None,
        status if isinstance(status, str) else None,
    )
