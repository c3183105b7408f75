"""Compiles a FHIRPath tree into Python closures once, so rows never re-walk the tree."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from carebase.analytics import fhirpath_values as fv
from carebase.analytics.fhirpath_ast import (
    Binary,
    Expr,
    FunctionCall,
    Index,
    Literal,
    Member,
    This,
    TypeSpecifier,
    TypeTest,
    Unary,
    Variable,
)
from carebase.analytics.fhirpath_functions import compile_function
from carebase.analytics.view_errors import ViewDefinitionError, ViewEvaluationError
from carebase.fhir.json_io import FhirDecimal


class Env:
    """Per-row state the closures read: the resource and the current %rowIndex."""

    __slots__ = ("resource", "row_index")

    def __init__(self, resource: dict[str, Any] | None = None, row_index: int = 0) -> None:
        self.resource = resource
        self.row_index = row_index


#: a compiled expression: (input collection, env) -> output collection
Compiled = Callable[[list[Any], Env], list[Any]]


class Compiler:
    """Turns trees into closures; `constants` are the view's %name values, `location` names
    the view element (for errors raised while evaluating)."""

    def __init__(self, constants: Mapping[str, object], location: str) -> None:
        self.constants = constants
        self.location = location

    def compile(self, expr: Expr) -> Compiled:
        """The closure for `expr`."""
        if isinstance(expr, This):
            return _identity
        if isinstance(expr, Literal):
            return _constant(_literal_value(expr))
        if isinstance(expr, Variable):
            return self._variable(expr.name)
        if isinstance(expr, Member):
            return self._member(expr)
        if isinstance(expr, Index):
            return self._index(expr)
        if isinstance(expr, FunctionCall):
            return compile_function(self, expr)
        if isinstance(expr, Unary):
            return self._unary(expr)
        if isinstance(expr, Binary):
            from carebase.analytics.fhirpath_operators import compile_binary

            return compile_binary(self, expr)
        if isinstance(expr, TypeTest):
            return self._type_test(expr)
        if isinstance(expr, TypeSpecifier):
            raise ViewDefinitionError(self.location, f"type name {expr.name} used as a value")
        raise ViewDefinitionError(self.location, f"unsupported expression {expr!r}")

    def fail(self, problem: str) -> ViewEvaluationError:
        """An evaluation error located at this expression's view element."""
        return ViewEvaluationError(self.location, problem)

    def _variable(self, name: str) -> Compiled:
        if name in self.constants:
            return _constant([self.constants[name]])
        if name == "rowIndex":
            return lambda focus, env: [env.row_index]
        if name in ("resource", "rootResource"):
            return lambda focus, env: [env.resource]
        if name == "context":
            return _identity
        raise ViewDefinitionError(self.location, f"%{name} is not defined in this view")

    def _member(self, expr: Member) -> Compiled:
        name = expr.name
        base = None if isinstance(expr.base, This) else self.compile(expr.base)
        if base is None and name[:1].isupper():
            # `Patient.name`: a leading type name selects the resource itself
            def type_filter(focus: list[Any], env: Env) -> list[Any]:
                out = []
                for item in focus:
                    if isinstance(item, dict):
                        if item.get("resourceType") == name:
                            out.append(item)
                        elif name in item:
                            _append(out, item[name])
                return out

            return type_filter
        fetch = member_fetcher(name)
        if base is None:
            return fetch
        return lambda focus, env: fetch(base(focus, env), env)

    def _index(self, expr: Index) -> Compiled:
        base = self.compile(expr.base)
        index = self.compile(expr.index)

        def at(focus: list[Any], env: Env) -> list[Any]:
            items = base(focus, env)
            position = index(focus, env)
            if not position:
                return []
            i = position[0]
            if not isinstance(i, int) or isinstance(i, bool):
                raise self.fail(f"an index must be an integer, got {i!r}")
            return [items[i]] if 0 <= i < len(items) else []

        return at

    def _unary(self, expr: Unary) -> Compiled:
        operand = self.compile(expr.operand)
        if expr.op == "+":
            return operand

        def negate(focus: list[Any], env: Env) -> list[Any]:
            values = operand(focus, env)
            out = []
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise self.fail(f"cannot negate {v!r}")
                out.append(-v)
            return out

        return negate

    def _type_test(self, expr: TypeTest) -> Compiled:
        operand = self.compile(expr.operand)
        spec = expr.type
        if expr.op == "is":

            def is_(focus: list[Any], env: Env) -> list[Any]:
                values = operand(focus, env)
                if len(values) > 1:
                    raise self.fail("'is' needs a single item")
                return [fv.is_type(values[0], spec.name, spec.namespace)] if values else []

            return is_

        def as_(focus: list[Any], env: Env) -> list[Any]:
            return [v for v in operand(focus, env) if fv.is_type(v, spec.name, spec.namespace)]

        return as_


def _identity(focus: list[Any], env: Env) -> list[Any]:
    return focus


def _constant(value: list[Any]) -> Compiled:
    return lambda focus, env: value


def _literal_value(expr: Literal) -> list[Any]:
    if expr.type == "empty":
        return []
    if expr.type == "decimal":
        return [FhirDecimal(str(expr.value))]
    return [expr.value]


def _append(out: list[Any], value: Any) -> None:
    if type(value) is list:
        out.extend(value)
    elif value is not None:
        out.append(value)


def member_fetcher(name: str) -> Compiled:
    """Children `name` of each item; choice elements also match their typed keys."""
    if name in fv.choice_names():
        prefix_len = len(name)

        def fetch_choice(focus: list[Any], env: Env) -> list[Any]:
            out: list[Any] = []
            for item in focus:
                if type(item) is dict:
                    value = item.get(name)
                    if value is None:
                        for key, typed in item.items():
                            if (
                                len(key) > prefix_len
                                and key.startswith(name)
                                and key[prefix_len].isupper()
                            ):
                                value = typed
                                break
                    _append(out, value)
            return out

        return fetch_choice

    def fetch(focus: list[Any], env: Env) -> list[Any]:
        out: list[Any] = []
        for item in focus:
            if type(item) is dict:
                value = item.get(name)
                if value is not None:
                    if type(value) is list:
                        out.extend(value)
                    else:
                        out.append(value)
        return out

    return fetch
