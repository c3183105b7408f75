"""The FHIRPath functions of SQL on FHIR views, each compiled to a closure."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from carebase.analytics import fhirpath_values as fv
from carebase.analytics.fhirpath_ast import Expr, FunctionCall, Literal, Member, TypeSpecifier

if TYPE_CHECKING:
    from carebase.analytics.fhirpath_compile import Compiled, Compiler, Env

_Builder = Callable[["Compiler", FunctionCall, "Compiled"], "Compiled"]
_BUILDERS: dict[str, _Builder] = {}


def _builder(name: str) -> Callable[[_Builder], _Builder]:
    def register(func: _Builder) -> _Builder:
        _BUILDERS[name] = func
        return func

    return register


def compile_function(compiler: Compiler, call: FunctionCall) -> Compiled:
    """The closure for `call` (its base compiled first)."""
    if call.name == "ofType" and isinstance(call.base, Member):
        return _of_type_member(compiler, call)
    base = compiler.compile(call.base)
    return _BUILDERS[call.name](compiler, call, base)


def _type_arg(call: FunctionCall) -> TypeSpecifier:
    arg = call.args[0]
    assert isinstance(arg, TypeSpecifier)  # the parser guarantees it
    return arg


def _of_type_member(compiler: Compiler, call: FunctionCall) -> Compiled:
    # `value.ofType(Quantity)` reads `valueQuantity` directly (choice elements in JSON)
    member = call.base
    assert isinstance(member, Member)
    spec = _type_arg(call)
    owner = compiler.compile(member.base)
    name = member.name
    key = fv.choice_key(name, spec.name)

    def of_type(focus: list[Any], env: Env) -> list[Any]:
        out: list[Any] = []
        for item in owner(focus, env):
            if type(item) is not dict:
                continue
            value = item.get(key)
            if value is None:
                plain = item.get(name)
                if plain is None:
                    continue
                values = plain if type(plain) is list else [plain]
                out.extend(v for v in values if fv.is_type(v, spec.name, spec.namespace))
            elif type(value) is list:
                out.extend(value)
            else:
                out.append(value)
        return out

    return of_type


@_builder("ofType")
def _of_type(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    spec = _type_arg(call)
    return lambda focus, env: [
        v for v in base(focus, env) if fv.is_type(v, spec.name, spec.namespace)
    ]


_builder("as")(_of_type)


@_builder("is")
def _is(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    spec = _type_arg(call)

    def is_(focus: list[Any], env: Env) -> list[Any]:
        values = base(focus, env)
        if len(values) > 1:
            raise compiler.fail("is() needs a single item")
        return [fv.is_type(values[0], spec.name, spec.namespace)] if values else []

    return is_


@_builder("where")
def _where(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    criteria = compiler.compile(call.args[0])

    def where(focus: list[Any], env: Env) -> list[Any]:
        out = []
        for item in base(focus, env):
            result = criteria([item], env)
            if result and fv.truth(result, compiler.location):
                out.append(item)
        return out

    return where


@_builder("select")
def _select(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    projection = compiler.compile(call.args[0])

    def select(focus: list[Any], env: Env) -> list[Any]:
        out: list[Any] = []
        for item in base(focus, env):
            out.extend(projection([item], env))
        return out

    return select


@_builder("exists")
def _exists(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    if call.args:
        filtered = _where(compiler, call, base)
        return lambda focus, env: [bool(filtered(focus, env))]
    return lambda focus, env: [bool(base(focus, env))]


@_builder("empty")
def _empty(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    return lambda focus, env: [not base(focus, env)]


@_builder("hasValue")
def _has_value(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    def has_value(focus: list[Any], env: Env) -> list[Any]:
        values = base(focus, env)
        return [len(values) == 1 and not isinstance(values[0], dict | list)]

    return has_value


@_builder("first")
def _first(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    return lambda focus, env: base(focus, env)[:1]


@_builder("last")
def _last(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    return lambda focus, env: base(focus, env)[-1:]


@_builder("tail")
def _tail(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    return lambda focus, env: base(focus, env)[1:]


def _int_arg(compiler: Compiler, expr: Expr, what: str) -> Callable[[list[Any], Env], int]:
    arg = compiler.compile(expr)

    def value(focus: list[Any], env: Env) -> int:
        got = arg(focus, env)
        if len(got) != 1 or not isinstance(got[0], int) or isinstance(got[0], bool):
            raise compiler.fail(f"{what}() needs one integer argument, got {got!r}")
        return int(got[0])

    return value


@_builder("skip")
def _skip(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    count = _int_arg(compiler, call.args[0], "skip")
    return lambda focus, env: base(focus, env)[max(count(focus, env), 0) :]


@_builder("take")
def _take(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    count = _int_arg(compiler, call.args[0], "take")
    return lambda focus, env: base(focus, env)[: max(count(focus, env), 0)]


@_builder("single")
def _single(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    def single(focus: list[Any], env: Env) -> list[Any]:
        values = base(focus, env)
        if len(values) > 1:
            raise compiler.fail(f"single() found {len(values)} items")
        return values

    return single


@_builder("count")
def _count(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    return lambda focus, env: [len(base(focus, env))]


@_builder("distinct")
def _distinct(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    return lambda focus, env: distinct(base(focus, env))


def distinct(values: list[Any]) -> list[Any]:
    """Items without repeats (FHIRPath equality; objects are unhashable, so a linear scan)."""
    out: list[Any] = []
    for v in values:
        if not any(fv.equal(v, seen) for seen in out):
            out.append(v)
    return out


@_builder("not")
def _not(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    def not_(focus: list[Any], env: Env) -> list[Any]:
        value = fv.truth(base(focus, env), compiler.location)
        return [] if value is None else [not value]

    return not_


@_builder("toString")
def _to_string(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    def to_string(focus: list[Any], env: Env) -> list[Any]:
        values = base(focus, env)
        if not values:
            return []
        value = values[0]
        if isinstance(value, bool):
            return ["true" if value else "false"]
        return [] if isinstance(value, dict | list) else [str(value)]

    return to_string


@_builder("join")
def _join(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    separator = compiler.compile(call.args[0]) if call.args else None

    def join(focus: list[Any], env: Env) -> list[Any]:
        values = base(focus, env)
        sep = ""
        if separator is not None:
            got = separator(focus, env)
            sep = str(got[0]) if got else ""
        return [sep.join(v if isinstance(v, str) else str(v) for v in values)]

    return join


@_builder("extension")
def _extension(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    url_arg = call.args[0]
    fixed = url_arg.value if isinstance(url_arg, Literal) else None
    url_of = compiler.compile(url_arg)

    def extension(focus: list[Any], env: Env) -> list[Any]:
        url = fixed
        if url is None:
            got = url_of(focus, env)
            url = got[0] if got else None
        out = []
        for item in base(focus, env):
            if type(item) is dict:
                for ext in item.get("extension") or ():
                    if type(ext) is dict and ext.get("url") == url:
                        out.append(ext)
        return out

    return extension


@_builder("getResourceKey")
def _resource_key(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    def resource_key(focus: list[Any], env: Env) -> list[Any]:
        return [
            item["id"]
            for item in base(focus, env)
            if type(item) is dict and "resourceType" in item and isinstance(item.get("id"), str)
        ]

    return resource_key


@_builder("getReferenceKey")
def _reference_key(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
    type_name = _type_arg(call).name if call.args else None

    def reference_key(focus: list[Any], env: Env) -> list[Any]:
        out = []
        for item in base(focus, env):
            key = fv.reference_key(item, type_name)
            if key is not None:
                out.append(key)
        return out

    return reference_key


def _static_type(expr: Expr) -> str | None:
    """The type an expression is known to give, where the tree says so (`x.ofType(T)`)."""
    if isinstance(expr, FunctionCall) and expr.name in ("ofType", "as") and expr.args:
        arg = expr.args[0]
        if isinstance(arg, TypeSpecifier):
            return arg.name
    if isinstance(expr, Literal):
        return expr.type
    return None


def _boundary(high: bool) -> _Builder:
    def build(compiler: Compiler, call: FunctionCall, base: Compiled) -> Compiled:
        known = _static_type(call.base)
        precision_of = _int_arg(compiler, call.args[0], "boundary") if call.args else None

        def boundary(focus: list[Any], env: Env) -> list[Any]:
            values = base(focus, env)
            if len(values) != 1:
                if values:
                    raise compiler.fail(f"{call.name}() needs a single item")
                return []
            value = values[0]
            precision = precision_of(focus, env) if precision_of is not None else None
            if isinstance(value, bool):
                return []
            if isinstance(value, int | float):
                if known == "integer" or (isinstance(value, int) and known is None):
                    return [value]
                return [fv.decimal_boundary(value, high, precision)]
            if isinstance(value, str):
                kind = known if known in ("date", "dateTime", "time", "instant") else None
                kind = "dateTime" if kind == "instant" else kind or fv.guess_temporal_kind(value)
                if kind is None:
                    return []
                result = fv.temporal_boundary(value, kind, high)
                return [] if result is None else [result]
            return []

        return boundary

    return build


_builder("lowBoundary")(_boundary(False))
_builder("highBoundary")(_boundary(True))
