"""The FHIRPath syntax tree of SQL on FHIR views: small frozen dataclasses that compilers walk.

Every expression evaluates to a collection (FHIRPath semantics). Nodes:

    This()                                 `$this`, and the implicit focus a path starts from
    Literal(value, type)                   'text' (string), 12 (integer), 1.5 (decimal, value is
                                           the text as written), true/false (boolean),
                                           @2020-01 (date), @2020-01-01T10:00 (dateTime),
                                           @T10:00 (time; value without the @/@T), {} (empty)
    Variable(name)                         %name: a view constant, `rowIndex`, `resource`,
                                           `context`; name without the `%`
    Member(base, name)                     base.name (a leading `name` has base This())
    Index(base, index)                     base[index]
    FunctionCall(base, name, args)         base.name(args...); a bare `where(...)` has base
                                           This(); type arguments (ofType, is, as,
                                           getReferenceKey) are TypeSpecifier nodes
    TypeSpecifier(name, namespace)         a type name such as `Quantity`, `FHIR.Patient`,
                                           `System.String` (namespace '' when not written)
    Unary(op, operand)                     op in {'-', '+'}
    Binary(op, left, right)                op in BINARY_OPERATORS
    TypeTest(op, operand, type)            `operand is T` / `operand as T` (op 'is' or 'as')

`Expression.text` is not stored on nodes; callers keep the source string next to the tree.
"""

from __future__ import annotations

from dataclasses import dataclass

#: binary operators by precedence group, loosest first (FHIRPath 2.0 grammar order)
BINARY_OPERATORS: tuple[tuple[str, ...], ...] = (
    ("implies",),
    ("or", "xor"),
    ("and",),
    ("in", "contains"),
    ("=", "~", "!=", "!~"),
    ("<", "<=", ">", ">="),
    ("|",),
    ("+", "-", "&"),
    ("*", "/", "div", "mod"),
)

#: literal types a Literal may carry
LITERAL_TYPES = ("string", "integer", "decimal", "boolean", "date", "dateTime", "time", "empty")


@dataclass(frozen=True, slots=True)
class This:
    """`$this`: the current focus (also the start of a path like `name.family`)."""


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant; `type` is one of LITERAL_TYPES. Decimals keep their text (`'1.50'`)."""

    value: object
    type: str


@dataclass(frozen=True, slots=True)
class Variable:
    """`%name` (external constant or `%rowIndex`, `%resource`, `%context`)."""

    name: str


@dataclass(frozen=True, slots=True)
class Member:
    """Child elements called `name` of every item of `base` (lists flattened)."""

    base: Expr
    name: str


@dataclass(frozen=True, slots=True)
class Index:
    """The item at a 0-based position of `base` (empty when out of range)."""

    base: Expr
    index: Expr


@dataclass(frozen=True, slots=True)
class TypeSpecifier:
    """A type name used as a function argument or after `is`/`as`."""

    name: str
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """`base.name(args)`; argument expressions are evaluated per item where FHIRPath says so."""

    base: Expr
    name: str
    args: tuple[Expr, ...] = ()


@dataclass(frozen=True, slots=True)
class Unary:
    """Unary plus or minus on a number."""

    op: str
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary:
    """`left op right` for the operators in BINARY_OPERATORS."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class TypeTest:
    """`operand is type` or `operand as type`."""

    op: str
    operand: Expr
    type: TypeSpecifier


Expr = (
    This
    | Literal
    | Variable
    | Member
    | Index
    | FunctionCall
    | TypeSpecifier
    | Unary
    | Binary
    | TypeTest
)

#: the functions the parser accepts, with (min, max) argument counts
FUNCTIONS: dict[str, tuple[int, int]] = {
    "where": (1, 1),
    "select": (1, 1),
    "exists": (0, 1),
    "empty": (0, 0),
    "first": (0, 0),
    "last": (0, 0),
    "count": (0, 0),
    "not": (0, 0),
    "join": (0, 1),
    "ofType": (1, 1),
    "is": (1, 1),
    "as": (1, 1),
    "extension": (1, 1),
    "getResourceKey": (0, 0),
    "getReferenceKey": (0, 1),
    "lowBoundary": (0, 1),
    "highBoundary": (0, 1),
    "hasValue": (0, 0),
    "toString": (0, 0),
    "distinct": (0, 0),
    "single": (0, 0),
    "tail": (0, 0),
    "skip": (1, 1),
    "take": (1, 1),
}

#: functions whose single argument is a type name, not an expression
TYPE_ARGUMENT_FUNCTIONS = frozenset({"ofType", "is", "as", "getReferenceKey"})
